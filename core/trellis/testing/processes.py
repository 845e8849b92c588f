"""Test helpers for multi-process plugins: a command in a process group of its own (free of any outer
launcher's variables, always killed afterwards) and a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

#: variables of an outer launcher that must not leak into the runs started here.
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
                      "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "TRELLIS_DDP_LAUNCHED", "TRELLIS_DDP_PARENT_PID")


def run(command: list[str], timeout: float = 90, **variables: str) -> subprocess.CompletedProcess:
    """Run a command in its own process group; whatever it leaves behind is killed."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in LAUNCHER_VARIABLES and not key.startswith("SLURM_")}
    environment.update(variables)
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        kill_group(process.pid)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
