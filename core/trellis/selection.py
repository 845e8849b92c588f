"""Turning the Trainer's flags and plugin objects into one connected set of plugins.

The kernel asks the chosen plugins what they can do; it never tests for a particular backend.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trellis import discovery
from trellis.callback_loading import implemented_hooks
from trellis.errors import ConfigurationError, PluginConflictError, PluginLoadError, PluginNotFoundError
from trellis.roles.accelerator import Accelerator, DevicesArg
from trellis.roles.checkpoint_io import CheckpointIO
from trellis.roles.cluster_environment import ClusterEnvironment
from trellis.roles.logger import Logger
from trellis.roles.precision import Precision
from trellis.roles.strategy import SingleDeviceStrategy, Strategy
from trellis.utils.collections import as_list
from trellis.utils.rank_zero import warn_once

log = logging.getLogger(__name__)

#: kernel-provided implementations, available even with discovery off.
BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {"single_device": SingleDeviceStrategy}
DEFAULT_PRECISION = "32-true"
DEFAULT_CHECKPOINT_IO = "torch"
DEFAULT_LOGGER = "csv"
#: what logger=True gives when its plugin (and the package it writes with) is installed, as Lightning does.
PREFERRED_DEFAULT_LOGGER, PREFERRED_DEFAULT_LOGGER_PACKAGE = "tensorboard", "tensorboard"
_ROLE_CLASSES: dict[str, type] = {
    "accelerator": Accelerator,
    "strategy": Strategy,
    "precision": Precision,
    "checkpoint_io": CheckpointIO,
    "cluster_environment": ClusterEnvironment,
    "logger": Logger,
}


@dataclass
class Selection:
    """The plugins a Trainer runs with; `hook_plugins` are plain objects implementing hooks."""

    accelerator: Accelerator
    strategy: Strategy
    precision: Precision
    checkpoint_io: CheckpointIO
    loggers: list[Logger] = field(default_factory=list)
    cluster_environment: ClusterEnvironment | None = None
    hook_plugins: list[Any] = field(default_factory=list)


def sort_plugin_objects(plugins: Sequence[Any]) -> dict[str, Any]:
    """Sort `Trainer(plugins=[...])` by role; objects of no role that implement hooks are hook plugins."""
    by_role: dict[str, Any] = {"logger": [], "hook": []}
    for plugin in plugins:
        if isinstance(plugin, str):
            raise ConfigurationError(
                f"plugins=[{plugin!r}] takes objects; name a plugin through its flag instead "
                "(accelerator=, strategy=, precision=, logger=)"
            )
        role = next((role for role, cls in _ROLE_CLASSES.items() if isinstance(plugin, cls)), "hook")
        if role == "hook" and not implemented_hooks(plugin):
            raise ConfigurationError(
                f"plugins= got {plugin!r}, which fills no plugin role (it subclasses none of trellis.plugin's "
                f"{', '.join(cls.__name__ for cls in _ROLE_CLASSES.values())}) and implements no hook: pass role "
                "objects, or objects with hook methods (docs/hooks.md)"
            )
        if role in ("logger", "hook"):
            by_role[role].append(plugin)
        elif role in by_role:
            raise ConfigurationError(
                f"plugins= holds two {role} objects ({type(by_role[role]).__name__} and {type(plugin).__name__}): "
                "pass one of them"
            )
        else:
            by_role[role] = plugin
    return by_role


def load_class(role: str, name: str) -> type[Any]:
    """The class registered under a name, for roles the kernel asks before building (accelerator, logger, ...)."""
    return _class_of(discovery.find(role, name))


def build(role: str, name: str) -> Any:
    """The object a name's class or factory builds with no arguments, checked against the role."""
    entry = discovery.find(role, name)
    built = entry.load()()
    base = _ROLE_CLASSES[role]
    if not isinstance(built, base):
        raise PluginLoadError(
            f"{role} plugin {name!r} from distribution {entry.origin} ({entry.value}) built a "
            f"{type(built).__qualname__}, not a trellis.plugin.{base.__name__}: its author fixes the entry point"
        )
    return built


def _class_of(entry: discovery.PluginEntry) -> type[Any]:
    obj = entry.load()
    base = _ROLE_CLASSES[entry.role]
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginLoadError(
            f"{entry.role} plugin {entry.name!r} from distribution {entry.origin} points at {obj!r} ({entry.value}), "
            f"not a subclass of trellis.plugin.{base.__name__}: the kernel reads the class before building it, so "
            "its author points the entry point at the class"
        )
    return obj


