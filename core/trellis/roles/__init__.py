"""The interfaces a plugin implements, one per role."""

from trellis.roles.accelerator import Accelerator
from trellis.roles.checkpoint_io import CheckpointIO
from trellis.roles.cluster_environment import ClusterEnvironment
from trellis.roles.logger import Logger
from trellis.roles.precision import Precision
from trellis.roles.strategy import Launcher, SingleDeviceStrategy, Strategy

__all__ = [
    "Accelerator",
    "CheckpointIO",
    "ClusterEnvironment",
    "Launcher",
    "Logger",
    "Precision",
    "SingleDeviceStrategy",
    "Strategy",
]
