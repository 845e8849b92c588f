"""EarlyStopping: stop training when a monitored metric stops improving."""

from __future__ import annotations

import math
from typing import Any

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError
from trellis.stages import TrainerFn
from trellis.utils.rank_zero import rank_zero_info


class EarlyStopping(Callback):
    """Checks the metric after each validation (or train epoch end) and sets trainer.should_stop."""

    runs_last = True

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        verbose: bool = False,
    ) -> None:
        if mode not in ("min", "max"):
            raise ConfigurationError(f"EarlyStopping(mode={mode!r}): use 'min' or 'max'")
        self.monitor, self.mode, self.patience, self.strict = monitor, mode, patience, strict
        self.min_delta = abs(min_delta) if mode == "max" else -abs(min_delta)
        self.check_finite = check_finite
        self.stopping_threshold, self.divergence_threshold = stopping_threshold, divergence_threshold
        self.check_on_train_epoch_end = check_on_train_epoch_end
        self.verbose = verbose
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = math.inf if mode == "min" else -math.inf
        self.stopping_reason = ""

    @property
    def state_key(self) -> str:
        return f"EarlyStopping{{monitor={self.monitor!r}, mode={self.mode!r}}}"

    def state_dict(self) -> dict[str, Any]:
        return {"wait_count": self.wait_count, "stopped_epoch": self.stopped_epoch, "best_score": self.best_score,
                "patience": self.patience}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_count, self.stopped_epoch = state["wait_count"], state["stopped_epoch"]
        self.best_score, self.patience = state["best_score"], state["patience"]

    def on_train_epoch_end(self, trainer: Any) -> None:
        if self._checks_at_train_epoch_end(trainer) and not self._skips(trainer):
            self._check(trainer)

    def on_validation_end(self, trainer: Any) -> None:
        if not self._checks_at_train_epoch_end(trainer) and not self._skips(trainer):
            self._check(trainer)

    @staticmethod
    def _skips(trainer: Any) -> bool:
        return trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking

    def _checks_at_train_epoch_end(self, trainer: Any) -> bool:
        """At train epoch end when validation runs once per epoch, after its last batch (or not at all);
        otherwise after each validation (Lightning's default)."""
        if self.check_on_train_epoch_end is not None:
            return self.check_on_train_epoch_end
        schedule = trainer.validation_schedule
        return schedule is None or schedule.at_epoch_end_only

    def _check(self, trainer: Any) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if self.strict:
                raise ConfigurationError(
                    f"EarlyStopping(monitor={self.monitor!r}) found no such metric; available: "
                    f"{sorted(trainer.callback_metrics)}. Log it with self.log or pass strict=False"
                )
            return
        score = float(value)
        reason = self._stopping_reason(score)
        if reason:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason = reason
            trainer.should_stop = True
            if self.verbose:
                rank_zero_info(f"EarlyStopping: {reason}")

    def _stopping_reason(self, score: float) -> str:
        better = (lambda a, b: a < b) if self.mode == "min" else (lambda a, b: a > b)
        if self.check_finite and not math.isfinite(score):
            return f"{self.monitor} = {score} is not finite"
        if self.stopping_threshold is not None and better(score, self.stopping_threshold):
            return f"{self.monitor} = {score} reached the stopping threshold {self.stopping_threshold}"
        if self.divergence_threshold is not None and better(self.divergence_threshold, score):
            return f"{self.monitor} = {score} diverged past {self.divergence_threshold}"
        if better(score - self.min_delta, self.best_score):
            self.best_score, self.wait_count = score, 0
            return ""
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return f"{self.monitor} did not improve for {self.wait_count} checks (best {self.best_score:.6g})"
        return ""
