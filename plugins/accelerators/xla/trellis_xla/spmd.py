"""SPMD over the XLA devices of this host: one process drives every device through a 1-D device mesh.

Batches are sharded on their first dimension over the mesh; with sharded weights each parameter is also
split over the mesh along its largest dimension (the layout torch_xla's FSDPv2 uses). The compiler inserts
the collectives (gradient all-reduce, weight all-gather), so the training step stays the one-device step.

Imports torch_xla at module level: import this module only once XLA training has been chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy
import torch
import torch_xla
import torch_xla.distributed.spmd as xs
import torch_xla.runtime as xr

from trellis.plugin import ConfigurationError
from trellis_xla.loader import DeviceLoader

#: the name of the mesh's one axis: batches (and sharded weights) are split along it.
MESH_AXIS = "data"


def start(device_ids: Sequence[int]) -> xs.Mesh:
    """Switch this process to SPMD and return a 1-D mesh over `device_ids` (every device of the runtime)."""
    # locked: the runtime already placed tensors on a device (the check use_spmd() itself makes before forcing)
    if torch_xla._XLAC._xla_get_spmd_config_is_locked() and not xr.is_spmd():
        raise ConfigurationError(
            "this process already uses an XLA device without SPMD (torch_xla.device() or an XLA tensor came first), "
            "and torch_xla cannot switch it to SPMD afterwards (it crashes at the first step). Call "
            "`torch_xla.runtime.use_spmd()` at the top of the script, before anything else touches XLA, or pass "
            "devices=1"
        )
    if not xr.is_spmd():  # a second use_spmd() warns about a deprecated variable the first one set
        xr.use_spmd()
    return xs.Mesh(numpy.array(device_ids), (len(device_ids),), (MESH_AXIS,))


class FirstDimSharding(xs.ShardingSpec):
    """Shards every tensor of a batch on its first dimension, whatever its rank (scalars are replicated).

    torch_xla's ShardingSpec describes tensors of one rank only; a batch holds several (features, targets).
    """

    def __init__(self, mesh: xs.Mesh) -> None:
        super().__init__(mesh, (MESH_AXIS,))
        self._by_rank: dict[int, xs.ShardingSpec] = {}

    def can_apply(self, t: torch.Tensor) -> bool:
        return t.dim() > 0

    def xla_spec(self, t: torch.Tensor) -> Any:
        if t.dim() == 0:
            return None
        spec = self._by_rank.get(t.dim())
        if spec is None:
            spec = self._by_rank[t.dim()] = xs.ShardingSpec(self.mesh, (MESH_AXIS,) + (None,) * (t.dim() - 1))
        return spec.xla_spec(t)


def sharded_loader(dataloader: Iterable, device: torch.device, mesh: xs.Mesh) -> DeviceLoader:
    """XLA's parallel loader, uploading each device's slice of every batch straight to that device."""
    return DeviceLoader(dataloader, device, input_sharding=FirstDimSharding(mesh))


def weight_partition_spec(shape: torch.Size) -> tuple[str | None, ...]:
    """The largest dimension split over the mesh, the others replicated (scalars: replicated)."""
    spec: list[str | None] = [None] * len(shape)
    if spec:
        spec[max(range(len(shape)), key=lambda dim: shape[dim])] = MESH_AXIS
    return tuple(spec)


def shard_weights(module: torch.nn.Module, mesh: xs.Mesh) -> None:
    """Split every parameter of `module` (on the XLA device) over the mesh, FSDPv2 style."""
    for parameter in module.parameters():
        xs.mark_sharding(parameter, mesh, weight_partition_spec(parameter.shape))


def shard_optimizer_state(optimizer: torch.optim.Optimizer, mesh: xs.Mesh) -> None:
    """Split the per-parameter optimizer state (Adam's moments...) like its parameter, after it was loaded."""
    for parameter, state in optimizer.state.items():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.device.type == "xla" and value.shape == parameter.shape:
                xs.mark_sharding(value, mesh, weight_partition_spec(value.shape))
