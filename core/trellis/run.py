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
    from trellis.datamodule import DataModule
    from trellis.fit_data import FitData
    from trellis.loops.fit import FitLoop
    from trellis.loops.optimization import Optimization
    from trellis.module import Module
    from trellis.optim import SchedulerConfig
    from trellis.preemption import PreemptionHandler
    from trellis.trainer import Trainer


class LogSink:
    """Hands rows of metrics to the loggers, on global rank zero only."""

    def __init__(self, loggers: list[Logger], metrics: MetricStore | None = None) -> None:
        self.loggers = loggers
        self._metrics = metrics if metrics is not None else MetricStore(lambda value, op: value)

    @property
    def logged_metrics(self) -> dict[str, Any]:
        """trainer.logged_metrics (callbacks that write to the loggers themselves add what they wrote)."""
        return self._metrics.logged_metrics

    def log(self, metrics: Mapping[str, Any], step: int, epoch: int | None, is_global_zero: bool) -> None:
        """One row at `step`: the values as floats, and `epoch` unless None (or logged by the user)."""
        if not is_global_zero or not self.loggers:
            return
        row = {name: float(value) for name, value in metrics.items()}
        if epoch is not None:
            row.setdefault("epoch", epoch)
        for logger in self.loggers:
            logger.log_metrics(row, step=step)


@dataclass
class Run:
    """One entry-point call as the loops see it.

    `trainer` is only handed to hooks (callbacks receive it); the loops read everything else from here.
    """

    entry: EntryPoint
    trainer: Trainer
    module: Module
    datamodule: DataModule | None
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

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Send metrics to the loggers and keep them in logged_metrics, as Lightning's logger connector does:
        without `step`, at the batches that stepped (or at a logged "step" value) with the epoch in the row;
        with `step`, at that step without the epoch. Nothing happens without loggers."""
        self._log(metrics, step, 0)

    def log_epoch_end_metrics(self, metrics: Mapping[str, Any]) -> None:
        """The training epoch's values: at the step of its last optimizer step, with the epoch."""
        self._log(metrics, None, -1)

    def _log(self, metrics: Mapping[str, Any], step: int | None, steps_back: int) -> None:
        if not self.log_sink.loggers or not metrics:
            return
        self.metrics.record_logged(metrics)
        epoch: int | None = None
        if step is None:
            rows = dict(metrics)
            logged_step = rows.pop("step", None)
            if logged_step is not None:
                metrics, step = rows, int(logged_step)
            else:
                epoch, step = self.fit_loop.epoch, self.fit_loop.batches_that_stepped + steps_back
        self.log_sink.log(metrics, step, epoch, self.strategy.is_global_zero)
