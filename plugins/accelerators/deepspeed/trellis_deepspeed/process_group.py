"""Joining the process group DeepSpeed needs, launched by torchrun or alone in one process."""

from __future__ import annotations

import os
import socket

from trellis.errors import ConfigurationError
from trellis.utils.process_group import leave_process_group_at_exit


def launched_world_size() -> int | None:
    """WORLD_SIZE set by the launcher (torchrun, SLURM wrappers), None when nobody launched us."""
    value = os.environ.get("WORLD_SIZE")
    return int(value) if value else None


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def check_world_size(expected: int) -> None:
    """The processes launched must be the devices x nodes the Trainer asked for."""
    launched = launched_world_size()
    if launched is None and expected > 1:
        raise ConfigurationError(
            f"strategy='deepspeed' over {expected} processes needs them launched: run the script with "
            f"`torchrun --nproc_per_node={expected} script.py` (or DeepSpeed's `deepspeed` launcher)"
        )
    if launched is not None and launched != expected:
        raise ConfigurationError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but the Trainer asks for devices x "
            f"num_nodes = {expected}: make them match"
        )


def prepare_single_process_environment() -> None:
    """Rendezvous variables for a world of one on this host, where no launcher set them."""
    if launched_world_size() is not None:
        return
    defaults = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())


def join(backend: str | None) -> None:
    """Initialise torch.distributed through DeepSpeed's comm layer (once per process)."""
    import deepspeed
    import torch.distributed

    if backend is None:
        raise ConfigurationError(
            "the chosen accelerator names no process-group backend, which DeepSpeed needs: use an accelerator "
            "that speaks gloo, nccl or another torch.distributed backend"
        )
    deepspeed.init_distributed(dist_backend=backend, dist_init_required=not torch.distributed.is_initialized())
    leave_process_group_at_exit()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
