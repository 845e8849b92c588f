"""The argument parser of TrellisCLI: jsonargparse's, with Trellis components, optimizers and schedulers."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from trellis.callbacks.base import Callback
from trellis.config_cli.optimizers import LRSchedulerTypeTuple
from trellis.datamodule import DataModule
from trellis.errors import ConfigurationError
from trellis.module import Module
from trellis.roles.logger import Logger
from trellis.trainer import Trainer

try:
    import jsonargparse
except ImportError as error:
    raise ModuleNotFoundError(
        "TrellisCLI (LightningCLI) needs jsonargparse: pip install \"trellis[cli]\"", name="jsonargparse"
    ) from error

jsonargparse.register_unresolvable_import_paths(torch)  # torch classes are found under their public paths

#: Trainer flags that take objects: typed here so that class_path entries in a config become instances.
TRAINER_OBJECT_FLAGS: dict[str, tuple[Any, str]] = {
    "callbacks": (list[Callback] | Callback | None, "callbacks, as class_path/init_args entries"),
    "logger": (bool | Logger | str | list[Logger | str] | None,
               "True (the default logger), False, a logger plugin name, a class_path entry, or a list of those"),
    "plugins": (list[Any] | Any | None, "plugin objects, as class_path/init_args entries"),
}


class TrellisArgumentParser(jsonargparse.ArgumentParser):
    """jsonargparse's ArgumentParser that knows Trellis components (Lightning's LightningArgumentParser).

    Environment variables are read only with `default_env=True` (`TRELLIS_TRAINER__MAX_EPOCHS=3`,
    `TRELLIS_CONFIG` for a whole config).
    """

    def __init__(self, *args: Any, description: str = "Trellis command line tool", env_prefix: str = "TRELLIS",
                 default_env: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, description=description, env_prefix=env_prefix, default_env=default_env, **kwargs)
        #: Keys of callbacks added with add_trellis_class_args: TrellisCLI passes them to the Trainer.
        self.callback_keys: list[str] = []
        self._optimizers: dict[str, tuple[type | tuple[type, ...], str]] = {}
        self._lr_schedulers: dict[str, tuple[type | tuple[type, ...], str]] = {}

    def add_trellis_class_args(self, component: type | Callable[..., Any], nested_key: str,
                               subclass_mode: bool = False, required: bool = True) -> list[str]:
        """Arguments of a Trainer, Module, DataModule or Callback class (or of a function returning one) under
        `nested_key`; with subclass_mode any subclass can be chosen by class_path. Returns the keys added."""
        if callable(component) and not isinstance(component, type):
            component = jsonargparse.class_from_function(component)
        if not (isinstance(component, type) and issubclass(component, (Trainer, Module, DataModule, Callback))):
            raise ConfigurationError(
                f"cannot add arguments from {component!r}: pass a subclass of Trainer, Module, DataModule or Callback, "
                "or a function that returns one of those"
            )
        if issubclass(component, Callback):
            self.callback_keys.append(nested_key)
        if subclass_mode:
            return self.add_subclass_arguments(component, nested_key, fail_untyped=False, required=required)
        if issubclass(component, Trainer):
            return self._add_trainer_arguments(component, nested_key)
        return self.add_class_arguments(component, nested_key, fail_untyped=False, sub_configs=True)

    #: Lightning's name for add_trellis_class_args.
    add_lightning_class_args = add_trellis_class_args

    def _add_trainer_arguments(self, trainer_class: type[Any], nested_key: str) -> list[str]:
        parameters = inspect.signature(trainer_class.__init__).parameters
        typed_here = {name: spec for name, spec in TRAINER_OBJECT_FLAGS.items() if name in parameters}
        added = self.add_class_arguments(trainer_class, nested_key, fail_untyped=False, instantiate=False,
                                         sub_configs=True, skip=set(typed_here))
        for name, (annotation, help_text) in typed_here.items():
            default = parameters[name].default
            self.add_argument(f"--{nested_key}.{name}", type=annotation,
                              default=None if default is inspect.Parameter.empty else default, help=help_text)
            added.append(f"{nested_key}.{name}")
        return added

    def add_optimizer_args(self, optimizer_class: type[Optimizer] | tuple[type[Optimizer], ...] = (Optimizer,),
                           nested_key: str = "optimizer", link_to: str = "AUTOMATIC") -> None:
        """`--optimizer` (a tuple: any subclass by class_path; a class: its arguments). With link_to="AUTOMATIC"
        TrellisCLI builds it for the module's parameters and replaces configure_optimizers."""
        classes = optimizer_class if isinstance(optimizer_class, tuple) else (optimizer_class,)
        if not all(isinstance(kind, type) and issubclass(kind, Optimizer) for kind in classes):
            raise ConfigurationError(f"add_optimizer_args: {optimizer_class!r} is not a torch.optim.Optimizer subclass")
        self._add_partial_class(optimizer_class, nested_key, skip={"params"})
        self._optimizers[nested_key] = (optimizer_class, link_to)

    def add_lr_scheduler_args(self, lr_scheduler_class: type | tuple[type, ...] = LRSchedulerTypeTuple,
                              nested_key: str = "lr_scheduler", link_to: str = "AUTOMATIC") -> None:
        """`--lr_scheduler`, as add_optimizer_args (the optimizer argument is filled in by TrellisCLI)."""
        classes = lr_scheduler_class if isinstance(lr_scheduler_class, tuple) else (lr_scheduler_class,)
        if not all(isinstance(kind, type) and issubclass(kind, LRSchedulerTypeTuple) for kind in classes):
            raise ConfigurationError(f"add_lr_scheduler_args: {lr_scheduler_class!r} is not a learning-rate scheduler")
        self._add_partial_class(lr_scheduler_class, nested_key, skip={"optimizer"})
        self._lr_schedulers[nested_key] = (lr_scheduler_class, link_to)

    def _add_partial_class(self, kind: type | tuple[type, ...], nested_key: str, skip: set[str]) -> None:
        options: dict[str, Any] = {"instantiate": False, "fail_untyped": False, "skip": skip}
        if isinstance(kind, tuple):
            self.add_subclass_arguments(kind, nested_key, **options)
        else:
            self.add_class_arguments(kind, nested_key, sub_configs=True, **options)


#: Lightning's name, for code ported without renaming.
LightningArgumentParser = TrellisArgumentParser


def class_path_of(kind: type) -> str:
    return f"{kind.__module__}.{kind.__name__}"


def with_class_path(kind: type, init_args: Any = None) -> dict[str, Any]:
    """{"class_path": ..., "init_args": ...} for a class given by type and its parsed arguments."""
    if isinstance(init_args, jsonargparse.Namespace):
        init_args = init_args.as_dict()
    return {"class_path": class_path_of(kind), "init_args": dict(init_args or {})}


def import_class(class_path: str) -> Any:
    """The object a dotted import path names ("torch.optim.SGD")."""
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def instantiate_class(args: Any, init: dict[str, Any]) -> Any:
    """Build `init["class_path"](*args, **init["init_args"])`; `args` is one positional value or a tuple of them."""
    positional = args if isinstance(args, tuple) else (args,)
    return import_class(init["class_path"])(*positional, **init.get("init_args", {}))
