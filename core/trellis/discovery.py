"""Finding plugins through entry points, without importing them until they are chosen.

Names come from installed distributions' metadata. Loading imports only the chosen entry point, so a
broken or hostile plugin that was installed but not chosen never runs.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata as metadata
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from trellis.errors import PluginConflictError, PluginLoadError, PluginNotFoundError
from trellis.utils.rank_zero import warn_once

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
#: entry points the kernel runs without being chosen by name: factories of callbacks added to every Trainer.
CALLBACK_FACTORY_ROLE = "callback_factory"
AUTOLOADED_GROUPS: dict[str, str] = {CALLBACK_FACTORY_ROLE: "trellis.callback_factories"}

#: the plugin API this kernel provides; bumped only for changes that break a plugin written for the last one.
PLUGIN_API_VERSION = 1
#: the plugin API versions this kernel accepts (a plugin built for an older one may still run, see docs/plugins.md).
SUPPORTED_PLUGIN_API_VERSIONS = range(1, PLUGIN_API_VERSION + 1)
#: the module attribute through which a plugin declares the API version it was built for.
API_DECLARATION = "TRELLIS_PLUGIN_API"

DISABLE_VARIABLE = "TRELLIS_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_VARIABLE = "TRELLIS_BLOCK_PLUGINS"
#: the plugin distributions the kernel distribution depends on (its defaults): found even with discovery off.
KERNEL_DISTRIBUTIONS = frozenset({"trellis-cpu", "trellis-true", "trellis-csv", "trellis-torch"})

#: well-known names and the distribution that provides them: "pip install ..." hints, and the provider that wins
#: when another distribution claims the same name.
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
    **{("strategy", name): "trellis-xla" for name in ("xla", "xla_fsdp")},
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

    @property
    def origin(self) -> str:
        """"the distribution and its version", as messages name a plugin's source."""
        return f"{self.distribution} {self.version}"

    def load(self) -> Any:
        """Import the object the entry point names, refusing a plugin built for another plugin API."""
        module_name, _, attribute = self.value.partition(":")
        try:
            obj = __import__(module_name, fromlist=["_"])
            for part in filter(None, attribute.split(".")):
                obj = getattr(obj, part)
        except Exception as error:  # any failure of third-party import code is reported, not raised raw
            raise PluginLoadError(
                f"{self.role} plugin {self.name!r} from distribution {self.origin} failed to import: "
                f"{type(error).__name__}: {error}. Reinstall it (pip install --force-reinstall {self.distribution}), "
                f"uninstall it, or block it with {BLOCK_VARIABLE}={self.name}; other plugins are not affected."
            ) from error
        check_plugin_api(self, declared_plugin_api(module_name))
        return obj


def declared_plugin_api(module_name: str) -> tuple[str, Any] | None:
    """(module, value) of the TRELLIS_PLUGIN_API nearest to an imported entry-point module, walking up to its
    package."""
    parts = module_name.split(".")
    for end in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:end]))
        if module is not None and hasattr(module, API_DECLARATION):
            return module.__name__, getattr(module, API_DECLARATION)
    return None


def check_plugin_api(entry: PluginEntry, declaration: tuple[str, Any] | None) -> None:
    """Refuse a plugin declaring an API this kernel does not provide; accept an undeclared one, warning once."""
    supported = f"{SUPPORTED_PLUGIN_API_VERSIONS[0]} to {SUPPORTED_PLUGIN_API_VERSIONS[-1]}"
    if declaration is None:
        package = entry.value.partition(":")[0].split(".")[0]
        is_package = hasattr(sys.modules.get(package), "__path__")
        warn_once(
            f"distribution {entry.origin} does not declare the Trellis plugin API it was built for; it is treated as "
            f"built for plugin API {SUPPORTED_PLUGIN_API_VERSIONS[0]}. Its author adds `{API_DECLARATION} = "
            f"{PLUGIN_API_VERSION}` to {package}{'/__init__' if is_package else ''}.py "
            "(docs/plugins.md, \"Versioning\")."
        )
        return
    module_name, version = declaration
    if isinstance(version, int) and not isinstance(version, bool) and version in SUPPORTED_PLUGIN_API_VERSIONS:
        return
    from trellis import __version__

    if not isinstance(version, int) or isinstance(version, bool):
        problem = (f"declares {API_DECLARATION} = {version!r} in {module_name}, "
                   "which is not a plugin API version (an int)")
        fix = f"its author sets {API_DECLARATION} = {PLUGIN_API_VERSION}"
    elif version > PLUGIN_API_VERSION:
        problem = f"was built for Trellis plugin API {version}, newer than trellis {__version__} provides ({supported})"
        fix = (f"upgrade trellis (pip install -U trellis), "
               f"or install a release of {entry.distribution} built for {supported}")
    else:
        problem = (f"was built for Trellis plugin API {version}, "
                   f"which trellis {__version__} no longer supports ({supported})")
        fix = f"upgrade it (pip install -U {entry.distribution})"
    raise PluginLoadError(
        f"{entry.role} plugin {entry.name!r}: distribution {entry.origin} {problem}: {fix}, or block it with "
        f"{BLOCK_VARIABLE}={entry.distribution}. Other plugins are not affected."
    )


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
    role_of_group = {group: role for role, group in (GROUPS | AUTOLOADED_GROUPS).items()}
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


