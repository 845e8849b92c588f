"""Counting the floating-point operations of a forward (and backward) pass."""

from __future__ import annotations

from collections.abc import Callable

import torch


def measure_flops(model: torch.nn.Module, forward_fn: Callable[[], torch.Tensor],
                  loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> int:
    """FLOPs of `forward_fn()` (and of `loss_fn(output).backward()` when given), counted by torch's FlopCounterMode.

    Build the model on the meta device to count without allocating or computing:
    `with torch.device("meta"): model = Net(); x = torch.randn(8, 32)`.
    `model` is the module being measured (kept for Lightning's signature; the count covers whatever runs).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        output = forward_fn()
        if loss_fn is not None:
            loss_fn(output).backward()
    return counter.get_total_flops()
