"""A CPU copy of a checkpoint that later training steps cannot change (what an asynchronous write saves)."""

from __future__ import annotations

import copy
from typing import Any

import torch


def snapshot(checkpoint: Any) -> Any:
    """Copy every tensor to fresh CPU memory and every container, keeping tensors that share storage shared.

    Tensors are copied storage by storage, as torch.save writes them, so tied weights stay tied in the file
    and are copied once. Other values (hyperparameters, numbers, strings) are deep-copied.
    """
    return _copy(checkpoint, {})


def _copy(value: Any, storages: dict[tuple[str, int], torch.UntypedStorage]) -> Any:
    if isinstance(value, torch.Tensor):
        return _copy_tensor(value, storages)
    if isinstance(value, dict):
        copied = copy.copy(value)  # keeps the type and attributes, e.g. a state_dict's _metadata
        for key, item in value.items():
            copied[key] = _copy(item, storages)
        return copied
    if isinstance(value, list):
        return [_copy(item, storages) for item in value]
    if isinstance(value, tuple):
        items = [_copy(item, storages) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return copy.deepcopy(value)


def _copy_tensor(tensor: torch.Tensor, storages: dict[tuple[str, int], torch.UntypedStorage]) -> torch.Tensor:
    plain = type(tensor) in (torch.Tensor, torch.nn.Parameter) and tensor.layout == torch.strided
    if not plain or tensor.is_quantized or tensor.is_conj() or tensor.is_neg():
        copied = tensor.detach().to("cpu", copy=True)
    else:
        source = tensor.untyped_storage()
        key = (str(source.device), source.data_ptr())
        if key not in storages:
            storages[key] = source.cpu() if source.device.type != "cpu" else source.clone()
        copied = torch.empty(0, dtype=tensor.dtype).set_(
            storages[key], tensor.storage_offset(), tensor.size(), tensor.stride()
        )
    if isinstance(tensor, torch.nn.Parameter):
        return torch.nn.Parameter(copied, requires_grad=tensor.requires_grad)
    return copied
