"""torchrun / TorchElastic: every worker gets RANK, LOCAL_RANK, GROUP_RANK, WORLD_SIZE and the store address."""

from __future__ import annotations

import os

from trellis.plugin import ClusterEnvironment
from trellis_clusters._variables import all_set, check_layout, read_int

_LAUNCHER = "torchrun"


class TorchElasticEnvironment(ClusterEnvironment):
    """Attached to when torchrun (or another TorchElastic agent) started this process."""

    name = "torchelastic"
    auto_priority = 40

    @classmethod
    def detect(cls) -> bool:
        return all_set("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE")

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return read_int("MASTER_PORT", _LAUNCHER)

    def world_size(self) -> int:
        return read_int("WORLD_SIZE", _LAUNCHER)

    def global_rank(self) -> int:
        return read_int("RANK", _LAUNCHER)

    def local_rank(self) -> int:
        return read_int("LOCAL_RANK", _LAUNCHER)

    def node_rank(self) -> int:
        return read_int("GROUP_RANK", _LAUNCHER)

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        check_layout(_LAUNCHER, self.world_size(), read_int("LOCAL_WORLD_SIZE", _LAUNCHER), num_devices, num_nodes)
