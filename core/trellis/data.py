"""Dataloaders: where they come from, how many batches run, and batch sizes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from trellis.errors import ConfigurationError, TrainingError


def as_loader_list(loaders: Any) -> list[Iterable]:
    """One loader, a list or tuple of loaders, or a dict of named loaders, as a list."""
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


def loader_length(loader: Iterable) -> int | None:
    """Batches per pass, None for an iterable of unknown length."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def batch_limit(loader: Iterable, limit: int | float, flag: str) -> float:
    """How many batches of `loader` to run given a limit_*_batches flag (count or fraction)."""
    length = loader_length(loader)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
        raise ConfigurationError(f"{flag}={limit!r}: pass a batch count (int) or a fraction between 0.0 and 1.0")
    if isinstance(limit, float):
        if limit > 1.0:
            raise ConfigurationError(f"{flag}={limit}: a fraction must lie in [0.0, 1.0]; pass an int for a count")
        if length is None:
            if limit == 1.0:
                return math.inf
            raise ConfigurationError(f"{flag}={limit} needs a loader with a length; pass a batch count (int) instead")
        return float(int(length * limit))
    return float(min(limit, length)) if length is not None else float(limit)


def require_batches(count: float, what: str) -> None:
    if count == 0:
        raise TrainingError(
            f"the {what} dataloader yields no batches: check that its dataset is not empty and that batch_size "
            "is not larger than the dataset with drop_last=True (or raise the limit_*_batches flag)"
        )


def infer_batch_size(batch: Any) -> int | None:
    """Size of the first dimension of the first tensor found in the batch."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = infer_batch_size(item)
            if size is not None:
                return size
    return None


def request_loaders(stage_method: str, given: Any, module: Any, datamodule: Any) -> list[Iterable]:
    """Loaders from the call's arguments, else the DataModule, else the Module (`train_dataloader`, ...)."""
    if given is not None:
        return as_loader_list(given)
    for source in (datamodule, module):
        method = getattr(source, stage_method, None) if source is not None else None
        if method is not None and _is_overridden(source, stage_method):
            return as_loader_list(method())
    return []


def _is_overridden(source: Any, method: str) -> bool:
    defined = getattr(type(source), method, None)
    return defined is not None and not getattr(defined, "_trellis_default_hook", False)
