"""Splitting a checkpoint into the tensors DCP shards and the small per-process rest, and joining them back.

The weights ("state_dict") and optimizer states are the large, possibly sharded part: their tensors go
through DCP under keys made from their place in the checkpoint ("optimizer_states/0/state/3/exp_avg").
Everything else (loop progress, RNG, callbacks, metrics) is per process and stays in the rest.
"""

from __future__ import annotations

from typing import Any

import torch

from trellis.errors import CheckpointError

#: the top-level entries whose tensors are written through DCP.
SHARDED_ENTRIES = ("state_dict", "optimizer_states")

Place = tuple[Any, ...]


def split_tensors(checkpoint: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Place]]:
    """(tensors by DCP key, the checkpoint with those tensors replaced by None, DCP key -> place)."""
    tensors: dict[str, torch.Tensor] = {}
    places: dict[str, Place] = {}
    rest = dict(checkpoint)
    for entry in SHARDED_ENTRIES:
        if entry in checkpoint:
            rest[entry] = _take(checkpoint[entry], (entry,), tensors, places)
    return tensors, rest, places


def tensors_by_key(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a (partial) checkpoint by the DCP key they would be written under."""
    tensors, _, _ = split_tensors(state)
    return tensors


def join_tensors(rest: dict[str, Any], tensors: dict[str, torch.Tensor], places: dict[str, Place]) -> dict[str, Any]:
    """Put the loaded tensors back in their places."""
    checkpoint = rest
    for key, place in places.items():
        container = checkpoint
        for step in place[:-1]:
            container = container[step]
        container[place[-1]] = tensors[key]
    return checkpoint


def _take(value: Any, place: Place, tensors: dict[str, torch.Tensor], places: dict[str, Place]) -> Any:
    """A copy of `value` (dicts and lists) with its tensors moved into `tensors`."""
    if isinstance(value, torch.Tensor):
        key = "/".join(str(step) for step in place)
        if key in tensors:
            raise CheckpointError(
                f"two entries of the checkpoint map to the DCP key {key!r} (keys that differ only in type, such as 0 "
                "and '0'): rename one of them"
            )
        tensors[key], places[key] = value, place
        return None
    if isinstance(value, dict):
        return {name: _take(item, (*place, name), tensors, places) for name, item in value.items()}
    if isinstance(value, list):
        return [_take(item, (*place, index), tensors, places) for index, item in enumerate(value)]
    return value
