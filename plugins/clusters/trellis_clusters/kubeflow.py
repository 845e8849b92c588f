"""Kubeflow PyTorchJob: one process per pod, rank and world size from the operator's variables."""

from __future__ import annotations

import os

from trellis.plugin import ClusterEnvironment
from trellis_clusters._variables import all_set, check_layout, read_int

_LAUNCHER = "the Kubeflow PyTorchJob operator"


class KubeflowEnvironment(ClusterEnvironment):
    """The operator sets MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK in each pod; a pod is a node."""

    name = "kubeflow"
    auto_priority = 30

    @classmethod
    def detect(cls) -> bool:
        return all_set("KUBERNETES_PORT", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")

    @property
    def main_address(self) -> str:
        return os.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        return read_int("MASTER_PORT", _LAUNCHER)

    def world_size(self) -> int:
        return read_int("WORLD_SIZE", _LAUNCHER)

    def global_rank(self) -> int:
        return read_int("RANK", _LAUNCHER)

    def local_rank(self) -> int:
        return 0

    def node_rank(self) -> int:
        return self.global_rank()

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        check_layout(_LAUNCHER, self.world_size(), 1, num_devices, num_nodes)
