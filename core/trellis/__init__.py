"""Trellis: a PyTorch training runtime with a small kernel and every backend as a plugin."""

import importlib
from types import ModuleType

from trellis.callbacks.base import Callback
from trellis.datamodule import DataModule
from trellis.module import Module
from trellis.trainer import Trainer
from trellis.utilities.rank_zero import share_rank_with_lightning_utilities
from trellis.utils.seed import seed_everything

share_rank_with_lightning_utilities()

__version__ = "0.1.0"

__all__ = ["Callback", "DataModule", "Module", "Trainer", "__version__", "seed_everything"]

#: Subpackages Lightning users reach as attributes (`pl.loggers.CSVLogger`), imported on first use.
_ON_FIRST_USE = frozenset({"cli", "demos", "loggers", "profilers", "tuner", "utilities"})


def __getattr__(name: str) -> ModuleType:
    if name in _ON_FIRST_USE:
        return importlib.import_module(f"trellis.{name}")
    raise AttributeError(f"module 'trellis' has no attribute {name!r}")
