"""Walking nested batches; reading a flag that takes one item or several."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


def apply_to_tensors(data: Any, function: Callable[[torch.Tensor], Any]) -> Any:
    """Apply `function` to every tensor in a nesting of lists, tuples, named tuples and mappings."""
    if isinstance(data, torch.Tensor):
        return function(data)
    if isinstance(data, Mapping):
        mapping_type: Callable[..., Any] = type(data)  # a concrete mapping, built from a dict
        return mapping_type({key: apply_to_tensors(value, function) for key, value in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(apply_to_tensors(value, function) for value in data))
    if isinstance(data, (list, tuple)):
        return type(data)(apply_to_tensors(value, function) for value in data)
    return data


def move_to_device(data: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor in `data` onto `device`."""
    return apply_to_tensors(data, lambda tensor: tensor.to(device, non_blocking=non_blocking))


def as_list(value: Any) -> list[Any]:
    """A flag that takes one item or several (callbacks=, logger=, plugins=): None as [], a sequence (a list, a
    tuple, a config's list such as hydra's ListConfig) as its items, anything else as [value]."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return [value]
