"""Dataloaders: where they come from, how many batches run, and batch sizes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

from trellis.errors import ConfigurationError, TrainingError
from trellis.hookspecs import is_overridden

#: DataLoader settings a rebuilt loader keeps (sampling is what gets replaced).
_LOADER_SETTINGS = (
    "num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn", "multiprocessing_context",
    "generator", "prefetch_factor", "persistent_workers",
)


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


def rebuild_dataloader(loader: DataLoader, batch_sampler: Sampler) -> DataLoader:
    """The same loader (workers, collate, pinning, generator) drawing batches from `batch_sampler`."""
    settings: dict[str, Any] = {name: getattr(loader, name) for name in _LOADER_SETTINGS}
    if settings["num_workers"] == 0:
        settings.pop("prefetch_factor")
        settings["persistent_workers"] = False
    return DataLoader(loader.dataset, batch_sampler=batch_sampler, **settings)


class SkipFirstBatches(Sampler):
    """A batch sampler that draws its order as usual and leaves out the first `count` batches.

    The order is drawn when iteration starts, as the wrapped sampler does, or earlier with `prime()`: a
    resumed epoch draws it from the epoch's RNG, then continues with the checkpoint's.
    """

    def __init__(self, batch_sampler: Iterable, count: int) -> None:
        self.batch_sampler, self.count = batch_sampler, count
        self._primed: Iterator[Any] | None = None

    def prime(self) -> None:
        """Draw the order and skip the first batches now."""
        self._primed = self._skipped()

    def _skipped(self) -> Iterator[Any]:
        batches = iter(self.batch_sampler)
        for _ in range(self.count):
            next(batches, None)
        return batches

    def __iter__(self) -> Iterator[Any]:
        batches, self._primed = self._primed, None
        yield from (batches if batches is not None else self._skipped())

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.count)  # type: ignore[arg-type]  # a loader's batch sampler


def in_order(loader: Iterable) -> Iterable:
    """The loader without shuffling (overfit_batches trains on the same first batches every epoch)."""
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, RandomSampler):
        # torch types Dataset without __len__, and batch_size as Optional (None would be refused as before)
        return rebuild_dataloader(loader, BatchSampler(SequentialSampler(loader.dataset),  # type: ignore[arg-type]
                                                       loader.batch_size, loader.drop_last))  # type: ignore[arg-type]
    return loader


def skip_batches(loader: Iterable, count: int) -> tuple[Iterable, int]:
    """A loader that starts after `count` batches, and how many must still be skipped by iterating.

    A DataLoader skips by sampler position (no batch is loaded); other iterables are iterated and discarded.
    """
    if count and isinstance(loader, DataLoader) and isinstance(loader.batch_sampler, BatchSampler):
        return rebuild_dataloader(loader, SkipFirstBatches(loader.batch_sampler, count)), 0
    return loader, count


def sampling_generators(loader: Iterable) -> list[torch.Generator]:
    """Explicit generators that decide a loader's order (the loader's and its sampler's)."""
    found = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    return [generator for generator in found if isinstance(generator, torch.Generator)]


def request_loaders(stage_method: str, given: Any, module: Any, datamodule: Any) -> list[Iterable]:
    """Loaders from the call's arguments, else the DataModule, else the Module (`train_dataloader`, ...)."""
    if given is not None:
        return as_loader_list(given)
    for source in (datamodule, module):
        method = getattr(source, stage_method, None) if source is not None else None
        if method is not None and is_overridden(source, stage_method):
            return as_loader_list(method())
    return []
