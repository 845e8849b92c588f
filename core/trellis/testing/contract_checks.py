"""Checks every role shares: the entry point, the import, the descriptor and the import's cost."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from trellis.errors import HookValidationError
from trellis.hook_manager import HookManager
from trellis.testing.subject import FACTORY_ROLES, ConformanceFailure, Subject

#: libraries too heavy for a plugin's module level: choosing or listing a plugin must not import them.
HEAVY_MODULES = frozenset({
    "apex", "deepspeed", "habana_frameworks", "intel_extension_for_pytorch", "jax", "lightning", "mlflow",
    "pandas", "pytorch_lightning", "scipy", "sklearn", "tensorboard", "tensorboardX", "tensorflow", "torch_npu",
    "torch_xla", "transformer_engine", "transformers", "wandb",
})

#: role -> methods a plugin must define itself, because the kernel's base only raises NotImplementedError.
REQUIRED_METHODS: dict[str, tuple[str, ...]] = {
    "accelerator": ("is_available", "device_count"),
    "checkpoint_io": ("save_checkpoint", "load_checkpoint", "remove_checkpoint", "exists"),
    "logger": ("log_metrics",),
    "cluster_environment": (
        "detect", "main_address", "main_port", "world_size", "global_rank", "local_rank", "node_rank",
    ),
}
#: role -> methods the kernel calls on the class itself, before any object exists.
CLASS_METHODS: dict[str, tuple[str, ...]] = {
    "accelerator": ("is_available", "unavailable_reason", "device_count", "parse_devices"),
    "cluster_environment": ("detect",),
    "logger": ("from_trainer",),
}
#: roles whose objects the Trainer registers as hook implementations.
HOOK_ROLES = frozenset({"logger", "callback"})


def check_entry_point(subject: Subject, tmp_path: Path) -> None:
    """The name is declared once, in the role's entry-point group."""
    entry = subject.entry()
    module, separator, attribute = entry.value.partition(":")
    if not separator or not attribute:
        raise ConformanceFailure(
            f"entry point {subject.name} = {entry.value!r} (distribution {entry.distribution}) names a module but no "
            f'object: write it as "{module}:YourClass"'
        )


def check_imports(subject: Subject, tmp_path: Path) -> None:
    """The entry point's object imports."""
    subject.load()


def check_descriptor(subject: Subject, tmp_path: Path) -> None:
    """The class subclasses the role, fills in its descriptor attributes and implements what the role requires."""
    loaded = subject.load()
    base = subject.base
    role_class = f"trellis.plugin.{base.__name__}" if subject.role != "callback" else "trellis.Callback"
    if not isinstance(loaded, type):
        if subject.role not in FACTORY_ROLES or not callable(loaded):
            raise ConformanceFailure(
                f"entry point {subject.name!r} names {loaded!r}, not a class: point it at your {role_class} subclass "
                f"(the kernel calls class methods on it before creating any object)"
            )
    cls = subject.plugin_class()
    if not issubclass(cls, base):
        raise ConformanceFailure(
            f"{_qualified(cls)} is not a subclass of {role_class}: derive from it, so that the kernel recognises its "
            "role and inherits the defaults"
        )
    if subject.role != "callback":
        _require_attribute(cls, "name", str, f'name = "{subject.name}"', allow_empty=False)
    _check_role_attributes(subject.role, cls)
    for method in CLASS_METHODS.get(subject.role, ()):
        bound = getattr(cls, method)
        if getattr(bound, "__self__", None) is not cls:
            raise ConformanceFailure(
                f"{_qualified(cls)}.{method} must be a @classmethod: the kernel calls it on the class, before it "
                "builds any object"
            )
    for method in REQUIRED_METHODS.get(subject.role, ()):
        owner = next(klass for klass in cls.__mro__ if method in vars(klass))
        if owner is base:
            raise ConformanceFailure(_missing_method_message(cls, base, method))
    if subject.role in HOOK_ROLES:
        try:
            HookManager().register(subject.build(tmp_path))
        except HookValidationError as error:
            raise ConformanceFailure(str(error)) from None


