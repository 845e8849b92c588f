"""The context one fit/validate/test/predict call runs in: what the loops receive instead of the Trainer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from trellis.hook_manager import BoundHooks
from trellis.metrics import MetricStore
from trellis.roles import Logger, Strategy
from trellis.settings import TrainerSettings
from trellis.stages import EntryPoint, TrainerState

if TYPE_CHECKING:
    from trellis.callbacks.base import Callback
    from trellis.fit_data import FitData
    from trellis.loops.fit import FitLoop
    from trellis.loops.optimization import Optimization
    from trellis.optim import SchedulerConfig
    from trellis.preemption import PreemptionHandler


class LogSink:
    """Hands finished metrics to the loggers (on global rank zero) and remembers what was logged."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers
        self.logged_metrics: dict[str, float] = {}

    def log(self, metrics: Mapping[str, float], epoch: int, step: int, is_global_zero: bool) -> None:
        if not metrics:
            return
        metrics = {**metrics, "epoch": epoch}
        self.logged_metrics.update(metrics)
        if is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=step)


@dataclass
class Run:
    """One entry-point call as the loops see it.

    `trainer` is only handed to hooks (callbacks receive it); the loops read everything else from here.
    """

    entry: EntryPoint
    trainer: Any
    module: Any
    datamodule: Any
    strategy: Strategy
    settings: TrainerSettings
    hooks: BoundHooks
    metrics: MetricStore
    log_sink: LogSink
    state: TrainerState
    callbacks: list[Callback]
    fit_loop: FitLoop
    #: writes a full checkpoint to a path (through the strategy's checkpoint IO).
    save_checkpoint: Callable[[str], None]
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    scheduler_configs: list[SchedulerConfig] = field(default_factory=list)
    #: fit only: the training and validation data.
    data: FitData | None = None
    #: validate/test/predict: the batches to run of each loader.
    batch_limits: list[float] = field(default_factory=list)
    preemption: PreemptionHandler | None = None
    #: fit only: zero_grad, backward and optimizer steps with their hooks (manual optimization calls them).
    optimization: Optimization | None = None

    @property
    def loggers(self) -> list[Logger]:
        return self.log_sink.loggers

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Send metrics to the loggers at the current epoch and `step` (default: the batches that stepped)."""
        progress = self.fit_loop
        step = progress.batches_that_stepped if step is None else step
        self.log_sink.log(metrics, progress.epoch, step, self.strategy.is_global_zero)
