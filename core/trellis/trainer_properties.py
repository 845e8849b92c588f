"""What users read on a Trainer: progress, metrics, ranks, loggers, the running stage, batch counts, the loops'
stop rules, with Lightning's names. The Trainer (trainer.py) sets up what these read."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from trellis.callbacks.base import Callback
from trellis.stages import RunningStage, TrainerState, TrainerStatus

if TYPE_CHECKING:
    from trellis.callbacks.selection import CallbackSet
    from trellis.loops.fit import FitLoop
    from trellis.loops.validation_schedule import ValidationSchedule
    from trellis.metrics import MetricStore
    from trellis.optim import SchedulerConfig
    from trellis.roles import Logger, Strategy
    from trellis.run import LogSink, Run
    from trellis.settings import TrainerSettings


class TrainerProperties:
    """Read-only views (and the few settable ones Lightning code assigns) over the Trainer's state."""

    settings: TrainerSettings
    strategy: Strategy
    state: TrainerState
    fit_loop: FitLoop
    _metrics: MetricStore
    _log_sink: LogSink
    _run: Run | None
    _module: Any
    _datamodule: Any
    _callback_set: CallbackSet

    #: the Trainer's own: the callbacks a module runs with, and the run of the call in progress.
    _callbacks_for: Callable[[Any], list[Callback]]
    _current_run: Callable[[str], Run]

    @property
    def current_epoch(self) -> int:
        return self.fit_loop.epoch

    @property
    def global_step(self) -> int:
        return self.fit_loop.global_step

    @property
    def is_last_batch(self) -> bool:
        """Whether the training batch being run is the last of its epoch."""
        return self.fit_loop.is_last_batch

    @property
    def should_stop(self) -> bool:
        return self.fit_loop.should_stop

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self.fit_loop.should_stop = value

    @property
    def callbacks(self) -> list[Callback]:
        return self._run.callbacks if self._run is not None else self._callback_set.for_module(None)

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        return self._metrics.callback_metrics

    @property
    def logged_metrics(self) -> dict[str, torch.Tensor]:
        return self._metrics.logged_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        return self._metrics.progress_bar_metrics()

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self._run.optimizers if self._run is not None else []

    @optimizers.setter
    def optimizers(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self._current_run("set optimizers").optimizers = list(optimizers)

    @property
    def lr_scheduler_configs(self) -> list[SchedulerConfig]:
        return self._run.scheduler_configs if self._run is not None else []

    @lr_scheduler_configs.setter
    def lr_scheduler_configs(self, configs: list[SchedulerConfig]) -> None:
        self._current_run("set lr_scheduler_configs").scheduler_configs = list(configs)

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def loggers(self) -> list[Logger]:
        """Where metrics and hyperparameters go (assignable, as in Lightning: `trainer.loggers = [...]`)."""
        return self._loggers

    @loggers.setter
    def loggers(self, loggers: Sequence[Logger] | None) -> None:
        self._loggers = list(loggers or [])
        if "_log_sink" in self.__dict__:
            self._log_sink.loggers = self._loggers

    @property
    def logger(self) -> Logger | None:
        """The first logger, None without loggers; assigning one replaces them all (None: no logger)."""
        return self.loggers[0] if self.loggers else None

    @logger.setter
    def logger(self, logger: Logger | None) -> None:
        self.loggers = [logger] if logger is not None else []

    @property
    def log_dir(self) -> str | None:
        """Directory of this run: the first logger's run directory (its save_dir when it has none), else
        default_root_dir. Rank zero's, on every process: read it on all processes alike (it is broadcast)."""
        logger = self.logger
        directory: str | None
        if logger is None:
            directory = self.settings.default_root_dir
        else:
            directory = logger.log_dir if logger.log_dir is not None else getattr(logger, "save_dir", None)
        return self.strategy.broadcast(directory)

    @property
    def lightning_module(self) -> Any:
        return self._module

    model = module = lightning_module

    @property
    def datamodule(self) -> Any:
        return self._datamodule

    @property
    def checkpoint_callbacks(self) -> list[Callback]:
        return [callback for callback in self.callbacks if hasattr(callback, "best_model_path")]

    @property
    def checkpoint_callback(self) -> Callback | None:
        callbacks = self.checkpoint_callbacks
        return callbacks[0] if callbacks else None

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == RunningStage.SANITY_CHECKING

    @property
    def training(self) -> bool:
        return self.state.stage == RunningStage.TRAINING

    @property
    def validating(self) -> bool:
        return self.state.stage == RunningStage.VALIDATING

    @property
    def testing(self) -> bool:
        return self.state.stage == RunningStage.TESTING

    @property
    def predicting(self) -> bool:
        return self.state.stage == RunningStage.PREDICTING

    @property
    def interrupted(self) -> bool:
        return self.state.status == TrainerStatus.INTERRUPTED

    @property
    def max_epochs(self) -> int:
        return self.fit_loop.max_epochs

    @property
    def max_steps(self) -> int:
        return self.fit_loop.max_steps

    @property
    def accumulate_grad_batches(self) -> int:
        return self.fit_loop.accumulate_grad_batches

    @accumulate_grad_batches.setter
    def accumulate_grad_batches(self, value: int) -> None:
        """Changed between epochs by GradientAccumulationScheduler (takes effect at the next batch)."""
        self.fit_loop.accumulate_grad_batches = value

    @property
    def num_training_batches(self) -> float:
        data = self._run.data if self._run is not None else None
        return data.num_training_batches if data is not None else float("inf")

    @property
    def num_val_batches(self) -> list[float]:
        """Batches of each validation loader (during validate: of the loaders being run)."""
        return self._batch_limits(RunningStage.VALIDATING)

    @property
    def num_test_batches(self) -> list[float]:
        return self._batch_limits(RunningStage.TESTING)

    @property
    def num_predict_batches(self) -> list[float]:
        return self._batch_limits(RunningStage.PREDICTING)

    @property
    def num_sanity_val_batches(self) -> list[float]:
        steps = self.settings.num_sanity_val_steps
        return [min(limit, float("inf") if steps == -1 else steps) for limit in self.num_val_batches]

    def _batch_limits(self, stage: RunningStage) -> list[float]:
        run = self._run
        if run is None:
            return []
        if run.entry.loop.running_stage == stage:
            return list(run.batch_limits)
        return list(run.data.val_batch_limits) if stage == RunningStage.VALIDATING and run.data is not None else []

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimizer steps the fit will take (max_steps, or epochs x ceil(batches / accumulation)): what
        OneCycleLR's total_steps wants. Requests the training loader early if configure_optimizers asks."""
        max_steps = self.fit_loop.max_steps
        if max_steps != -1:
            return max_steps
        data = self._run.data if self._run is not None else None
        if data is None:
            raise RuntimeError("estimated_stepping_batches is known during fit (configure_optimizers and after)")
        if not data.train_requested:
            data.request_train(self.fit_loop.epoch)
        batches = data.num_training_batches
        if math.isinf(batches):
            return math.inf if self.fit_loop.max_epochs == -1 else batches
        steps = math.ceil(batches / self.fit_loop.accumulate_grad_batches) * max(self.fit_loop.max_epochs, 1)
        return steps

    @property
    def train_dataloader(self) -> Iterable | None:
        data = self._run.data if self._run is not None else None
        return data.train_loader if data is not None else None

    @property
    def val_dataloaders(self) -> Any:
        data = self._run.data if self._run is not None else None
        if data is None or not data.val_loaders:
            return None
        return data.val_loaders[0] if len(data.val_loaders) == 1 else data.val_loaders

    @property
    def progress_bar_callback(self) -> Callback | None:
        from trellis.callbacks.progress_bar import ProgressBar

        return next((callback for callback in self.callbacks if isinstance(callback, ProgressBar)), None)

    @property
    def validation_schedule(self) -> ValidationSchedule | None:
        """When this fit validates (ModelCheckpoint and EarlyStopping ask it); None outside fit."""
        return self.fit_loop.schedule
