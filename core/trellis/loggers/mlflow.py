"""`lightning.pytorch.loggers.mlflow`: MLFlowLogger, the "mlflow" logger plugin's class."""

from __future__ import annotations

from trellis.loggers.lightning_names import logger_class

#: The Lightning names this module offers (resolved on first use, hence no __all__).
NAMES = ["MLFlowLogger"]


def __getattr__(name: str) -> type:
    return logger_class(__name__, name, NAMES)
