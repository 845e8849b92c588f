"""Timer: measure the time spent in each stage and stop training after a given duration."""

from __future__ import annotations

import datetime
import time
from typing import Any

from trellis.callbacks.base import Callback
from trellis.callbacks.messages import info
from trellis.errors import ConfigurationError
from trellis.utils.durations import duration_seconds

#: the stages timed, by Lightning's RunningStage values.
STAGES = ("train", "sanity_check", "validate", "test", "predict")


class Timer(Callback):
    """Tracks start and end time of the train, validate and test stages; stops fit once `duration` is spent.

    `duration` takes what Trainer(max_time=...) takes. The check runs when fit starts (a restored timer may be
    spent already) and after each training batch (interval="step") or epoch (interval="epoch"). The elapsed
    training time is saved in checkpoints, so a resumed run keeps counting from where it stopped.
    """

    def __init__(self, duration: float | str | datetime.timedelta | dict[str, float] | None = None,
                 interval: str = "step", verbose: bool = True) -> None:
        if interval not in ("step", "epoch"):
            raise ConfigurationError(
                f"Unsupported parameter value `Timer(interval={interval})`. Possible choices are: step, epoch")
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
        stage = _checked(stage)
        start, end = self._start[stage], self._end[stage]
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

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start["train"] = time.monotonic()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._end["train"] = time.monotonic()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._start["validate"] = time.monotonic()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._end["validate"] = time.monotonic()

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._start["test"] = time.monotonic()

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._end["test"] = time.monotonic()

    def on_fit_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.duration is not None:  # a timer restored from a checkpoint may be spent already
            self._check_time_remaining(trainer)

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.interval == "step" and self.duration is not None:
            self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.interval == "epoch" and self.duration is not None:
            self._check_time_remaining(trainer)

    def _check_time_remaining(self, trainer: Any) -> None:
        assert self.duration is not None
        should_stop = trainer.strategy.broadcast(self.time_elapsed() >= self.duration)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop and self.verbose:
            elapsed = datetime.timedelta(seconds=int(self.time_elapsed("train")))
            info(f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")


def _checked(stage: str) -> str:
    stage = getattr(stage, "value", stage)
    if stage not in STAGES:
        raise ConfigurationError(f"Timer stage {stage!r} is not one of {STAGES}")
    return stage
