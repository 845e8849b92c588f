"""What the kit checks: one plugin name in one role, loaded once and shared by its checks."""

from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import torch

import trellis
from trellis import discovery
from trellis.callbacks.base import Callback
from trellis.errors import PluginConflictError, PluginLoadError, PluginNotFoundError
from trellis.roles import Accelerator, CheckpointIO, ClusterEnvironment, Logger, Precision, Strategy

#: role -> the kernel class its plugins implement.
ROLE_BASES: dict[str, type] = {
    "accelerator": Accelerator,
    "strategy": Strategy,
    "precision": Precision,
    "logger": Logger,
    "checkpoint_io": CheckpointIO,
    "cluster_environment": ClusterEnvironment,
    "callback": Callback,
}
#: roles whose entry point may name a factory function instead of a class.
FACTORY_ROLES = frozenset({"strategy", "precision", "checkpoint_io", "callback"})
DEFAULT_IMPORT_BUDGET_S = 0.5
T = TypeVar("T")
#: where the kernel and torch live, and the standard library: frames there are not the plugin's code.
_KERNEL_AND_TORCH = tuple(os.path.dirname(cast(str, module.__file__)) + os.sep for module in (trellis, torch))
_STDLIB = sysconfig.get_paths()["stdlib"] + os.sep


class ConformanceFailure(AssertionError):
    """A broken contract; the message says what to fix."""


class ConformanceSkip(Exception):
    """A check that cannot run here (the hardware or an optional distribution is absent)."""


@dataclass(frozen=True)
class Target:
    """A plugin to check, written ROLE:NAME (accelerator:acme)."""

    role: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Target:
        role, separator, name = text.strip().partition(":")
        role = role.strip().replace("-", "_")
        if not separator or not name.strip():
            raise ValueError(f"{text!r} is not ROLE:NAME: write it like accelerator:acme or logger:my_logger")
        if role not in ROLE_BASES:
            raise ValueError(f"{text!r} names the role {role!r}; roles are {', '.join(ROLE_BASES)}")
        return cls(role, name.strip())

    @property
    def group(self) -> str:
        return discovery.GROUPS[self.role]

    def __str__(self) -> str:
        return f"{self.role}:{self.name}"


@dataclass
class Subject:
    """A target and what the checks learnt about it: the entry, the loaded object, finished runs."""

    target: Target
    import_budget_s: float = DEFAULT_IMPORT_BUDGET_S
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return self.target.role

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def base(self) -> type:
        return ROLE_BASES[self.role]

    def entry(self) -> discovery.PluginEntry:
        """The installed entry point, or a failure saying how to declare it."""
        try:
            return discovery.find(self.role, self.name)
        except PluginNotFoundError as error:
            raise ConformanceFailure(
                f"{error} Declare it in your pyproject.toml:\n"
                f'    [project.entry-points."{self.target.group}"]\n'
                f'    {self.name} = "your_package:YourClass"\n'
                "then reinstall the distribution (pip install -e .) so that its metadata is rewritten."
            ) from None
        except PluginConflictError as error:
            raise ConformanceFailure(str(error)) from None

    def load(self) -> Any:
        """The object the entry point names (a class, or a factory where the role allows one)."""
        if "load_error" in self.cache:
            raise ConformanceFailure(f"cannot run: {self.target} does not import ({self.cache['load_error']})")
        if "loaded" not in self.cache:
            entry = self.entry()
            try:
                self.cache["loaded"] = entry.load()
            except PluginLoadError as error:
                self.cache["load_error"] = f"{describe(error.__cause__ or error)}; see its 'imports' check"
                raise ConformanceFailure(
                    f"{error}\nFix: make `import {entry.value.partition(':')[0]}` work in a fresh interpreter; import "
                    "backend libraries (device SDKs, service clients) inside the methods that use them, so that a "
                    "missing backend makes is_available() return False instead of breaking the import."
                ) from None
        return self.cache["loaded"]

    def plugin_class(self) -> type[Any]:
        """The class the kernel instantiates; a factory is called once to find it."""
        loaded = self.load()
        if isinstance(loaded, type):
            return loaded
        return type(self.build())

    def build(self, root_dir: str | os.PathLike | None = None) -> Any:
        """A fresh plugin object, made the way the kernel makes it when the plugin is chosen by name."""
        loaded = self.load()
        try:
            if self.role == "logger":
                return loaded.from_trainer(os.fspath(root_dir or os.getcwd()))
            return loaded()
        except Exception as error:
            how = f"{self.name}.from_trainer(root_dir)" if self.role == "logger" else f"{self.name}()"
            raise ConformanceFailure(
                f"building the plugin as the kernel does ({how}) raised {describe(error)}. "
                "Chosen by name, a plugin gets no arguments: give every __init__ argument a default."
            ) from error

    def scratch_dir(self) -> Path:
        """A directory that lives as long as this subject, for results several checks share."""
        if "scratch" not in self.cache:
            path = tempfile.mkdtemp(prefix=f"trellis-conformance-{self.role}-")
            weakref.finalize(self, shutil.rmtree, path, ignore_errors=True)
            self.cache["scratch"] = Path(path)
        return self.cache["scratch"]

    def require_available(self) -> None:
        """Skip the calling check when this accelerator cannot run on this machine."""
        if self.role != "accelerator":
            return
        cls = self.plugin_class()
        if not unexpected_errors_fail(f"{cls.__qualname__}.is_available()", cls.is_available):
            raise ConformanceSkip(f"accelerator {self.name!r} is not available here: {cls.unavailable_reason()}")


def unexpected_errors_fail(action: str, function: Callable[[], T]) -> T:
    """Run `function`; an exception that is not the kit's own becomes a failure that points into the plugin."""
    try:
        return function()
    except (ConformanceFailure, ConformanceSkip):
        raise
    except Exception as error:
        raise failure_from(action, error) from error


def failure_from(action: str, error: BaseException) -> ConformanceFailure:
    """A failure naming what was done, the error, and the last line of plugin code on the way."""
    frames = traceback.extract_tb(error.__traceback__)
    plugin_frames = [frame for frame in frames if not _in_library(frame.filename)]
    where = plugin_frames[-1] if plugin_frames else (frames[-1] if frames else None)
    location = f" at {where.filename}:{where.lineno} in {where.name}()" if where else ""
    return ConformanceFailure(
        f"{action} raised {describe(error)}{location}. Fix that code path: the kernel calls it in "
        "every run that chooses this plugin"
    )


def describe(error: BaseException) -> str:
    """`TypeName: message`, or the type name alone when the message is empty."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _in_library(filename: str) -> bool:
    if filename.startswith(_KERNEL_AND_TORCH):
        return True
    return filename.startswith(_STDLIB) and "site-packages" not in filename