def declared_entries() -> list[PluginEntry]:
    """Every entry of every installed distribution, blocked or not, whatever the kill switch says."""
    return list(_installed_entries())


def installed_entries(include_blocked: bool = False) -> list[PluginEntry]:
    """Discovered entries; with discovery off, only those of the kernel's own default distributions."""
    entries = _installed_entries()
    if autoload_disabled():
        entries = tuple(entry for entry in entries
                        if normalize_distribution(entry.distribution) in KERNEL_DISTRIBUTIONS)
    if include_blocked:
        return list(entries)
    for message in unmatched_block_messages():
        warn_once(message)
    return [entry for entry in entries if not is_blocked(entry)]


def is_blocked(entry: PluginEntry) -> bool:
    blocked = {normalize_distribution(name) for name in blocked_names()}
    return bool({normalize_distribution(entry.name), normalize_distribution(entry.distribution)} & blocked)


def unmatched_block_messages() -> list[str]:
    """One message per TRELLIS_BLOCK_PLUGINS entry that names no installed plugin or distribution."""
    known = {name for entry in declared_entries() for name in (entry.name, entry.distribution)}
    by_key = {normalize_distribution(name): name for name in known}
    messages = []
    for blocked in sorted(blocked_names()):
        if normalize_distribution(blocked) not in by_key:
            messages.append(
                f"{BLOCK_VARIABLE} names {blocked!r}, which is no installed plugin or distribution, so it blocks "
                f"nothing{did_you_mean(blocked, known)}"
            )
    return messages


def did_you_mean(name: str, candidates: Any) -> str:
    """": did you mean 'x'?" for the closest candidate, or "." when none is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1)
    return f": did you mean {close[0]!r}?" if close else "."


def names(role: str) -> list[str]:
    """Installed plugin names of a role, sorted."""
    return sorted({entry.name for entry in installed_entries() if entry.role == role})


def find(role: str, name: str) -> PluginEntry:
    """The entry for a name, or an error that lists what is installed and what to install.

    A well-known name claimed by its own distribution and by another resolves to its own, with a warning
    naming the other; any other name claimed by two distributions is an error naming both.
    """
    candidates = [entry for entry in installed_entries() if entry.role == role and entry.name == name]
    providers = {normalize_distribution(entry.distribution): entry for entry in candidates}
    if len(providers) > 1:
        known = KNOWN_PROVIDERS.get((role, name))
        if known in providers:
            others = ", ".join(entry.origin for key, entry in providers.items() if key != known)
            warn_once(
                f"{role} name {name!r} belongs to {providers[known].origin}; {others} claims it too and is ignored "
                f"for it: uninstall it, or block it with {BLOCK_VARIABLE}=<distribution name>."
            )
            return providers[known]
        claims = " and ".join(f"{entry.origin} ({entry.value})" for entry in providers.values())
        raise PluginConflictError(
            f"{role} name {name!r} is claimed by two distributions: {claims}. Uninstall one of them, or block "
            f"one with {BLOCK_VARIABLE}=<distribution name>."
        )
    if candidates:
        return candidates[0]
    raise PluginNotFoundError(not_found_message(role, name))


def clashes() -> list[tuple[str, str, list[PluginEntry]]]:
    """(role, name, entries) for every name that more than one installed, unblocked distribution claims."""
    by_name: dict[tuple[str, str], dict[str, PluginEntry]] = {}
    for entry in installed_entries():
        by_name.setdefault((entry.role, entry.name), {})[normalize_distribution(entry.distribution)] = entry
    return [(role, name, [providers[key] for key in sorted(providers)])
            for (role, name), providers in sorted(by_name.items()) if len(providers) > 1]


def not_found_message(role: str, name: str) -> str:
    installed = names(role)
    message = f"unknown {role} {name!r}. Installed {role} names: {', '.join(installed) or 'none'}."
    provider = KNOWN_PROVIDERS.get((role, name))
    if name in blocked_names():
        message += f" {name!r} is blocked by {BLOCK_VARIABLE}."
    elif autoload_disabled():
        message += (f" Plugin discovery is off ({DISABLE_VARIABLE} is set): pass the plugin object instead of its "
                    "name, or unset the variable.")
    elif provider:
        message += f" {name!r} is provided by the distribution {provider}: pip install {provider}"
    else:
        well_known = [known_name for known_role, known_name in KNOWN_PROVIDERS if known_role == role]
        suggestion = did_you_mean(name, [*installed, *well_known])
        if suggestion != ".":
            message += " Did you mean" + suggestion.removeprefix(": did you mean")
    return message


def load(role: str, name: str) -> Any:
    """Import and return the object registered under a name."""
    return find(role, name).load()
