"""`lightning.pytorch.loggers.logger`: Logger, the logger role's base class (trellis.plugin.Logger)."""

from __future__ import annotations

from trellis.loggers.lightning_names import logger_class

#: The Lightning names this module offers (resolved on first use, hence no __all__).
NAMES = ["Logger"]


def __getattr__(name: str) -> type:
    return logger_class(__name__, name, NAMES)
