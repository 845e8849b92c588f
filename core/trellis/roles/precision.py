"""The precision role: numeric format of parameters, inputs and the forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import torch


class Precision:
    """Module conversion, forward context and loss scaling.

    The defaults are full float32 with nothing in between, the plain PyTorch loop. A strategy that
    takes precision over (DeepSpeed, FSDP) reads `name`, `param_dtype` and `compute_dtype`.
    """

    #: canonical mode name, e.g. "32-true", "bf16-mixed".
    name: ClassVar[str] = ""
    #: dtype parameters (and so optimizer state) are kept in.
    param_dtype: ClassVar[torch.dtype] = torch.float32
    #: dtype autocast computes in, None when there is no autocast.
    compute_dtype: ClassVar[torch.dtype | None] = None
    #: True when a non-finite loss is expected now and then and its step is skipped (loss scaling);
    #: the loop then does not stop training on it.
    skips_nonfinite_steps: ClassVar[bool] = False

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Bring the module's parameters and buffers into this precision."""
        return module

    def convert_input(self, batch: Any) -> Any:
        """Bring the floating tensors of a batch into this precision."""
        return batch

    def forward_context(self, device_type: str) -> contextlib.AbstractContextManager[object]:
        """Context around forward and the step functions (autocast for mixed modes)."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, module: torch.nn.Module | None) -> None:
        """Run backward on the loss (scaled, where the mode scales) through `module.backward` when the module
        has one (a trellis.Module, which a user may override), else `loss.backward()`."""
        backward = getattr(module, "backward", None)
        if backward is None:
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        else:
            backward(loss)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Undo loss scaling on the optimizer's gradients, before clipping reads them."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        """Step the optimizer (skipping it where scaled gradients overflowed)."""
        return optimizer.step() if closure is None else optimizer.step(closure)

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (the loss scaler's)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""
