"""Finding plugins through entry points, without importing them until they are chosen.

Names come from installed distributions' metadata. Loading imports only the chosen entry point, so a
broken or hostile plugin that was installed but not chosen never runs.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata as metadata
import os
import re
from dataclasses import dataclass
from typing import Any

from trellis.errors import PluginConflictError, PluginLoadError, PluginNotFoundError

#: role -> entry-point group.
GROUPS: dict[str, str] = {
    "accelerator": "trellis.accelerators",
    "strategy": "trellis.strategies",
    "precision": "trellis.precision",
    "logger": "trellis.loggers",
    "checkpoint_io": "trellis.checkpoint_io",
    "cluster_environment": "trellis.cluster_environments",
    "callback": "trellis.callbacks",
}

#: the plugin API this kernel provides; bumped only for changes that break a plugin written for the last one.
PLUGIN_API_VERSION = 1
#: the plugin API versions this kernel accepts (a plugin built for an older one may still run, see docs/plugins.md).
SUPPORTED_PLUGIN_API_VERSIONS = range(1, PLUGIN_API_VERSION + 1)
#: the module attribute through which a plugin declares the API version it was built for.
API_DECLARATION = "TRELLIS_PLUGIN_API"

DISABLE_VARIABLE = "TRELLIS_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_VARIABLE = "TRELLIS_BLOCK_PLUGINS"

#: well-known names and the distribution that provides them, for "pip install ..." hints.
KNOWN_PROVIDERS: dict[tuple[str, str], str] = {
    **{("accelerator", name): "trellis-cpu" for name in ("cpu",)},
    **{("accelerator", name): "trellis-cuda" for name in ("cuda", "gpu")},
    **{("accelerator", name): "trellis-xla" for name in ("xla", "tpu")},
    **{("strategy", name): "trellis-ddp" for name in ("ddp", "ddp_spawn", "ddp_notebook")},
    **{("strategy", name): "trellis-fsdp" for name in ("fsdp",)},
    **{
        ("strategy", f"deepspeed{suffix}"): "trellis-deepspeed"
        for suffix in ("", "_stage_1", "_stage_2", "_stage_3", "_stage_2_offload", "_stage_3_offload")
    },
    ("strategy", "xla"): "trellis-xla",
    **{("precision", name): "trellis-true" for name in ("32-true", "32", "64-true", "64", "16-true", "bf16-true")},
    **{("precision", name): "trellis-mixed" for name in ("16-mixed", "16", "bf16-mixed", "bf16")},
    **{("precision", name): "trellis-mixed" for name in ("transformer-engine", "fp8")},
    **{("logger", name): f"trellis-{name}" for name in ("csv", "tensorboard", "mlflow", "wandb")},
    ("checkpoint_io", "torch"): "trellis-torch",
    ("checkpoint_io", "dcp"): "trellis-dcp",
    **{
        ("cluster_environment", name): "trellis-clusters"
        for name in ("torchelastic", "slurm", "lsf", "mpi", "kubeflow")
    },
}


@dataclass(frozen=True)
class PluginEntry:
    """One name in one role, as a distribution declares it."""

    role: str
    name: str
    value: str
    distribution: str
    version: str

    def load(self) -> Any:
        """Import the object the entry point names."""
        module_name, _, attribute = self.value.partition(":")
        try:
            obj = __import__(module_name, fromlist=["_"])
            for part in filter(None, attribute.split(".")):
                obj = getattr(obj, part)
        except Exception as error:  # any failure of third-party import code is reported, not raised raw
            raise PluginLoadError(
                f"{self.role} plugin {self.name!r} from distribution {self.distribution} {self.version} "
                f"failed to import: {type(error).__name__}: {error}. Reinstall it "
                f"(pip install --force-reinstall {self.distribution}), uninstall it, or block it with "
                f"{BLOCK_VARIABLE}={self.name}; other plugins are not affected."
            ) from error
        return obj


def normalize_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def autoload_disabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def blocked_names() -> frozenset[str]:
    """Plugin names and distribution names listed in TRELLIS_BLOCK_PLUGINS (comma separated)."""
    raw = os.environ.get(BLOCK_VARIABLE, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


@functools.cache
def _installed_entries() -> tuple[PluginEntry, ...]:
    """Every trellis entry point of every installed distribution (metadata only, no import)."""
    role_of_group = {group: role for role, group in GROUPS.items()}
    seen_distributions: set[str] = set()
    entries = []
    for distribution in metadata.distributions():
        distribution_name = distribution.metadata["Name"] or "?"
        key = normalize_distribution(distribution_name)
        if key in seen_distributions:  # the same distribution twice on sys.path: the first one wins, as for imports
            continue
        seen_distributions.add(key)
        for entry_point in distribution.entry_points:
            role = role_of_group.get(entry_point.group)
            if role is not None:
                entries.append(
                    PluginEntry(role, entry_point.name, entry_point.value, distribution_name, distribution.version)
                )
    return tuple(entries)


def refresh() -> None:
    """Forget cached metadata (after installing or removing a distribution in this process)."""
    _installed_entries.cache_clear()
    importlib.invalidate_caches()


def installed_entries(include_blocked: bool = False) -> list[PluginEntry]:
    """Discovered entries, empty when discovery is disabled."""
    if autoload_disabled():
        return []
    blocked = set() if include_blocked else {normalize_distribution(name) for name in blocked_names()}
    return [
        entry
        for entry in _installed_entries()
        if normalize_distribution(entry.name) not in blocked and normalize_distribution(entry.distribution) not in blocked
    ]


def names(role: str) -> list[str]:
    """Installed plugin names of a role, sorted."""
    return sorted({entry.name for entry in installed_entries() if entry.role == role})


def find(role: str, name: str) -> PluginEntry:
    """The entry for a name, or an error that lists what is installed and what to install."""
    candidates = [entry for entry in installed_entries() if entry.role == role and entry.name == name]
    providers = {normalize_distribution(entry.distribution): entry for entry in candidates}
    if len(providers) > 1:
        claims = " and ".join(f"{entry.distribution} {entry.version} ({entry.value})" for entry in providers.values())
        raise PluginConflictError(
            f"{role} name {name!r} is claimed by two distributions: {claims}. Uninstall one of them, or block "
            f"one with {BLOCK_VARIABLE}=<distribution name>."
        )
    if candidates:
        return candidates[0]
    raise PluginNotFoundError(not_found_message(role, name))


def not_found_message(role: str, name: str) -> str:
    installed = ", ".join(names(role)) or "none"
    message = f"unknown {role} {name!r}. Installed {role} names: {installed}."
    provider = KNOWN_PROVIDERS.get((role, name))
    if autoload_disabled():
        message += f" Plugin discovery is off ({DISABLE_VARIABLE} is set): pass the plugin object instead of its name."
    elif name in blocked_names():
        message += f" {name!r} is blocked by {BLOCK_VARIABLE}."
    elif provider:
        message += f" {name!r} is provided by the distribution {provider}: pip install {provider}"
    return message


def load(role: str, name: str) -> Any:
    """Import and return the object registered under a name."""
    return find(role, name).load()
