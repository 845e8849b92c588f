"""The environment of processes Trellis starts itself (no cluster launcher detected)."""

from __future__ import annotations

import os

from trellis.roles.cluster_environment import ClusterEnvironment

#: set in every process of a group Trellis launched, so that none of them launches again.
LAUNCHED_VARIABLE = "TRELLIS_LAUNCHED"
#: pid of the process that launched the group; the others exit when it disappears.
LAUNCHER_PID_VARIABLE = "TRELLIS_LAUNCHER_PID"


class LocalEnvironment(ClusterEnvironment):
    """`devices` processes per node, started on this machine by the strategy's launcher.

    Ranks come from LOCAL_RANK and NODE_RANK (0 unless set by hand for a manual multi-node start), the
    rendezvous from MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (a free port picked at launch).
    """

    name = "local"

    def __init__(self, num_devices: int, num_nodes: int) -> None:
        self.num_devices, self.num_nodes = num_devices, num_nodes

    @classmethod
    def detect(cls) -> bool:
        return False

    @staticmethod
    def launched() -> bool:
        """Whether a Trellis launcher started this process's group (this process included)."""
        return os.environ.get(LAUNCHED_VARIABLE) == "1"

    @property
    def creates_processes_externally(self) -> bool:
        return self.launched()

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ["MASTER_PORT"])

    def world_size(self) -> int:
        return self.num_devices * self.num_nodes

    def global_rank(self) -> int:
        return self.node_rank() * self.num_devices + self.local_rank()

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", "0"))

    def node_rank(self) -> int:
        return int(os.environ.get("NODE_RANK", "0"))
