"""GradientAccumulationScheduler: change how many batches accumulate gradients, epoch by epoch."""

from __future__ import annotations

from typing import Any

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError
from trellis.hookspecs import is_overridden
from trellis.utilities.rank_zero import rank_zero_warn


class GradientAccumulationScheduler(Callback):
    """`scheduling` maps a (zero-based) epoch to the accumulation factor from that epoch on; epochs before the
    first key accumulate 1. The last batch of an epoch always steps, as with accumulate_grad_batches."""

    def __init__(self, scheduling: dict[int, int]) -> None:
        if not scheduling:
            raise TypeError("Empty dict cannot be interpreted correct")
        if any(not isinstance(key, int) or key < 0 for key in scheduling):
            raise ConfigurationError(f"Epoch should be an int greater than or equal to 0. Got {list(scheduling)}.")
        if any(not isinstance(value, int) or value < 1 for value in scheduling.values()):
            raise ConfigurationError(
                f"Accumulation factor should be an int greater than 0. Got {list(scheduling.values())}.")
        if min(scheduling) != 0:
            scheduling.update({0: 1})
        self.scheduling = scheduling
        self.epochs = sorted(scheduling)

    def going_to_accumulate_grad_batches(self) -> bool:
        return any(factor > 1 for factor in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        """The factor of `epoch`: that of the latest scheduled epoch at or before it."""
        return next((self.scheduling[start] for start in reversed(self.epochs) if epoch >= start), 1)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not pl_module.automatic_optimization:
            raise RuntimeError(
                "Automatic gradient accumulation and the `GradientAccumulationScheduler` is not supported for manual "
                "optimization. Please remove the callback or switch to automatic optimization."
            )
        overridden = is_overridden(pl_module, "optimizer_step") or is_overridden(pl_module, "optimizer_zero_grad")
        if overridden and self.going_to_accumulate_grad_batches():
            rank_zero_warn(
                "When using `Trainer(accumulate_grad_batches != 1)` and overriding `LightningModule.optimizer_{step,"
                "zero_grad}`, the hooks will not be called on every batch (rather, they are called on every "
                "optimization step)."
            )
        if trainer.settings.accumulate_grad_batches != 1:
            raise ValueError(
                "You have set `accumulate_grad_batches` and are using the `GradientAccumulationScheduler` callback. "
                "Either remove `accumulate_grad_batches` from the Trainer or remove the callback."
            )
        # a fit resumed inside an epoch does not start that epoch again: its factor applies from here
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)

    def on_train_epoch_start(self, trainer: Any, *_: Any) -> None:
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)
