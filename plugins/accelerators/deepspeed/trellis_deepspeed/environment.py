"""Processes started by DeepSpeed's own launcher (`deepspeed train.py`), which no cluster environment knows."""

from __future__ import annotations

import os

from trellis.errors import ConfigurationError
from trellis.plugin import ClusterEnvironment

#: what DeepSpeed's launcher exports in every process it starts (CROSS_RANK: the node's rank).
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "CROSS_RANK", "MASTER_ADDR", "MASTER_PORT")


class DeepSpeedLauncherEnvironment(ClusterEnvironment):
    """Ranks and rendezvous as DeepSpeed's launcher set them; the strategy launches nothing then."""

    name = "deepspeed"

    @classmethod
    def detect(cls) -> bool:
        return all(name in os.environ for name in LAUNCHER_VARIABLES)

    @property
    def main_address(self) -> str:
        return os.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        return int(os.environ["MASTER_PORT"])

    def world_size(self) -> int:
        return int(os.environ["WORLD_SIZE"])

    def global_rank(self) -> int:
        return int(os.environ["RANK"])

    def local_rank(self) -> int:
        return int(os.environ["LOCAL_RANK"])

    def node_rank(self) -> int:
        return int(os.environ["CROSS_RANK"])

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        per_node, total = int(os.environ["LOCAL_SIZE"]), self.world_size()
        if (per_node, total) != (num_devices, num_devices * num_nodes):
            raise ConfigurationError(
                f"DeepSpeed's launcher started {per_node} processes per node, {total} in all, but the Trainer has "
                f"devices={num_devices} and num_nodes={num_nodes}: pass devices={per_node} and "
                f"num_nodes={total // per_node}"
            )
