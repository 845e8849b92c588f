"""Lightning's logger names (`lightning.pytorch.loggers`), so that code and configs ported by renaming find them.

Each class is its logger plugin's, found by name through the `trellis.loggers` entry points and imported on first
use: `trellis.loggers.CSVLogger` is the "csv" plugin's class (trellis-csv, installed with trellis);
TensorBoardLogger, MLFlowLogger and WandbLogger come from trellis-tensorboard, trellis-mlflow and trellis-wandb.
The submodules carry Lightning's module paths (`trellis.loggers.csv_logs.CSVLogger`, ...).
"""

from __future__ import annotations

from trellis.loggers.lightning_names import logger_class

#: The Lightning names this module offers (resolved on first use, hence no __all__).
NAMES = ["CSVLogger", "Logger", "MLFlowLogger", "TensorBoardLogger", "WandbLogger"]


def __getattr__(name: str) -> type:
    return logger_class(__name__, name, NAMES)
