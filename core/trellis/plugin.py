"""The plugin API: the one module plugin code imports the kernel from.

Every name in `__all__` is the contract between the kernel and plugins, versioned by `PLUGIN_API_VERSION`
(docs/plugins.md, "Versioning", lists what each version added or changed). A plugin declares the version it
was built for with a module attribute beside its entry point, `TRELLIS_PLUGIN_API = 1`. Kernel modules not
listed here may change in any release; plugins import only from here, `trellis.errors` and (in tests)
`trellis.testing`.

Names whose modules `import trellis` does not load already are imported on first use, so importing this
module costs nothing beyond `import trellis`.
"""

import typing as _typing
from importlib import import_module as _import_module

from trellis.callbacks.base import Callback
from trellis.checkpointing import FORMAT_VERSION as CHECKPOINT_FORMAT_VERSION
from trellis.discovery import PLUGIN_API_VERSION
from trellis.discovery import find as find_plugin
from trellis.discovery import load as load_plugin
from trellis.discovery import names as plugin_names
from trellis.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ConfigurationError,
    HookValidationError,
    PluginConflictError,
    PluginLoadError,
    PluginNotFoundError,
    TrainingError,
    TrellisError,
)
from trellis.optim import OptimizerSetup, SchedulerConfig
from trellis.roles.accelerator import Accelerator, DevicesArg
from trellis.roles.checkpoint_io import CheckpointIO, PathLike
from trellis.roles.cluster_environment import ClusterEnvironment
from trellis.roles.logger import Logger
from trellis.roles.precision import Precision
from trellis.roles.strategy import LaunchedCall, Launcher, SingleDeviceStrategy, StepRunner, Strategy, TrainingSettings
from trellis.selection import detect_cluster_environment
from trellis.utils.collections import apply_to_tensors, move_to_device
from trellis.utils.hparams import flatten_hparams, plain_value
from trellis.utils.rank_zero import global_rank, rank_zero_info, rank_zero_warn, warn_once
from trellis.utils.tensor_init import default_dtype

if _typing.TYPE_CHECKING:  # imported on first use at run time, through __getattr__ and _LAZY below
    from trellis.parallel import (
        DEFAULT_TIMEOUT,
        LocalEnvironment,
        ParallelStrategy,
        RankFailedError,
        ScriptLauncher,
        SpawnLauncher,
        free_port,
        join_process_group,
    )
    from trellis.utils.background import BackgroundDelivery, hold_file, release_file
    from trellis.utils.background import Item as DeliveryItem
    from trellis.utils.files import fsync_directory
    from trellis.utils.process_group import leave_process_group_at_exit
    from trellis.utils.run_lease import RunDirectory

#: name -> (module, attribute) for names imported on first use.
_LAZY: dict[str, tuple[str, str]] = {
    "BackgroundDelivery": ("trellis.utils.background", "BackgroundDelivery"),
    "DEFAULT_TIMEOUT": ("trellis.parallel", "DEFAULT_TIMEOUT"),
    "DeliveryItem": ("trellis.utils.background", "Item"),
    "LocalEnvironment": ("trellis.parallel", "LocalEnvironment"),
    "ParallelStrategy": ("trellis.parallel", "ParallelStrategy"),
    "RankFailedError": ("trellis.parallel", "RankFailedError"),
    "RunDirectory": ("trellis.utils.run_lease", "RunDirectory"),
    "ScriptLauncher": ("trellis.parallel", "ScriptLauncher"),
    "SpawnLauncher": ("trellis.parallel", "SpawnLauncher"),
    "free_port": ("trellis.parallel", "free_port"),
    "fsync_directory": ("trellis.utils.files", "fsync_directory"),
    "hold_file": ("trellis.utils.background", "hold_file"),
    "join_process_group": ("trellis.parallel", "join_process_group"),
    "leave_process_group_at_exit": ("trellis.utils.process_group", "leave_process_group_at_exit"),
    "release_file": ("trellis.utils.background", "release_file"),
}

__all__ = [
    "Accelerator",
    "BackgroundDelivery",
    "CHECKPOINT_FORMAT_VERSION",
    "Callback",
    "CheckpointError",
    "CheckpointIO",
    "CheckpointMismatchError",
    "ClusterEnvironment",
    "ConfigurationError",
    "DEFAULT_TIMEOUT",
    "DeliveryItem",
    "DevicesArg",
    "HookValidationError",
    "LaunchedCall",
    "Launcher",
    "LocalEnvironment",
    "Logger",
    "OptimizerSetup",
    "PLUGIN_API_VERSION",
    "ParallelStrategy",
    "PathLike",
    "PluginConflictError",
    "PluginLoadError",
    "PluginNotFoundError",
    "Precision",
    "RankFailedError",
    "RunDirectory",
    "SchedulerConfig",
    "ScriptLauncher",
    "SingleDeviceStrategy",
    "SpawnLauncher",
    "StepRunner",
    "Strategy",
    "TrainingError",
    "TrainingSettings",
    "TrellisError",
    "apply_to_tensors",
    "default_dtype",
    "detect_cluster_environment",
    "find_plugin",
    "flatten_hparams",
    "free_port",
    "fsync_directory",
    "global_rank",
    "hold_file",
    "join_process_group",
    "leave_process_group_at_exit",
    "load_plugin",
    "move_to_device",
    "plain_value",
    "plugin_names",
    "rank_zero_info",
    "rank_zero_warn",
    "release_file",
    "warn_once",
]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'trellis.plugin' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    value = getattr(_import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
