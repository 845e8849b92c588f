"""The cluster-environment role: what the launcher of this process tells us about ranks."""

from __future__ import annotations

from typing import ClassVar


class ClusterEnvironment:
    """Ranks, world size and rendezvous address as set by torchrun, SLURM, MPI, ..."""

    name: ClassVar[str] = ""
    #: order of detection: the detected environment with the highest value is used.
    auto_priority: ClassVar[int] = 0

    @classmethod
    def detect(cls) -> bool:
        """Whether this process was launched by this environment."""
        raise NotImplementedError

    @property
    def creates_processes_externally(self) -> bool:
        """True when the environment started every process (the strategy must not launch any)."""
        return True

    @property
    def main_address(self) -> str:
        raise NotImplementedError

    @property
    def main_port(self) -> int:
        raise NotImplementedError

    def world_size(self) -> int:
        raise NotImplementedError

    def global_rank(self) -> int:
        raise NotImplementedError

    def local_rank(self) -> int:
        raise NotImplementedError

    def node_rank(self) -> int:
        raise NotImplementedError

    def requeue(self) -> bool:
        """Put the job back in the scheduler's queue after preemption; False where the scheduler cannot."""
        return False

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Raise when the Trainer's devices/num_nodes contradict what the environment launched."""
