"""Giving each process its share of the data under a distributed strategy."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler

from trellis.data import rebuild_dataloader
from trellis.utils.rank_zero import warn_once


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
            "split it across processes: split it yourself, "
            "or pass Trainer(use_distributed_sampler=False) to silence this"
        )
        return loader
    shuffle = isinstance(loader.sampler, RandomSampler)
    seed = int(os.environ.get("TRELLIS_GLOBAL_SEED", 0))
    sampler: DistributedSampler[Any] = DistributedSampler(loader.dataset, shuffle=shuffle, seed=seed, drop_last=False,
                                                          **sampler_kwargs)
    # torch types batch_size as Optional: None would be refused by BatchSampler, as before
    return rebuild_dataloader(loader, BatchSampler(sampler, loader.batch_size, loader.drop_last))  # type: ignore[arg-type]
