"""Saving the resolved config of a TrellisCLI run into the run directory (trainer.log_dir)."""

from __future__ import annotations

import os
from typing import Any

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError


class ConfigExistsError(ConfigurationError, RuntimeError):
    """The run directory already holds a config from an earlier run (RuntimeError, as Lightning raises)."""


class SaveConfigCallback(Callback):
    """Writes the parsed config to `trainer.log_dir/config_filename` when the run sets up (global rank zero).

    It refuses to replace a config left by an earlier run unless `overwrite=True`, so a rerun into the same
    directory cannot silently lose what produced the results there. Subclass and override `save_config` to
    store the config elsewhere too (a logger, an experiment tracker); with `save_to_log_dir=False` only that runs.
    """

    def __init__(self, parser: Any, config: Any, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False, save_to_log_dir: bool = True) -> None:
        self.parser = parser
        self.config = config
        self.config_filename = config_filename
        self.overwrite = overwrite
        self.multifile = multifile
        self.save_to_log_dir = save_to_log_dir
        self.already_saved = False
        if not save_to_log_dir and type(self).save_config is SaveConfigCallback.save_config:
            raise ConfigurationError(
                "SaveConfigCallback(save_to_log_dir=False) saves nothing: subclass it and implement save_config, "
                "or pass save_config_callback=None to TrellisCLI to save no config"
            )

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            self._save_to_log_dir(trainer)
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def _save_to_log_dir(self, trainer: Any) -> None:
        log_dir = trainer.log_dir
        path = os.path.join(log_dir, self.config_filename)
        exists = os.path.isfile(path) if trainer.is_global_zero else False
        if not self.overwrite and trainer.strategy.broadcast(exists):
            raise ConfigExistsError(
                f"{path} exists from an earlier run and SaveConfigCallback will not overwrite it: choose another "
                "directory (--trainer.default_root_dir, or a logger, which versions its directories), delete the "
                "file, pass save_config_kwargs={\"overwrite\": True} to the CLI (--overwrite_config=true on the "
                "trellis command), or save_config_callback=None to save no config"
            )
        if trainer.is_global_zero:
            os.makedirs(log_dir, exist_ok=True)
            self.parser.save(self.config, path, skip_unset=False, overwrite=self.overwrite, multifile=self.multifile)

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Override to save the config somewhere else as well; runs on global rank zero only (no collectives)."""
