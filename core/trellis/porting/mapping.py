"""Where each Lightning name lives in Trellis: the table `trellis port` rewrites by.

Paths are resolved in a canonical spelling (`pytorch_lightning.X` and the re-exports of `lightning.X` become
`lightning.pytorch.X`). Names under a Trellis module are checked against that module, so a callback that
Trellis does not have is reported, not rewritten into an import that fails.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import cache

#: Lightning class names that Trellis spells differently (the same class otherwise).
RENAMES = {
    "LightningModule": "Module",
    "LightningDataModule": "DataModule",
    "LightningCLI": "TrellisCLI",
    "LightningArgumentParser": "TrellisArgumentParser",
}
#: Cosmetic Lightning-only calls that the port removes, with the note left in their place.
DROPPED = {
    "lightning.pytorch.cli_lightning_logo": "Lightning's logo banner",
}
#: Lightning packages whose names (also in their submodules) live in one Trellis module.
MODULES = {
    "lightning.pytorch": "trellis",
    "lightning.pytorch.core": "trellis",
    "lightning.pytorch.core.module": "trellis",
    "lightning.pytorch.core.datamodule": "trellis",
    "lightning.pytorch.trainer": "trellis",
    "lightning.pytorch.trainer.trainer": "trellis",
    "lightning.pytorch.callbacks": "trellis.callbacks",
    "lightning.pytorch.cli": "trellis.cli",
    "lightning.pytorch.utilities": "trellis.utilities",
    "lightning.pytorch.demos": "trellis.demos",
    "lightning.pytorch.tuner": "trellis.tuner",
    "lightning.pytorch.profilers": "trellis.profilers",
    "lightning.fabric.utilities.seed": "trellis.utilities.seed",
    "lightning.fabric.utilities.rank_zero": "trellis.utilities.rank_zero",
}
#: Packages whose submodules are not mirrored: a name anywhere below maps to the package's Trellis module.
_FLAT = {"lightning.pytorch.core", "lightning.pytorch.trainer", "lightning.pytorch.callbacks",
         "lightning.pytorch.tuner", "lightning.pytorch.profilers"}
_CLUSTERS = {
    "SLURMEnvironment": ("trellis_clusters.slurm", "SLURMEnvironment"),
    "TorchElasticEnvironment": ("trellis_clusters.torchelastic", "TorchElasticEnvironment"),
    "LSFEnvironment": ("trellis_clusters.lsf", "LSFEnvironment"),
    "MPIEnvironment": ("trellis_clusters.mpi", "MPIEnvironment"),
    "KubeflowEnvironment": ("trellis_clusters.kubeflow", "KubeflowEnvironment"),
    "ClusterEnvironment": ("trellis.plugin", "ClusterEnvironment"),
}
#: Lightning packages of backends: each class maps to the plugin distribution's class.
PLUGIN_CLASSES: dict[str, dict[str, tuple[str, str]]] = {
    "lightning.pytorch.loggers": {
        "CSVLogger": ("trellis_csv", "CSVLogger"),
        "TensorBoardLogger": ("trellis_tensorboard", "TensorBoardLogger"),
        "MLFlowLogger": ("trellis_mlflow", "MLflowLogger"),
        "WandbLogger": ("trellis_wandb", "WandbLogger"),
        "Logger": ("trellis.plugin", "Logger"),
    },
    "lightning.pytorch.strategies": {
        "DDPStrategy": ("trellis_ddp.strategy", "DDPStrategy"),
        "FSDPStrategy": ("trellis_fsdp.strategy", "FSDPStrategy"),
        "DeepSpeedStrategy": ("trellis_deepspeed", "DeepSpeedStrategy"),
        "XLAStrategy": ("trellis_xla", "XLAStrategy"),
        "SingleDeviceStrategy": ("trellis.plugin", "SingleDeviceStrategy"),
        "Strategy": ("trellis.plugin", "Strategy"),
    },
    "lightning.pytorch.accelerators": {
        "CPUAccelerator": ("trellis_cpu", "CPUAccelerator"),
        "CUDAAccelerator": ("trellis_cuda", "CUDAAccelerator"),
        "XLAAccelerator": ("trellis_xla", "XLAAccelerator"),
        "Accelerator": ("trellis.plugin", "Accelerator"),
    },
    "lightning.pytorch.plugins.environments": _CLUSTERS,
    "lightning.fabric.plugins.environments": _CLUSTERS,
}
_HINTS = {
    "lightning.pytorch.loggers": "import the logger class from its plugin (trellis_csv.CSVLogger, "
                                 "trellis_tensorboard.TensorBoardLogger, ...) or pass logger=\"name\" to the Trainer",
    "lightning.pytorch.plugins": "pass precision=\"...\" or a plugin object from trellis.roles' implementations "
                                 "(docs/porting.md, Plugin objects)",
    "lightning.fabric": "Trellis has no Fabric: use trellis.Trainer with a trellis.Module",
    "lightning.pytorch.strategies": "choose the strategy by name (strategy=\"ddp\") or from its plugin package",
}
#: Names the `lightning` package re-exports, and the subpackage each comes from.
_TOP_LEVEL_REEXPORTS = {"LightningModule": "pytorch", "LightningDataModule": "pytorch", "Trainer": "pytorch",
                        "Callback": "pytorch", "seed_everything": "pytorch", "Fabric": "fabric"}


@dataclass(frozen=True)
class Mapped:
    """A Lightning name found in Trellis: `module.name` (a class or function)."""

    module: str
    name: str


@dataclass(frozen=True)
class MappedModule:
    """A Lightning module whose Trellis counterpart is `module`."""

    module: str


@dataclass(frozen=True)
class Dropped:
    note: str


@dataclass(frozen=True)
class Unmapped:
    reason: str


Resolution = Mapped | MappedModule | Dropped | Unmapped


def is_lightning(path: str) -> bool:
    return path.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric")


def canonical(path: str) -> str:
    """`pytorch_lightning.X` -> `lightning.pytorch.X`; `lightning.Trainer` -> `lightning.pytorch.Trainer`."""
    parts = path.split(".")
    if parts[0] == "pytorch_lightning":
        parts = ["lightning", "pytorch", *parts[1:]]
    elif parts[0] == "lightning_fabric":
        parts = ["lightning", "fabric", *parts[1:]]
    elif parts[0] == "lightning" and len(parts) > 1 and parts[1] in _TOP_LEVEL_REEXPORTS:
        parts = ["lightning", _TOP_LEVEL_REEXPORTS[parts[1]], *parts[1:]]
    return ".".join(parts)


def resolve(path: str) -> Resolution:
    """Where the Lightning module or name `path` (any spelling) lives in Trellis."""
    path = canonical(path)
    if path in ("lightning", "lightning.pytorch"):
        return MappedModule("trellis")
    if path in DROPPED:
        return Dropped(DROPPED[path])
    for package, classes in PLUGIN_CLASSES.items():
        if path.startswith(package + "."):
            name = path.rpartition(".")[2]
            if name in classes:
                return Mapped(*classes[name])
    module_prefix = _longest_prefix(path, MODULES)
    if module_prefix is not None:
        found = _in_trellis(path, module_prefix)
        if found is not None:
            return found
    return Unmapped(_reason(path))


def _longest_prefix(path: str, table: dict[str, str]) -> str | None:
    matches = [prefix for prefix in table if path == prefix or path.startswith(prefix + ".")]
    return max(matches, key=len) if matches else None


def _in_trellis(path: str, package: str) -> Resolution | None:
    target = MODULES[package]
    rest = path[len(package) + 1:].split(".") if path != package else []
    if not rest:
        return MappedModule(target)
    if package == "lightning.pytorch":  # its other subpackages have entries of their own, or no counterpart
        names_here = {name for name, subpackage in _TOP_LEVEL_REEXPORTS.items() if subpackage == "pytorch"}
        return Mapped(target, RENAMES.get(rest[0], rest[0])) if rest in ([name] for name in names_here) else None
    if package not in _FLAT:
        mirrored = ".".join([target, *rest])
        if module_exists(mirrored):
            return MappedModule(mirrored)
        parent = ".".join([target, *rest[:-1]])
        if len(rest) > 1 and module_exists(parent) and has_name(parent, rest[-1]):
            return Mapped(parent, rest[-1])
    name = RENAMES.get(rest[-1], rest[-1])
    if has_name(target, name):
        return Mapped(target, name)
    return None


def _reason(path: str) -> str:
    hint = _HINTS.get(_longest_prefix(path, _HINTS) or "")
    package = _longest_prefix(path, MODULES)
    if package not in (None, "lightning.pytorch", path) and not hint:
        return f"{path}: {MODULES[package]} has no {path.rpartition('.')[2]}"
    return f"{path} has no Trellis counterpart" + (f": {hint}" if hint else "")


@cache
def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@cache
def has_name(module_name: str, name: str) -> bool:
    """Whether the Trellis module offers `name` (its __all__, or an attribute), without importing plugins."""
    if not module_exists(module_name):
        return False
    module = importlib.import_module(module_name)
    return name in getattr(module, "__all__", ()) or (not name.startswith("_") and hasattr(module, name)) \
        or (name.startswith("_") and name in vars(module))
