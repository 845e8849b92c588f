"""Callbacks shipped with the kernel."""

from trellis.callbacks.base import Callback
from trellis.callbacks.early_stopping import EarlyStopping
from trellis.callbacks.lr_monitor import LearningRateMonitor
from trellis.callbacks.model_checkpoint import ModelCheckpoint
from trellis.callbacks.model_summary import ModelSummary
from trellis.callbacks.progress_bar import ProgressBar
from trellis.callbacks.timer import Timer

__all__ = [
    "Callback", "EarlyStopping", "LearningRateMonitor", "ModelCheckpoint", "ModelSummary", "ProgressBar", "Timer",
]
