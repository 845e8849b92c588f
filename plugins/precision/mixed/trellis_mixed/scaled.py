"""16-mixed: float16 autocast with dynamic loss scaling through torch.amp.GradScaler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trellis.errors import ConfigurationError
from trellis_mixed.autocast import AutocastPrecision


class Float16Mixed(AutocastPrecision):
    """"16-mixed": float16's narrow range needs the loss scaled up before backward.

    A step whose gradients hold inf or NaN is skipped and the scale shrinks by `backoff_factor`; after
    `growth_interval` good steps in a row it grows by `growth_factor`. The scale is checkpointed.
    """

    name = "16-mixed"
    compute_dtype = torch.float16
    skips_nonfinite_steps = True

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ) -> None:
        super().__init__()
        if init_scale <= 0 or growth_factor <= 1.0 or not 0.0 < backoff_factor < 1.0 or growth_interval < 1:
            raise ConfigurationError(
                f"Float16Mixed(init_scale={init_scale}, growth_factor={growth_factor}, backoff_factor="
                f"{backoff_factor}, growth_interval={growth_interval}): the scale must be positive, growth_factor "
                "above 1, backoff_factor between 0 and 1 and growth_interval at least 1"
            )
        #: GradScaler.state_dict() form; used until the scaler exists (it is made at the first backward).
        self._initial_state: dict[str, Any] = {
            "scale": float(init_scale),
            "growth_factor": float(growth_factor),
            "backoff_factor": float(backoff_factor),
            "growth_interval": int(growth_interval),
            "_growth_tracker": 0,
        }
        self._scaler: torch.amp.GradScaler | None = None
        self._unscaled: set[int] = set()

    @property
    def loss_scale(self) -> float:
        """The factor the loss is multiplied by before backward."""
        return self._scaler.get_scale() if self._scaler is not None else self._initial_state["scale"]

    def backward(self, loss: torch.Tensor, module: torch.nn.Module | None) -> None:
        super().backward(self._scaler_on(loss.device.type).scale(loss), module)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if self._scaler is None or id(optimizer) in self._unscaled:
            return
        self._scaler.unscale_(optimizer)
        self._unscaled.add(id(optimizer))

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        if isinstance(optimizer, torch.optim.LBFGS):
            raise ConfigurationError(
                "precision='16-mixed' cannot step LBFGS: its closure re-evaluates the loss inside step, which loss "
                "scaling cannot follow. Use precision='bf16-mixed' or '32-true' with LBFGS"
            )
        result = closure() if closure is not None else None
        if self._scaler is None or not _has_gradients(optimizer):  # nothing scaled to undo, nothing to step
            optimizer.step()
            return result
        self._scaler.step(optimizer)
        self._scaler.update()
        self._unscaled.discard(id(optimizer))
        return result

    def state_dict(self) -> dict[str, Any]:
        return self._scaler.state_dict() if self._scaler is not None else dict(self._initial_state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:  # a checkpoint written under another precision mode
            return
        if self._scaler is not None:
            self._scaler.load_state_dict(state)
        else:
            self._initial_state = dict(state)

    def _scaler_on(self, device_type: str) -> torch.amp.GradScaler:
        if self._scaler is None:
            state = self._initial_state
            self._scaler = torch.amp.GradScaler(
                device_type,
                init_scale=state["scale"],
                growth_factor=state["growth_factor"],
                backoff_factor=state["backoff_factor"],
                growth_interval=state["growth_interval"],
            )
            self._scaler.load_state_dict(state)
        return self._scaler


def _has_gradients(optimizer: torch.optim.Optimizer) -> bool:
    return any(parameter.grad is not None for group in optimizer.param_groups for parameter in group["params"])
