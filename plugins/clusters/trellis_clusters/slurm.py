"""SLURM: processes started by srun read their ranks from SLURM_PROCID/SLURM_LOCALID/SLURM_NODEID."""

from __future__ import annotations

import os
import re
import subprocess

from trellis.errors import ConfigurationError
from trellis.plugin import ClusterEnvironment, warn_once
from trellis_clusters._variables import check_layout, port_from_job_id, read_int

_LAUNCHER = "SLURM (srun)"
#: job names of interactive allocations, where the user runs the script by hand and Trellis launches.
INTERACTIVE_JOB_NAMES = frozenset({"bash", "interactive"})


class SLURMEnvironment(ClusterEnvironment):
    """Attached to when srun started one task per device."""

    name = "slurm"
    auto_priority = 20

    @classmethod
    def detect(cls) -> bool:
        return (
            "SLURM_NTASKS" in os.environ
            and "SLURM_PROCID" in os.environ
            and os.environ.get("SLURM_JOB_NAME") not in INTERACTIVE_JOB_NAMES
        )

    @property
    def main_address(self) -> str:
        if "MASTER_ADDR" in os.environ:
            return os.environ["MASTER_ADDR"]
        nodelist = os.environ.get("SLURM_NODELIST") or os.environ.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise ConfigurationError("SLURM did not set SLURM_NODELIST: set MASTER_ADDR to the first node's address")
        return first_host(nodelist)

    @property
    def main_port(self) -> int:
        if "MASTER_PORT" in os.environ:
            return read_int("MASTER_PORT", "the user")
        return port_from_job_id(os.environ.get("SLURM_JOB_ID", "0"))

    def world_size(self) -> int:
        return read_int("SLURM_NTASKS", _LAUNCHER)

    def global_rank(self) -> int:
        return read_int("SLURM_PROCID", _LAUNCHER)

    def local_rank(self) -> int:
        return read_int("SLURM_LOCALID", _LAUNCHER)

    def node_rank(self) -> int:
        return read_int("SLURM_NODEID", _LAUNCHER)

    def requeue(self) -> bool:
        """`scontrol requeue $SLURM_JOB_ID` (for array jobs, the array task's own id)."""
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job and "SLURM_ARRAY_TASK_ID" in os.environ else None
        job = job or os.environ.get("SLURM_JOB_ID")
        if not job:
            return False
        try:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            warn_once(f"could not requeue SLURM job {job}: {error}; resubmit it by hand")
            return False
        if result.returncode != 0:
            warn_once(f"scontrol requeue {job} failed: {result.stderr.strip()}; resubmit the job by hand")
        return result.returncode == 0

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        per_node = os.environ.get("SLURM_NTASKS_PER_NODE")
        tasks_per_node = int(re.match(r"\d+", per_node).group()) if per_node and re.match(r"\d+", per_node) else None
        check_layout(_LAUNCHER, self.world_size(), tasks_per_node, num_devices, num_nodes)


def first_host(nodelist: str) -> str:
    """The first host of a SLURM hostlist such as "gpu[003-005,9],login1" (here "gpu003")."""
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise ConfigurationError(f"cannot read the SLURM node list {nodelist!r}: set MASTER_ADDR to the first node")
    prefix, _, ranges = match.groups()
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first
