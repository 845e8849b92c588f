"""Callbacks shipped with the kernel, under the names Lightning users import."""

from trellis.callbacks.base import Callback
from trellis.callbacks.checkpoint import Checkpoint
from trellis.callbacks.device_stats_monitor import DeviceStatsMonitor
from trellis.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from trellis.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from trellis.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
from trellis.callbacks.lambda_function import LambdaCallback
from trellis.callbacks.lr_monitor import LearningRateMonitor
from trellis.callbacks.model_checkpoint import ModelCheckpoint
from trellis.callbacks.model_summary import ModelSummary
from trellis.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from trellis.callbacks.plain_progress_bar import PlainProgressBar
from trellis.callbacks.prediction_writer import BasePredictionWriter
from trellis.callbacks.progress_bar import ProgressBar
from trellis.callbacks.rich_model_summary import RichModelSummary
from trellis.callbacks.rich_progress import RichProgressBar, RichProgressBarTheme
from trellis.callbacks.stochastic_weight_avg import StochasticWeightAveraging
from trellis.callbacks.throughput_monitor import ThroughputMonitor
from trellis.callbacks.timer import Timer
from trellis.callbacks.tqdm_progress import TQDMProgressBar
from trellis.callbacks.weight_averaging import EMAWeightAveraging, WeightAveraging

__all__ = [
    "BackboneFinetuning", "BaseFinetuning", "BasePredictionWriter", "Callback", "Checkpoint", "DeviceStatsMonitor",
    "EMAWeightAveraging", "EarlyStopping", "EarlyStoppingReason", "GradientAccumulationScheduler", "LambdaCallback",
    "LearningRateMonitor", "ModelCheckpoint", "ModelSummary", "OnExceptionCheckpoint", "PlainProgressBar",
    "ProgressBar", "RichModelSummary", "RichProgressBar", "RichProgressBarTheme", "StochasticWeightAveraging",
    "TQDMProgressBar", "ThroughputMonitor", "Timer", "WeightAveraging",
]
