"""Leaving torch.distributed's process group cleanly when the process exits."""

from __future__ import annotations

import atexit
import functools


@functools.cache
def leave_process_group_at_exit() -> None:
    """Destroy the default process group before the interpreter shuts down (once per process).

    Left to interpreter shutdown, the backend's threads can be torn down while still running
    ("terminate called without an active exception", SIGABRT) after a run that itself succeeded.
    """
    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
