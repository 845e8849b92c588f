"""trellis.loggers: Lightning's logger names and module paths, resolved to the installed logger plugins."""

from __future__ import annotations

import importlib

import pytest

from trellis import discovery
from trellis.errors import PluginNotFoundError
from trellis.plugin import Logger


@pytest.mark.parametrize(("path", "plugin"), [
    ("trellis.loggers.CSVLogger", "csv"),
    ("trellis.loggers.csv_logs.CSVLogger", "csv"),
    ("trellis.loggers.TensorBoardLogger", "tensorboard"),
    ("trellis.loggers.tensorboard.TensorBoardLogger", "tensorboard"),
    ("trellis.loggers.MLFlowLogger", "mlflow"),
    ("trellis.loggers.mlflow.MLFlowLogger", "mlflow"),
    ("trellis.loggers.WandbLogger", "wandb"),
    ("trellis.loggers.wandb.WandbLogger", "wandb"),
])
def test_a_renamed_lightning_path_is_the_logger_plugins_class(path, plugin):
    module, _, name = path.rpartition(".")
    found = getattr(importlib.import_module(module), name)  # as hydra's _target_ and jsonargparse resolve it
    assert found is discovery.load("logger", plugin)
    assert issubclass(found, Logger)


def test_the_base_class_and_unknown_names():
    from trellis.loggers import Logger as from_package
    from trellis.loggers.logger import Logger as from_module

    assert from_package is from_module is Logger
    with pytest.raises(ImportError, match="cannot import name 'TensorBoardLogger'"):
        exec("from trellis.loggers.csv_logs import TensorBoardLogger", {})
    with pytest.raises(ImportError):
        exec("from trellis.loggers import CometLogger", {})


def test_a_logger_whose_plugin_is_missing_says_what_to_install(monkeypatch):
    monkeypatch.setenv(discovery.BLOCK_VARIABLE, "trellis-wandb")
    discovery.refresh()
    try:
        with pytest.raises(PluginNotFoundError, match="pip install trellis-wandb|blocked"):
            exec("from trellis.loggers import WandbLogger", {})
    finally:
        monkeypatch.delenv(discovery.BLOCK_VARIABLE)
        discovery.refresh()
