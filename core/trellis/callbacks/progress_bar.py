"""ProgressBar: the base of progress bars (TQDMProgressBar, RichProgressBar, PlainProgressBar, your own).

`trainer.progress_bar_callback` is the callback of this type; the Trainer adds one (TQDMProgressBar when tqdm is
installed, else PlainProgressBar) unless `enable_progress_bar=False` or one is passed in `callbacks=`.
"""

from __future__ import annotations

import math
from typing import Any

from trellis.callbacks.base import Callback
from trellis.stages import TrainerFn
from trellis.utilities.rank_zero import rank_zero_warn


class ProgressBar(Callback):
    """What every progress bar knows: the trainer, the batch totals of the running stage, the metrics to show
    (`get_metrics`), and how to `disable` and `enable` it (subclasses implement those two)."""

    def __init__(self) -> None:
        self._trainer: Any = None
        self._current_eval_dataloader_idx: int | None = None

    @property
    def trainer(self) -> Any:
        if self._trainer is None:
            raise TypeError(f"The `{type(self).__name__}._trainer` reference has not been set yet: it is set when "
                            "fit, validate, test or predict starts")
        return self._trainer

    @property
    def sanity_check_description(self) -> str:
        return "Sanity Checking"

    @property
    def train_description(self) -> str:
        return "Training"

    @property
    def validation_description(self) -> str:
        return "Validation"

    @property
    def test_description(self) -> str:
        return "Testing"

    @property
    def predict_description(self) -> str:
        return "Predicting"

    @property
    def total_train_batches(self) -> int | float:
        """Training batches of this epoch (fewer when max_steps ends training first with max_epochs=-1; inf for
        a loader of unknown length)."""
        trainer = self.trainer
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            return min(trainer.num_training_batches, trainer.max_steps - trainer.global_step)
        return trainer.num_training_batches

    @property
    def total_val_batches_current_dataloader(self) -> int | float:
        trainer = self.trainer
        batches = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        return batches[self._current_eval_dataloader_idx or 0] if batches else 0

    @property
    def total_test_batches_current_dataloader(self) -> int | float:
        batches = self.trainer.num_test_batches
        return batches[self._current_eval_dataloader_idx or 0] if batches else 0

    @property
    def total_predict_batches_current_dataloader(self) -> int | float:
        batches = self.trainer.num_predict_batches
        return batches[self._current_eval_dataloader_idx or 0] if batches else 0

    @property
    def total_val_batches(self) -> int | float:
        """Validation batches of all loaders in this epoch (0 when the epoch does not validate)."""
        trainer = self.trainer
        schedule = trainer.validation_schedule
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting and schedule is not None and not schedule.epoch_due(trainer.current_epoch):
            return 0
        return sum(trainer.num_val_batches)

    def has_dataloader_changed(self, dataloader_idx: int) -> bool:
        previous, self._current_eval_dataloader_idx = self._current_eval_dataloader_idx, dataloader_idx
        return previous != dataloader_idx

    def reset_dataloader_idx_tracker(self) -> None:
        self._current_eval_dataloader_idx = None

    @property
    def is_enabled(self) -> bool:
        return True

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def disable(self) -> None:
        """Stop displaying (the Trainer calls it on processes other than global rank zero)."""
        raise NotImplementedError(f"{type(self).__name__} must implement disable()")

    def enable(self) -> None:
        """Display again after disable()."""
        raise NotImplementedError(f"{type(self).__name__} must implement enable()")

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print without breaking the bar's display."""
        print(*args, **kwargs)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._trainer = trainer
        if not trainer.is_global_zero:
            self.disable()

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, int | str | float | dict[str, float]]:
        """What the bar shows: the loggers' version (`v_num`) and the metrics logged with prog_bar=True."""
        standard = get_standard_metrics(trainer)
        logged = trainer.progress_bar_metrics
        duplicates = sorted(standard.keys() & logged.keys())
        if duplicates:
            rank_zero_warn(
                f"The progress bar already tracks a metric with the name(s) '{', '.join(duplicates)}' and "
                f"`self.log('{duplicates[0]}', ..., prog_bar=True)` will overwrite this value. If this is undesired, "
                "change the name or override `get_metrics()` in the progress bar callback."
            )
        return {**standard, **logged}


def get_standard_metrics(trainer: Any) -> dict[str, int | str]:
    """`v_num`: the version of the loggers' run (the last 4 characters of a long string version)."""
    loggers = trainer.loggers
    if not loggers:
        return {}
    if len(loggers) == 1:
        version = loggers[0].version
    else:
        version = "_".join(dict.fromkeys(str(logger.version) for logger in loggers))
    if version in ("", None):
        return {}
    return {"v_num": version[-4:] if isinstance(version, str) else version}


def finite_or_none(total: int | float | None) -> int | None:
    """A batch total for a display, which cannot show inf or nan (None: unknown)."""
    return None if total is None or math.isinf(total) or math.isnan(total) else int(total)


class SwitchedProgressBar(ProgressBar):
    """A bar that `disable()` and `enable()` turn off and on (the bars shipped here)."""

    _enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True
