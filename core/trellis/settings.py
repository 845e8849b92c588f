"""The Trainer's flags as one frozen record, built once with fast_dev_run and overfit_batches folded in."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

from trellis.errors import ConfigurationError
from trellis.stages import LoopStage
from trellis.utils.durations import duration_seconds

#: epochs when neither max_epochs nor max_steps is given (Lightning's default).
DEFAULT_MAX_EPOCHS = 1000


@dataclass(frozen=True)
class TrainerSettings:
    """What the loops read: batch limits, stop rules, validation schedule, optimization and logging cadence."""

    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    limit_test_batches: int | float = 1.0
    limit_predict_batches: int | float = 1.0
    max_epochs: int = DEFAULT_MAX_EPOCHS
    min_epochs: int = 0
    max_steps: int = -1
    min_steps: int = 0
    max_time: float | None = None
    val_check_interval: int | float = 1.0
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int = 2
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    log_every_n_steps: int = 50
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    reload_dataloaders_every_n_epochs: int = 0
    overfit_batches: int | float = 0.0
    fast_dev_run: int = 0
    detect_anomaly: bool = False
    default_root_dir: str = ""
    handle_preemption: bool = True
    preemption_checkpoint: str | None = None

    def limit(self, stage: LoopStage) -> int | float:
        """The limit_*_batches flag of a loop."""
        limit: int | float = getattr(self, stage.limit_flag)
        return limit

    def logs_step_metrics(self, batches_that_stepped: int, should_stop: bool) -> bool:
        """Whether the step that brings `batches_that_stepped` to one more sends its metrics to the loggers: every
        `log_every_n_steps` steps and when the fit stops (never with `log_every_n_steps=0`), every step in
        fast_dev_run."""
        every = self.log_every_n_steps
        return bool(self.fast_dev_run) or every > 0 and ((batches_that_stepped + 1) % every == 0 or should_stop)

    @property
    def preemption_checkpoint_path(self) -> str:
        return self.preemption_checkpoint or os.path.join(self.default_root_dir, "preempted.ckpt")


def build_settings(
    *,
    fast_dev_run: bool | int,
    overfit_batches: int | float,
    max_epochs: int | None,
    max_steps: int,
    min_epochs: int | None,
    min_steps: int | None,
    max_time: float | str | datetime.timedelta | dict[str, float] | None,
    limit_train_batches: int | float,
    limit_val_batches: int | float,
    limit_test_batches: int | float,
    limit_predict_batches: int | float,
    val_check_interval: int | float,
    num_sanity_val_steps: int,
    accumulate_grad_batches: int,
    log_every_n_steps: int,
    default_root_dir: str | os.PathLike[str] | None,
    preemption_checkpoint: str | os.PathLike[str] | None,
    **flags: Any,
) -> TrainerSettings:
    """Validate the flags and fold the debugging ones in: fast_dev_run runs n batches of everything once,
    overfit_batches trains and validates on the same first batches."""
    if accumulate_grad_batches < 1:
        raise ConfigurationError(f"accumulate_grad_batches={accumulate_grad_batches}: pass 1 or more")
    if log_every_n_steps < 0:
        raise ConfigurationError(
            f"log_every_n_steps={log_every_n_steps}: pass 1 or more (0 sends no step metrics to the loggers)")
    if isinstance(val_check_interval, float) and not 0.0 < val_check_interval <= 1.0:
        raise ConfigurationError(
            f"val_check_interval={val_check_interval}: a fraction lies in (0, 1]; an int counts batches")
    fast_dev_run = int(fast_dev_run)
    if fast_dev_run:
        limit_train_batches = limit_val_batches = limit_test_batches = limit_predict_batches = fast_dev_run
        max_steps, max_epochs, num_sanity_val_steps, val_check_interval = fast_dev_run, 1, 0, 1.0
    if overfit_batches:
        limit_train_batches = limit_val_batches = overfit_batches
    if max_epochs is None:
        max_epochs = DEFAULT_MAX_EPOCHS if max_steps == -1 else -1
    return TrainerSettings(
        limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
        limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches,
        max_epochs=max_epochs, min_epochs=min_epochs or 0, max_steps=max_steps, min_steps=min_steps or 0,
        max_time=duration_seconds(max_time), val_check_interval=val_check_interval,
        num_sanity_val_steps=num_sanity_val_steps, accumulate_grad_batches=accumulate_grad_batches,
        log_every_n_steps=log_every_n_steps, overfit_batches=overfit_batches, fast_dev_run=fast_dev_run,
        default_root_dir=os.fspath(default_root_dir) if default_root_dir else os.getcwd(),
        preemption_checkpoint=os.fspath(preemption_checkpoint) if preemption_checkpoint else None,
        **flags,
    )
