"""The interfaces a plugin implements, one per role; plugins import them from `trellis.plugin`.

Importing a role from `trellis.roles` still works for one release and warns (DeprecationWarning) with the
new import; the kernel's own modules are not warned about.
"""

from __future__ import annotations

import sys
import typing as _typing
import warnings
from importlib import import_module

if _typing.TYPE_CHECKING:  # imported on first use at run time, through __getattr__ below
    from trellis.roles.accelerator import Accelerator as Accelerator
    from trellis.roles.checkpoint_io import CheckpointIO as CheckpointIO
    from trellis.roles.cluster_environment import ClusterEnvironment as ClusterEnvironment
    from trellis.roles.logger import Logger as Logger
    from trellis.roles.precision import Precision as Precision
    from trellis.roles.strategy import Launcher as Launcher
    from trellis.roles.strategy import SingleDeviceStrategy as SingleDeviceStrategy
    from trellis.roles.strategy import Strategy as Strategy

#: role interface -> the module that defines it.
_DEFINED_IN = {
    "Accelerator": "trellis.roles.accelerator",
    "CheckpointIO": "trellis.roles.checkpoint_io",
    "ClusterEnvironment": "trellis.roles.cluster_environment",
    "Launcher": "trellis.roles.strategy",
    "Logger": "trellis.roles.logger",
    "Precision": "trellis.roles.precision",
    "SingleDeviceStrategy": "trellis.roles.strategy",
    "Strategy": "trellis.roles.strategy",
}

__all__ = sorted(_DEFINED_IN)


def __getattr__(name: str) -> object:
    if name not in _DEFINED_IN:
        raise AttributeError(f"module 'trellis.roles' has no attribute {name!r}")
    caller = sys._getframe(1).f_globals.get("__name__", "")
    # importlib probes the name before the importing statement reads it: warn once, at that statement;
    # jsonargparse probes parent modules for a class's shortest import path, which is no import by the user
    if caller != "trellis" and not caller.startswith(("trellis.", "importlib", "jsonargparse")):
        warnings.warn(
            f"importing {name} from trellis.roles is deprecated and stops working in the next release: "
            f"use `from trellis.plugin import {name}`",
            DeprecationWarning,
            stacklevel=2,
        )
    return getattr(import_module(_DEFINED_IN[name]), name)
