"""Joining torch.distributed's default process group (left again when the process exits)."""

from __future__ import annotations

import datetime
import os

from trellis.errors import ConfigurationError
from trellis.parallel.ports import port_in_use_message
from trellis.utils.process_group import leave_process_group_at_exit


def join_process_group(backend: str | None, rank: int, world_size: int, timeout: datetime.timedelta) -> None:
    """Join through MASTER_ADDR/MASTER_PORT (env://, which also reuses torchrun's store), once per process.

    A rendezvous port that another process holds is a ConfigurationError that says how to pick another.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return
    try:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout)
    except dist.DistNetworkError as error:
        if "EADDRINUSE" in str(error) or "already in use" in str(error).lower():
            raise ConfigurationError(
                port_in_use_message(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
            ) from error
        raise
    leave_process_group_at_exit()
