"""EarlyStopping: stop training when a monitored metric stops improving."""

from __future__ import annotations

import enum
from typing import Any

import torch

from trellis.callbacks.base import Callback
from trellis.callbacks.messages import info
from trellis.errors import ConfigurationError
from trellis.stages import TrainerFn
from trellis.utilities.rank_zero import rank_zero_warn


class EarlyStoppingReason(enum.Enum):
    """Why EarlyStopping stopped training (`EarlyStopping.stopping_reason`)."""

    NOT_STOPPED = 0
    STOPPING_THRESHOLD = 1
    DIVERGENCE_THRESHOLD = 2
    PATIENCE_EXHAUSTED = 3
    NON_FINITE_METRIC = 4


class EarlyStopping(Callback):
    """Checks the metric after each validation (or at train epoch end when validation runs once per epoch)
    and sets trainer.should_stop once it stopped improving for `patience` checks, crossed a threshold, or is
    not finite. `stopping_reason` and `stopping_reason_message` say why."""

    runs_last = True
    mode_dict = {"min": torch.lt, "max": torch.gt}
    order_dict = {"min": "<", "max": ">"}

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ) -> None:
        if mode not in self.mode_dict:
            raise ConfigurationError(f"`mode` can be {', '.join(self.mode_dict)}, got {mode}")
        self.monitor, self.mode, self.patience, self.verbose, self.strict = monitor, mode, patience, verbose, strict
        self.min_delta = abs(min_delta) if mode == "max" else -abs(min_delta)
        self.check_finite = check_finite
        self.stopping_threshold, self.divergence_threshold = stopping_threshold, divergence_threshold
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self.log_rank_zero_only = log_rank_zero_only
        self.wait_count = 0
        self.stopped_epoch = 0
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None
        self.best_score = torch.tensor(torch.inf if mode == "min" else -torch.inf)

    @property
    def monitor_op(self) -> Any:
        return self.mode_dict[self.mode]

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_count, self.stopped_epoch = state["wait_count"], state["stopped_epoch"]
        best = state["best_score"]
        self.best_score = best if isinstance(best, torch.Tensor) else torch.tensor(float(best))
        self.patience = state["patience"]
        self.stopping_reason = EarlyStoppingReason(state.get("stopping_reason", EarlyStoppingReason.NOT_STOPPED.value))
        self.stopping_reason_message = state.get("stopping_reason_message")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._checks_at_train_epoch_end(trainer) and not self._skips(trainer):
            self._run_early_stopping_check(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._checks_at_train_epoch_end(trainer) and not self._skips(trainer):
            self._run_early_stopping_check(trainer)

    @staticmethod
    def _skips(trainer: Any) -> bool:
        return trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking

    def _checks_at_train_epoch_end(self, trainer: Any) -> bool:
        """At train epoch end when validation runs once per epoch, after its last batch (or not at all);
        otherwise after each validation (Lightning's default)."""
        if self._check_on_train_epoch_end is not None:
            return self._check_on_train_epoch_end
        schedule = trainer.validation_schedule
        return schedule is None or schedule.at_epoch_end_only

    def _run_early_stopping_check(self, trainer: Any) -> None:
        metrics = trainer.callback_metrics
        if trainer.fast_dev_run or not self._metric_available(metrics):
            return
        current = metrics[self.monitor].squeeze()
        should_stop, reason = self._evaluate_stopping_criteria(current)
        votes = torch.tensor(float(should_stop), device=trainer.strategy.root_device)
        should_stop = bool(trainer.strategy.reduce(votes, "sum") > 0)  # stop every process if any says so
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
        if reason and self.verbose:
            self._log_info(trainer, reason)

    def _metric_available(self, metrics: dict[str, Any]) -> bool:
        if self.monitor in metrics:
            return True
        message = (f"Early stopping conditioned on metric `{self.monitor}` which is not available. Pass in or modify "
                   f"your `EarlyStopping` callback to use any of the following: `{'`, `'.join(metrics)}`")
        if self.strict:
            raise RuntimeError(message + " (or pass strict=False to skip the check while it is missing)")
        if self.verbose:
            rank_zero_warn(message, category=RuntimeWarning)
        return False

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        better, order = self.monitor_op, self.order_dict[self.mode]
        if self.check_finite and not torch.isfinite(current):
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            return True, (f"Monitored metric {self.monitor} = {current} is not finite. Previous best value was "
                          f"{self.best_score:.3f}. Signaling Trainer to stop.")
        if self.stopping_threshold is not None and better(current, self.stopping_threshold):
            self.stopping_reason = EarlyStoppingReason.STOPPING_THRESHOLD
            return True, (f"Stopping threshold reached: {self.monitor} = {current} {order} {self.stopping_threshold}."
                          " Signaling Trainer to stop.")
        if self.divergence_threshold is not None and better(-current, -self.divergence_threshold):
            self.stopping_reason = EarlyStoppingReason.DIVERGENCE_THRESHOLD
            return True, (f"Divergence threshold reached: {self.monitor} = {current} {order} "
                          f"{self.divergence_threshold}. Signaling Trainer to stop.")
        if better(current - self.min_delta, self.best_score.to(current.device)):
            message = self._improvement_message(current)
            self.best_score, self.wait_count = current, 0
            return False, message
        self.wait_count += 1
        if self.wait_count >= self.patience:
            self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            return True, (f"Monitored metric {self.monitor} did not improve in the last {self.wait_count} records. "
                          f"Best score: {self.best_score:.3f}. Signaling Trainer to stop.")
        return False, None

    def _improvement_message(self, current: torch.Tensor) -> str:
        if torch.isfinite(self.best_score):
            return (f"Metric {self.monitor} improved by {abs(self.best_score - current):.3f} >= min_delta = "
                    f"{abs(self.min_delta)}. New best score: {current:.3f}")
        return f"Metric {self.monitor} improved. New best score: {current:.3f}"

    def _log_info(self, trainer: Any, message: str) -> None:
        """Print the message; in several processes prefixed with the rank (rank zero's alone with
        log_rank_zero_only)."""
        rank = trainer.global_rank if trainer.world_size > 1 else None
        if rank is not None:
            message = f"[rank: {rank}] {message}"
        if rank is None or not self.log_rank_zero_only or rank == 0:
            info(message, rank_zero_only=False)
