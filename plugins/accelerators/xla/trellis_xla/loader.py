"""XLA's parallel loader, with each epoch's iteration started in the training thread."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch


class DeviceLoader:
    """torch_xla's MpDeviceLoader over `loader`, whose iterator is made, and first batch read, in the thread
    that iterates this object; its background thread reads on from the second batch.

    Made in the background, the loader's iterator takes torch's random draws (a DataLoader's seed, a shuffling
    sampler's order) at a moment that races the training thread: an epoch resumed from a checkpoint, which
    restores the checkpoint's RNG right after making its iterator, sometimes got another order (seen in 1 of 2
    sharded runs resumed on the CPU). Here the draws come in the same sequence as in a plain loop.
    """

    def __init__(self, loader: Iterable, device: torch.device, **options: Any) -> None:
        self.loader, self.device, self.options = loader, device, options

    def __iter__(self) -> Iterator[Any]:
        from torch_xla.distributed.parallel_loader import MpDeviceLoader

        batches = iter(self.loader)
        first = list(itertools.islice(batches, 1))
        return iter(MpDeviceLoader(_Started(itertools.chain(first, batches), self.loader), self.device,
                                   **self.options))

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]  # asked only of loaders that have a length


class _Started:
    """An iteration already begun, with the length of the loader it came from."""

    def __init__(self, batches: Iterator[Any], loader: Iterable) -> None:
        self.batches, self.loader = batches, loader

    def __iter__(self) -> Iterator[Any]:
        return self.batches

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]
