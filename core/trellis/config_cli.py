"""`trellis fit|validate|test|predict`: build Module, DataModule and Trainer from YAML and flags.

The job LightningCLI does, on jsonargparse (pip install "trellis[cli]"):

    trellis fit --config run.yaml --model.lr=0.1 --trainer.max_epochs=3
    trellis fit --model=mypackage.MyModel --data=mypackage.MyData --print_config

A config names classes by import path: `model: {class_path: mypackage.MyModel, init_args: {lr: 0.1}}`.
The resolved config of each run is saved as config.yaml in the run directory (trainer.log_dir).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from trellis.callbacks.base import Callback
from trellis.datamodule import DataModule
from trellis.errors import ConfigurationError
from trellis.module import Module

CONFIG_COMMANDS = ("fit", "validate", "test", "predict")
CONFIG_FILENAME = "config.yaml"
_DESCRIPTIONS = {
    "fit": "train the model (trainer.fit)",
    "validate": "run one validation epoch (trainer.validate)",
    "test": "run one test epoch (trainer.test)",
    "predict": "run prediction (trainer.predict)",
}
#: Trainer flags given typed here so that class_path entries become objects.
_OBJECT_FLAGS = ("callbacks", "logger", "plugins")


def add_config_commands(subparsers: Any) -> None:
    """List the four commands in an argparse `trellis --help`; main_config parses them (see cli.main)."""
    for command in CONFIG_COMMANDS:
        subparsers.add_parser(command, help=_DESCRIPTIONS[command] + " from a YAML config and flags",
                              add_help=False)


def build_parser(model_class: type | None = None, datamodule_class: type | None = None) -> Any:
    """The jsonargparse parser: one subcommand per stage, each with --config, model, data and trainer."""
    jsonargparse = _jsonargparse()
    parser = jsonargparse.ArgumentParser(prog="trellis", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    subcommands = parser.add_subcommands(dest="subcommand", required=True)
    for command in CONFIG_COMMANDS:
        subcommands.add_subcommand(command, _stage_parser(jsonargparse, command, model_class, datamodule_class),
                                   help=_DESCRIPTIONS[command])
    return parser


def _stage_parser(jsonargparse: Any, command: str, model_class: type | None, datamodule_class: type | None) -> Any:
    from trellis.roles import Logger
    from trellis.trainer import Trainer

    parser = jsonargparse.ArgumentParser(description=_DESCRIPTIONS[command], allow_abbrev=False)
    parser.add_argument("-c", "--config", action=jsonargparse.ActionConfigFile,
                        help="a YAML file with model, data, trainer (and ckpt_path) sections; flags after it win")
    parser.add_argument("--ckpt_path", type=str | None, default=None,
                        help="checkpoint to resume (fit) or evaluate; also 'best' or 'last'")
    parser.add_argument("--overwrite_config", type=bool, default=False,
                        help=f"replace an existing {CONFIG_FILENAME} in the run directory")
    _add_component(parser, "model", model_class, Module, required=True)
    _add_component(parser, "data", datamodule_class, DataModule, required=False)
    parser.add_class_arguments(Trainer, "trainer", instantiate=False, skip=set(_OBJECT_FLAGS))
    parser.add_argument("--trainer.callbacks", type=list[Callback] | None, default=None,
                        help="callbacks as class_path/init_args entries")
    parser.add_argument("--trainer.logger", type=bool | str | Logger | list[str | Logger], default=True,
                        help="True (CSV), False, a logger name, a class_path entry, or a list of those")
    parser.add_argument("--trainer.plugins", type=list[Any] | None, default=None,
                        help="plugin objects as class_path/init_args entries")
    return parser


def _add_component(parser: Any, key: str, given: type | None, base: type, required: bool) -> None:
    """A fixed class (`--model.lr`) when the script names one, else any subclass by class_path."""
    if given is not None:
        parser.add_class_arguments(given, key)
    else:
        parser.add_subclass_arguments(base, key, required=required,
                                      help=f"the {base.__name__} subclass, by import path, with its init_args")


def main_config(argv: Sequence[str] | None = None, model_class: type | None = None,
                datamodule_class: type | None = None) -> Any:
    """Parse, build the objects, save the resolved config, run the stage; returns what the stage returns.

    Scripts may fix the classes: `main_config(model_class=MyModel, datamodule_class=MyData)`.
    """
    parser = build_parser(model_class, datamodule_class)
    arguments = list(sys.argv[1:] if argv is None else argv)
    config = parser.parse_args(arguments)
    command = config.subcommand
    stage_config = config[command]
    stage_parser = parser._subcommands_action._name_parser_map[command]
    resolved_yaml = stage_parser.dump(stage_config)
    objects = stage_parser.instantiate(stage_config)
    trainer = _build_trainer(objects.trainer, SaveConfig(resolved_yaml, stage_config.overwrite_config))
    run_stage = getattr(trainer, command)
    return run_stage(objects.model, datamodule=objects.get("data"), ckpt_path=stage_config.ckpt_path)


def _build_trainer(flags: Any, save_config: Callback) -> Any:
    from trellis.trainer import Trainer

    flags = dict(flags)
    callbacks = list(flags.pop("callbacks", None) or [])
    return Trainer(**flags, callbacks=[*callbacks, save_config])


class SaveConfig(Callback):
    """Writes the resolved config into the run directory when the run sets up (global rank zero only)."""

    def __init__(self, resolved_yaml: str, overwrite: bool) -> None:
        self.resolved_yaml = resolved_yaml
        self.overwrite = overwrite
        self.path: str | None = None

    def setup(self, trainer: Any) -> None:
        if not trainer.is_global_zero or self.path is not None:
            return
        path = os.path.join(trainer.log_dir, CONFIG_FILENAME)
        if os.path.exists(path) and not self.overwrite:
            raise ConfigurationError(
                f"{path} exists from an earlier run: pass --overwrite_config=true, or choose another "
                "--trainer.default_root_dir (a logger gives every run its own versioned directory)"
            )
        os.makedirs(trainer.log_dir, exist_ok=True)
        with open(path, "w") as file:
            file.write(self.resolved_yaml)
        self.path = path


def _jsonargparse() -> Any:
    try:
        import jsonargparse
    except ImportError as error:
        raise ConfigurationError(
            "the trellis fit/validate/test/predict commands need jsonargparse: pip install \"trellis[cli]\""
        ) from error
    return jsonargparse
