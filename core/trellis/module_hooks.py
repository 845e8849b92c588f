"""What a Module may override: its lifecycle hooks, and the loop's steps it can take over.

The lifecycle hooks are the pluggy hooks in Module form (no trainer or pl_module argument). The loop
methods are called by the loops directly, and only when a Module overrides them: the defaults below are
what the loop does without a call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from trellis.hookspecs import default_hook
from trellis.utils.collections import move_to_device


class ModuleHooks:
    """The lifecycle hooks a Module may override; the base versions are never registered."""

    @default_hook
    def setup(self, stage: str) -> None: ...

    @default_hook
    def teardown(self, stage: str) -> None: ...

    @default_hook
    def on_fit_start(self) -> None: ...

    @default_hook
    def on_fit_end(self) -> None: ...

    @default_hook
    def on_train_start(self) -> None: ...

    @default_hook
    def on_train_end(self) -> None: ...

    @default_hook
    def on_train_epoch_start(self) -> None: ...

    @default_hook
    def on_train_epoch_end(self) -> None: ...

    @default_hook
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any: ...

    @default_hook
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...

    @default_hook
    def on_validation_start(self) -> None: ...

    @default_hook
    def on_validation_end(self) -> None: ...

    @default_hook
    def on_validation_epoch_start(self) -> None: ...

    @default_hook
    def on_validation_epoch_end(self) -> None: ...

    @default_hook
    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int) -> None: ...

    @default_hook
    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None: ...

    @default_hook
    def on_test_start(self) -> None: ...

    @default_hook
    def on_test_end(self) -> None: ...

    @default_hook
    def on_test_epoch_start(self) -> None: ...

    @default_hook
    def on_test_epoch_end(self) -> None: ...

    @default_hook
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int) -> None: ...

    @default_hook
    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None: ...

    @default_hook
    def on_predict_start(self) -> None: ...

    @default_hook
    def on_predict_end(self) -> None: ...

    @default_hook
    def on_predict_epoch_start(self) -> None: ...

    @default_hook
    def on_predict_epoch_end(self) -> None: ...

    @default_hook
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int) -> None: ...

    @default_hook
    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None: ...

    @default_hook
    def on_before_backward(self, loss: torch.Tensor) -> None: ...

    @default_hook
    def on_after_backward(self) -> None: ...

    @default_hook
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None: ...

    @default_hook
    def on_before_zero_grad(self, optimizer: torch.optim.Optimizer) -> None: ...

    @default_hook
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...

    @default_hook
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...


if TYPE_CHECKING:
    _MixedIntoModule = torch.nn.Module  # LoopMethods is a mixin of trellis.Module, a torch.nn.Module
else:
    _MixedIntoModule = object


class LoopMethods(_MixedIntoModule):
    """Steps of the loop a Module can take over, with Lightning's names and arguments."""

    @default_hook
    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Step one optimizer; the closure runs training_step and backward (call it through optimizer.step)."""
        optimizer.step(closure=optimizer_closure)

    @default_hook
    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()

    @default_hook
    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward on the (scaled) loss; the strategy and precision call it, so overriding it is honoured.
        Without arguments it takes those given to manual_backward (retain_graph=True, ...)."""
        pending = getattr(self, "_backward_arguments", None)
        if not args and not kwargs and pending is not None:
            args, kwargs = pending
        loss.backward(*args, **kwargs)

    @default_hook
    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step a scheduler when its interval and frequency say so (metric: ReduceLROnPlateau's value)."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    @default_hook
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    @default_hook
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return move_to_device(batch, device)

    @default_hook
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    @default_hook
    def on_validation_model_zero_grad(self) -> None:
        """Before validation during fit (outside an accumulation window): release the gradients."""
        torch.nn.Module.zero_grad(self, set_to_none=True)

    @default_hook
    def on_validation_model_eval(self) -> None:
        torch.nn.Module.train(self, False)

    @default_hook
    def on_validation_model_train(self) -> None:
        """After validation; without an override the loop restores every submodule's mode as it was."""
        torch.nn.Module.train(self, True)

    @default_hook
    def on_test_model_eval(self) -> None:
        torch.nn.Module.train(self, False)

    @default_hook
    def on_test_model_train(self) -> None:
        torch.nn.Module.train(self, True)

    @default_hook
    def on_predict_model_eval(self) -> None:
        torch.nn.Module.train(self, False)


#: the loop methods a Module may override: not hooks, and not near misses of hooks either.
LOOP_METHOD_NAMES: frozenset[str] = frozenset(name for name in vars(LoopMethods) if not name.startswith("_"))
