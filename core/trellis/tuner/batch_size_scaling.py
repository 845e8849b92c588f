"""Finding the largest batch size that runs: grow it until a step runs out of memory, then settle."""

from __future__ import annotations

import gc
import os
import resource
from collections.abc import Callable
from typing import Any

import torch

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError

MODES = ("power", "binsearch")
_OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "CUDNN_STATUS_NOT_SUPPORTED",
                           "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")


class MemoryCapExceeded(RuntimeError):
    """A trial step used more resident memory than scale_batch_size(max_memory_mb=...) allows."""


class MemoryCap(Callback):
    """Samples the process's resident memory before each backward (activations are alive then)."""

    def __init__(self, max_memory_mb: float) -> None:
        self.max_bytes = max_memory_mb * 2**20

    def on_before_backward(self) -> None:
        used = resident_bytes()
        if used > self.max_bytes:
            raise MemoryCapExceeded(
                f"out of memory: the step used {used / 2**20:.0f} MB resident, above max_memory_mb="
                f"{self.max_bytes / 2**20:.0f}"
            )


def resident_bytes() -> int:
    """The process's resident set now (Linux /proc), else its peak (getrusage) elsewhere."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryCapExceeded)):
        return True
    return isinstance(error, RuntimeError) and len(error.args) == 1 and any(
        message in str(error.args[0]) for message in _OUT_OF_MEMORY_MESSAGES
    )


def free_memory() -> None:
    gc.collect()
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        torch.accelerator.memory.empty_cache()


class BatchSizeAttribute:
    """Where the batch size lives: model.batch_size, model.hparams.batch_size or the datamodule's; all are set."""

    def __init__(self, model: Any, datamodule: Any, name: str) -> None:
        self.name = name
        self.holders = [
            holder
            for source in (model, datamodule) if source is not None
            for holder in (source, getattr(source, "hparams", None))
            if holder is not None and _has(holder, name)
        ]
        if not self.holders:
            raise ConfigurationError(
                f"scale_batch_size found no `{name}` to tune: give the model or datamodule a `{name}` attribute "
                f"(or save_hyperparameters() with a `{name}` argument) and build train_dataloader() from it"
            )

    def get(self) -> int:
        return int(_get(self.holders[0], self.name))

    def set(self, value: int) -> None:
        for holder in self.holders:
            _set(holder, self.name, value)


def _has(holder: Any, name: str) -> bool:
    return name in holder if isinstance(holder, dict) else hasattr(holder, name)


def _get(holder: Any, name: str) -> Any:
    return holder[name] if isinstance(holder, dict) else getattr(holder, name)


def _set(holder: Any, name: str, value: int) -> None:
    if isinstance(holder, dict):
        holder[name] = value
    else:
        setattr(holder, name, value)


def power_search(fits: Callable[[int], bool], start: int, max_trials: int, upper: Callable[[], int | None]) -> int:
    """Double the size until a trial fails (or max_trials or the dataset size is reached); the last that ran."""
    size, best = start, None
    for _ in range(max_trials):
        if not fits(size):
            break
        best = size
        limit = upper()
        if limit is not None and size >= limit:
            break
        size *= 2
    return _found(best, start)


def binary_search(fits: Callable[[int], bool], start: int, max_trials: int, upper: Callable[[], int | None]) -> int:
    """Double until a failure, then bisect between the last size that ran and the first that failed."""
    low, high, size, best = 0, None, start, None
    for _ in range(max_trials):
        if fits(size):
            best = low = size
            limit = upper()
            if limit is not None and size >= limit:
                break
            size = size * 2 if high is None else (low + high) // 2
        else:
            high = size
            size = (low + high) // 2
        if high is not None and high - low <= 1:
            break
        if size <= 0:
            break
    return _found(best, start)


def _found(best: int | None, start: int) -> int:
    if best is None:
        raise RuntimeError(
            f"scale_batch_size: even the first batch size tried ({start}) ran out of memory: lower init_val, "
            "shrink the model, or raise max_memory_mb"
        )
    return best