def resolve_accelerator(accelerator: str | Accelerator) -> Accelerator:
    if isinstance(accelerator, Accelerator):
        return accelerator
    if accelerator == "auto":
        return _auto_accelerator()
    cls = load_class("accelerator", accelerator)
    if not cls.is_available():
        raise ConfigurationError(f"accelerator={accelerator!r} is not available: {cls.unavailable_reason()}")
    return cls()


def _auto_accelerator() -> Accelerator:
    chosen, passed_over = _best_detected("accelerator", "is_available", _unavailable_reason)
    if chosen is None:
        found = "; ".join(passed_over) or "none is installed"
        installed = {entry.name for entry in discovery.installed_entries(include_blocked=True)
                     if entry.role == "accelerator"}
        hint = "" if "cpu" in installed else " (or pip install trellis-cpu)"
        raise ConfigurationError(
            f"accelerator='auto' found no available accelerator ({found}): pass an Accelerator object, e.g. "
            f"Trainer(accelerator=CPUAccelerator()) with `from trellis_cpu import CPUAccelerator`{hint}"
        )
    entry, cls = chosen
    log.info("accelerator='auto' chose %r (%s, auto_priority %s)%s", entry.name, entry.origin, cls.auto_priority,
             f"; passed over: {'; '.join(passed_over)}" if passed_over else "")
    return cls()


def _unavailable_reason(cls: type[Accelerator]) -> str:
    try:
        return f"unavailable: {cls.unavailable_reason()}"
    except Exception as error:  # a broken reason must not hide the others
        return f"unavailable (its unavailable_reason() raised {type(error).__name__}: {error})"


def detect_cluster_environment() -> ClusterEnvironment | None:
    """The installed cluster environment that recognises this process's environment, if any.

    One whose import, detect() or construction fails is skipped with a warning: a broken environment that
    does not apply must not stop training, nor turn a preemption's exit into a crash.
    """
    chosen, _ = _best_detected("cluster_environment", "detect", lambda cls: "not detected")
    if chosen is None:
        return None
    entry, cls = chosen
    try:
        return cls()
    except Exception as error:  # the environment's own code failing
        _skip_warning(entry, f"building it raised {type(error).__name__}: {error}")
        return None


def _best_detected(
    role: str, probe: str, why_not: Callable[[type[Any]], str]
) -> tuple[tuple[discovery.PluginEntry, type[Any]] | None, list[str]]:
    """Of a role's installed classes that pass `probe`, the one with the highest auto_priority, and why the
    others were passed over. Only these classes are imported; one that is broken is skipped with a warning."""
    passing: dict[type[Any], tuple[int, discovery.PluginEntry]] = {}
    passed_over: list[str] = []
    seen: set[type[Any]] = set()
    for name in discovery.names(role):
        try:
            entry = discovery.find(role, name)
            cls = _class_of(entry)
        except (PluginConflictError, PluginLoadError, PluginNotFoundError) as error:
            warn_once(f"{role}='auto' skips {name!r}: {error}")
            passed_over.append(f"{name!r}: broken (see its warning)")
            continue
        if cls in seen:  # another name (alias) of a class already asked
            continue
        seen.add(cls)
        try:
            priority = cls.auto_priority
            if not isinstance(priority, int):
                raise TypeError(f"its auto_priority is {priority!r}, not an int")
            applies = getattr(cls, probe)()
            if not isinstance(applies, bool):
                raise TypeError(f"{probe}() returned {applies!r}, not a bool")
        except Exception as error:  # the plugin's own probe failing is its problem, not this run's
            _skip_warning(entry, f"{type(error).__name__}: {error}")
            passed_over.append(f"{name!r} ({entry.origin}): {probe}() failed")
            continue
        if applies:
            passing[cls] = (priority, entry)
        else:
            passed_over.append(f"{name!r} ({entry.origin}): {why_not(cls)}")
    if not passing:
        return None, passed_over
    best = max(passing, key=lambda cls: passing[cls][0])
    for cls, (priority, entry) in passing.items():
        if cls is not best:
            passed_over.append(f"{entry.name!r} ({entry.origin}): lower auto_priority {priority}")
    return (passing[best][1], best), passed_over


def _skip_warning(entry: discovery.PluginEntry, why: str) -> None:
    warn_once(
        f"{entry.role} plugin {entry.name!r} from distribution {entry.origin} is skipped: {why}. Nothing chose it "
        f"by name, so this run goes on without it; report it to its author, or block it with "
        f"{discovery.BLOCK_VARIABLE}={entry.distribution}."
    )


