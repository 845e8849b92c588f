"""Timer: measure the time spent in each stage and stop training after a given duration."""

from __future__ import annotations

import datetime
import time
from typing import Any

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError
from trellis.utils.durations import duration_seconds
from trellis.utils.rank_zero import rank_zero_info

STAGES = ("train", "validate", "test")


class Timer(Callback):
    """Tracks start and end time of the train, validate and test stages; stops fit once `duration` is spent.

    `duration` takes what Trainer(max_time=...) takes. The check runs after each training batch
    (interval="step") or each epoch (interval="epoch"). The elapsed training time is saved in checkpoints,
    so a resumed run keeps counting from where it stopped.
    """

    def __init__(self, duration: float | str | datetime.timedelta | dict[str, float] | None = None,
                 interval: str = "step", verbose: bool = True) -> None:
        if interval not in ("step", "epoch"):
            raise ConfigurationError(f"Timer(interval={interval!r}): use 'step' or 'epoch'")
        self.duration = duration_seconds(duration)
        self.interval = interval
        self.verbose = verbose
        self._start: dict[str, float | None] = dict.fromkeys(STAGES)
        self._end: dict[str, float | None] = dict.fromkeys(STAGES)
        self._offset = 0.0

    def start_time(self, stage: str = "train") -> float | None:
        """time.monotonic() when the stage last started, None when it has not."""
        return self._start[_checked(stage)]

    def end_time(self, stage: str = "train") -> float | None:
        return self._end[_checked(stage)]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in the stage (training includes the time restored from a checkpoint)."""
        start, end = self._start[_checked(stage)], self._end[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return offset + ((end if end is not None else time.monotonic()) - start)

    def time_remaining(self, stage: str = "train") -> float | None:
        return self.duration - self.time_elapsed(stage) if self.duration is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in STAGES}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._offset = state.get("time_elapsed", {}).get("train", 0.0)

    def on_train_start(self) -> None:
        self._begin("train")

    def on_train_end(self) -> None:
        self._end["train"] = time.monotonic()

    def on_validation_start(self, trainer: Any) -> None:
        if not trainer.sanity_checking:
            self._begin("validate")

    def on_validation_end(self, trainer: Any) -> None:
        if not trainer.sanity_checking:
            self._end["validate"] = time.monotonic()

    def on_test_start(self) -> None:
        self._begin("test")

    def on_test_end(self) -> None:
        self._end["test"] = time.monotonic()

    def on_train_batch_end(self, trainer: Any) -> None:
        if self.interval == "step":
            self._stop_when_spent(trainer)

    def on_train_epoch_end(self, trainer: Any) -> None:
        if self.interval == "epoch":
            self._stop_when_spent(trainer)

    def _begin(self, stage: str) -> None:
        self._start[stage], self._end[stage] = time.monotonic(), None

    def _stop_when_spent(self, trainer: Any) -> None:
        if self.duration is None or self.time_elapsed("train") < self.duration:
            return
        if not trainer.should_stop and self.verbose:
            rank_zero_info(f"Timer: the training time of {datetime.timedelta(seconds=self.duration)} is spent; "
                           "stopping")
        trainer.should_stop = True


def _checked(stage: str) -> str:
    if stage not in STAGES:
        raise ConfigurationError(f"Timer stage {stage!r} is not one of {STAGES}")
    return stage
