"""Callbacks shipped with the kernel."""

from trellis.callbacks.base import Callback
from trellis.callbacks.early_stopping import EarlyStopping
from trellis.callbacks.model_checkpoint import ModelCheckpoint
from trellis.callbacks.model_summary import ModelSummary
from trellis.callbacks.progress_bar import ProgressBar

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "ModelSummary", "ProgressBar"]