def _resolve_named(role: str, value: Any, default: str) -> Any:
    if isinstance(value, _ROLE_CLASSES[role]):
        return value
    if value not in (None, "auto"):
        return build(role, str(value))
    try:
        return build(role, default)
    except PluginNotFoundError as error:
        raise PluginNotFoundError(
            f"{error} {default!r} is the default {role}; "
            f"or pass a {_ROLE_CLASSES[role].__name__} object in plugins=[...]"
        ) from None


def resolve_strategy(strategy: str | Strategy, accelerator: Accelerator, device_count: int) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if strategy == "auto":
        strategy = (accelerator.default_distributed_strategy if device_count > 1
                    else accelerator.default_single_device_strategy)
    if strategy in BUILTIN_STRATEGIES:
        return BUILTIN_STRATEGIES[strategy]()
    return build("strategy", strategy)


def select(
    accelerator: str | Accelerator = "auto",
    strategy: str | Strategy = "auto",
    devices: DevicesArg = "auto",
    num_nodes: int = 1,
    precision: str | int | Precision = DEFAULT_PRECISION,
    plugins: Sequence[Any] = (),
) -> Selection:
    """Resolve every role and connect the strategy to the others."""
    given = sort_plugin_objects(plugins)
    for role, flag in (("accelerator", accelerator), ("strategy", strategy), ("precision", precision)):
        if role in given and not (flag in ("auto", None) or (role == "precision" and flag == DEFAULT_PRECISION)):
            raise ConfigurationError(
                f"{role} is given twice: {role}={flag!r} and a {type(given[role]).__name__} in plugins=; keep one"
            )
    accelerator_plugin = resolve_accelerator(given.get("accelerator", accelerator))
    device_indices = accelerator_plugin.parse_devices(devices)
    strategy_plugin = resolve_strategy(given.get("strategy", strategy), accelerator_plugin,
                                       len(device_indices) * num_nodes)
    precision_plugin = _resolve_named("precision", given.get("precision", precision), DEFAULT_PRECISION)
    checkpoint_io = _resolve_named("checkpoint_io", given.get("checkpoint_io"), DEFAULT_CHECKPOINT_IO)
    if "cluster_environment" in given:
        strategy_plugin.cluster_environment = given["cluster_environment"]
    strategy_plugin.connect(accelerator_plugin, precision_plugin, checkpoint_io, device_indices, num_nodes)
    return Selection(
        accelerator=accelerator_plugin,
        strategy=strategy_plugin,
        precision=precision_plugin,
        checkpoint_io=checkpoint_io,
        loggers=given["logger"],
        cluster_environment=given.get("cluster_environment"),
        hook_plugins=given["hook"],
    )


def default_logger_name() -> str:
    """The logger `logger=True` gives: TensorBoard when trellis-tensorboard and tensorboard are installed, else
    CSV (no dependency). Both write to the same run folder under default_root_dir."""
    if PREFERRED_DEFAULT_LOGGER in discovery.names("logger") and importlib.util.find_spec(
            PREFERRED_DEFAULT_LOGGER_PACKAGE) is not None:
        return PREFERRED_DEFAULT_LOGGER
    return DEFAULT_LOGGER


def resolve_loggers(logger: Any, root_dir: str) -> list[Logger]:
    """`logger=` as True (the default: see default_logger_name), False/None, a name, an object, or a list."""
    if logger is False or logger is None:
        return []
    if logger is True:
        name = default_logger_name()
        try:
            return [load_class("logger", name).from_trainer(root_dir)]
        except PluginNotFoundError as error:
            raise PluginNotFoundError(
                f"{error} {name!r} is the default logger; or pass logger=False, or a Logger object"
            ) from None
    items = as_list(logger)
    resolved = []
    for item in items:
        if isinstance(item, Logger):
            resolved.append(item)
        elif isinstance(item, str):
            resolved.append(load_class("logger", item).from_trainer(root_dir))
        else:
            raise ConfigurationError(
                f"logger={item!r} is neither a logger name, a Logger object, True nor False: "
                f"pass one of {discovery.names('logger')} or a trellis.plugin.Logger"
            )
    return resolved


def default_checkpoint_io() -> CheckpointIO:
    """The checkpoint IO for reading checkpoints without a Trainer (found even with discovery off)."""
    return _resolve_named("checkpoint_io", None, DEFAULT_CHECKPOINT_IO)
