"""Collectives over torch.distributed's default process group, shared by every process-group strategy.

Each is the identity (or a no-op) when no process group is initialised, so a strategy can call them
before it joins or after a world of one.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch

from trellis.errors import ConfigurationError

T = TypeVar("T")
REDUCE_OPS = ("mean", "sum", "max", "min")


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def reduce(value: Any, device: torch.device, op: str = "mean") -> Any:
    """`value` (a tensor or number) reduced over every process: "mean", "sum", "max" or "min"."""
    import torch.distributed as dist

    if op not in REDUCE_OPS:
        raise ConfigurationError(f"reduce op {op!r} is unknown: use one of {REDUCE_OPS}")
    if not _group_ready():
        return value
    tensor = torch.as_tensor(value, device=device).detach().clone()
    if op == "mean" and not tensor.is_floating_point():
        tensor = tensor.float()
    torch_op = {"mean": dist.ReduceOp.SUM, "sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                "min": dist.ReduceOp.MIN}[op]
    dist.all_reduce(tensor, op=torch_op)
    return tensor / dist.get_world_size() if op == "mean" else tensor


def all_gather(tensor: torch.Tensor, device: torch.device, sync_grads: bool = False) -> torch.Tensor:
    """A tensor from every process, stacked along a new first dimension in rank order; with `sync_grads`,
    gradients flow back to each process's tensor from every process's use of the result."""
    import torch.distributed as dist

    if not _group_ready():
        return tensor
    tensor = torch.as_tensor(tensor, device=device).contiguous()
    if sync_grads:
        return _GatherWithGradients.apply(tensor)
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return torch.stack(gathered)


class _GatherWithGradients(torch.autograd.Function):
    """all_gather whose backward hands each process the gradients every process computed for its tensor."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor)
        return torch.stack(gathered)

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        gradient = gradient.contiguous()
        dist.all_reduce(gradient)
        return gradient[dist.get_rank()]


def broadcast(obj: T, src: int = 0) -> T:
    """Process `src`'s `obj` (any picklable object) in every process."""
    import torch.distributed as dist

    if not _group_ready():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def barrier() -> None:
    """Wait until every process arrives."""
    import torch.distributed as dist

    if _group_ready():
        dist.barrier()