def check_cheap_import(subject: Subject, tmp_path: Path) -> None:
    """In a fresh interpreter, importing the plugin's module adds no heavy library and little time."""
    module = subject.entry().value.partition(":")[0]
    report = measure_import(module)
    own_package = module.split(".")[0]
    top_level = {name.split(".")[0] for name in report["modules"]}
    heavy = sorted(top_level & HEAVY_MODULES)
    third_party = sorted(top_level - set(sys.stdlib_module_names) - {own_package, "trellis", "torch"})
    seconds, budget = report["seconds"], subject.import_budget_s
    if heavy or seconds > budget:
        found = f"imported {', '.join(heavy)}" if heavy else f"took {seconds:.3f} s (budget {budget:.3f} s)"
        raise ConformanceFailure(
            f"`import {module}` {found} on top of trellis and torch; third-party modules it imported: "
            f"{', '.join(third_party) or 'none'}. The kernel imports this module to list, resolve and auto-detect "
            "plugins, so keep it light: move the import of backend libraries into the methods that use them "
            "(def is_available(cls): import acme_runtime ...), and keep type-only imports under "
            "`if TYPE_CHECKING:`."
        )


def measure_import(module: str) -> dict[str, Any]:
    """Seconds and new sys.modules entries of importing `module` after trellis, in a fresh interpreter."""
    script = (
        "import importlib, json, sys, time\n"
        "import trellis, trellis.roles\n"
        "before = set(sys.modules)\n"
        "start = time.perf_counter()\n"
        f"importlib.import_module({module!r})\n"
        "seconds = time.perf_counter() - start\n"
        "print(json.dumps({'seconds': seconds, 'modules': sorted(set(sys.modules) - before)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise ConformanceFailure(
            f"`import {module}` fails in a fresh interpreter:\n{result.stderr.strip()[-2000:]}\n"
            "Fix the import; a module that imports only inside a running test hides this from users."
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check_role_attributes(role: str, cls: type) -> None:
    if role == "accelerator":
        _require_attribute(cls, "device_type", str, 'device_type = "cpu"  # or your torch device type',
                           allow_empty=False)
        _require_attribute(cls, "process_group_backend", (str, type(None)), 'process_group_backend = "gloo"  # or None')
        _require_attribute(cls, "auto_priority", int, "auto_priority = 0")
        _require_attribute(
            cls, "default_distributed_strategy", str, 'default_distributed_strategy = "ddp"', allow_empty=False
        )
    elif role == "precision":
        _require_attribute(cls, "param_dtype", torch.dtype, "param_dtype = torch.float32")
        _require_attribute(cls, "compute_dtype", (torch.dtype, type(None)), "compute_dtype = torch.bfloat16  # or None")
    elif role == "cluster_environment":
        _require_attribute(cls, "auto_priority", int, "auto_priority = 0")


def _require_attribute(
    cls: type, attribute: str, kind: type | tuple[type, ...], example: str, allow_empty: bool = True
) -> None:
    value = getattr(cls, attribute, None)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int) or (not allow_empty and not value):
        raise ConformanceFailure(
            f"{_qualified(cls)}.{attribute} is {value!r}: set the class attribute, e.g. `{example}` (the kernel reads "
            "it from the class without building the plugin)"
        )


def _missing_method_message(cls: type, base: type, method: str) -> str:
    base_attribute = vars(base)[method]
    function: Any
    if isinstance(base_attribute, property):
        function, kind = base_attribute.fget, "@property "
    elif isinstance(base_attribute, classmethod):
        function, kind = base_attribute.__func__, "@classmethod "
    else:
        function, kind = base_attribute, ""
    doc = (inspect.getdoc(function) or "").split("\n")[0].rstrip(".")
    signature = f"{kind}def {method}{inspect.signature(function, eval_str=True)}"
    return (
        f"{_qualified(cls)} does not implement {method}(), which trellis.plugin.{base.__name__} requires"
        f"{': ' + doc if doc else ''}. Define `{signature}` in {cls.__module__}."
    )


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
