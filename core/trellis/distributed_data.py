"""Giving each process its share of the data under a distributed strategy."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler

from trellis.utils.rank_zero import warn_once

#: DataLoader settings carried over when the loader is rebuilt around a DistributedSampler.
_CARRIED = (
    "batch_size", "num_workers", "collate_fn", "pin_memory", "drop_last", "timeout", "worker_init_fn",
    "multiprocessing_context", "generator", "prefetch_factor", "persistent_workers",
)


def distribute(loader: Iterable, sampler_kwargs: dict[str, int]) -> Iterable:
    """The same loader over a DistributedSampler, keeping the user's shuffle choice.

    A loader that already has a DistributedSampler, an iterable dataset, or a custom batch sampler is left
    as it is (with a warning for the last, since only the user knows how to split it).
    """
    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, DistributedSampler):
        return loader
    if loader.batch_sampler is None or not hasattr(loader.dataset, "__len__"):
        return loader
    if type(loader.batch_sampler) is not BatchSampler:
        warn_once(
            f"the dataloader uses a custom batch sampler ({type(loader.batch_sampler).__name__}), so Trellis does not "
            "split it across processes: split it yourself, or pass Trainer(use_distributed_sampler=False) to silence this"
        )
        return loader
    shuffle = isinstance(loader.sampler, RandomSampler)
    seed = int(os.environ.get("TRELLIS_GLOBAL_SEED", 0))
    sampler = DistributedSampler(loader.dataset, shuffle=shuffle, seed=seed, drop_last=False, **sampler_kwargs)
    settings: dict[str, Any] = {name: getattr(loader, name) for name in _CARRIED}
    if settings["num_workers"] == 0:
        settings.pop("prefetch_factor")
        settings["persistent_workers"] = False
    return DataLoader(loader.dataset, sampler=sampler, **settings)
