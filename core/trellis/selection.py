"""Turning the Trainer's flags and plugin objects into one connected set of plugins.

The kernel asks the chosen plugins what they can do; it never tests for a particular backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trellis import discovery
from trellis.errors import ConfigurationError, PluginLoadError
from trellis.roles import (
    Accelerator,
    CheckpointIO,
    ClusterEnvironment,
    Logger,
    Precision,
    SingleDeviceStrategy,
    Strategy,
)
from trellis.roles.accelerator import DevicesArg
from trellis.utils.rank_zero import warn_once

#: kernel-provided implementations, available even with discovery off.
BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {"single_device": SingleDeviceStrategy}
DEFAULT_PRECISION = "32-true"
DEFAULT_CHECKPOINT_IO = "torch"
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
    """Sort `Trainer(plugins=[...])` by role; objects of no role are hook plugins."""
    by_role: dict[str, Any] = {"logger": [], "hook": []}
    for plugin in plugins:
        if isinstance(plugin, str):
            raise ConfigurationError(
                f"plugins=[{plugin!r}] takes objects; name a plugin through its flag instead "
                "(accelerator=, strategy=, precision=, logger=)"
            )
        role = next((role for role, cls in _ROLE_CLASSES.items() if isinstance(plugin, cls)), "hook")
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


def resolve_accelerator(accelerator: str | Accelerator) -> Accelerator:
    if isinstance(accelerator, Accelerator):
        return accelerator
    if accelerator == "auto":
        return _auto_accelerator()
    cls = discovery.load("accelerator", accelerator)
    if not cls.is_available():
        raise ConfigurationError(f"accelerator={accelerator!r} is not available: {cls.unavailable_reason()}")
    return cls()


def _auto_accelerator() -> Accelerator:
    chosen = _best_detected("accelerator", lambda cls: cls.is_available())
    if chosen is None:
        raise ConfigurationError(
            "accelerator='auto' found no available accelerator plugin: install one (pip install trellis-cpu) or pass "
            "an Accelerator object"
        )
    return chosen()


def detect_cluster_environment() -> ClusterEnvironment | None:
    """The installed cluster environment that recognises this process's environment, if any."""
    chosen = _best_detected("cluster_environment", lambda cls: cls.detect())
    return chosen() if chosen is not None else None


def _best_detected(role: str, probe: Any) -> Any:
    """Of a role's installed classes, the one with the highest auto_priority that passes `probe`.

    Only these descriptors are imported; one that fails to import is reported and skipped.
    """
    found = {}
    for name in discovery.names(role):
        try:
            cls = discovery.load(role, name)
        except PluginLoadError as error:
            warn_once(str(error))
            continue
        if cls not in found and probe(cls):
            found[cls] = cls.auto_priority
    return max(found, key=found.__getitem__) if found else None


def _resolve_named(role: str, value: Any, default: str) -> Any:
    if isinstance(value, _ROLE_CLASSES[role]):
        return value
    name = default if value in (None, "auto") else str(value)
    return discovery.load(role, name)()


def resolve_strategy(strategy: str | Strategy, accelerator: Accelerator, device_count: int) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if strategy == "auto":
        strategy = (accelerator.default_distributed_strategy if device_count > 1
                    else accelerator.default_single_device_strategy)
    if strategy in BUILTIN_STRATEGIES:
        return BUILTIN_STRATEGIES[strategy]()
    return discovery.load("strategy", strategy)()


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
    strategy_plugin = resolve_strategy(given.get("strategy", strategy), accelerator_plugin, len(device_indices) * num_nodes)
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


def resolve_loggers(logger: Any, root_dir: str) -> list[Logger]:
    """`logger=` as True (the default "csv"), False/None, a name, an object, or a list of those."""
    if logger is False or logger is None:
        return []
    if logger is True:
        logger = "csv"
    items = logger if isinstance(logger, (list, tuple)) else [logger]
    resolved = []
    for item in items:
        if isinstance(item, Logger):
            resolved.append(item)
        elif isinstance(item, str):
            resolved.append(discovery.load("logger", item).from_trainer(root_dir))
        else:
            raise ConfigurationError(
                f"logger={item!r} is neither a logger name, a Logger object, True nor False: "
                f"pass one of {discovery.names('logger')} or a trellis.roles.Logger"
            )
    return resolved
