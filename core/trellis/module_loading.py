"""Rebuilding a Module or DataModule from a checkpoint, as Lightning's `load_from_checkpoint` does.

The class is built from the hyperparameters the checkpoint saved (or an hparams file), with the caller's
overrides; a Module then gets its weights, a DataModule its state.
"""

from __future__ import annotations

import ast
import csv
import functools
import inspect
import os
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import torch

from trellis.errors import CheckpointMismatchError, ConfigurationError
from trellis.utils.hparams import INSTANTIATOR_KEY, rebuild_hparams
from trellis.utils.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from trellis.datamodule import DataModule
    from trellis.module import Module

#: checkpoint keys of Lightning before 0.8 that held a Module's hyperparameters (older first).
_PAST_HPARAMS_KEYS = ("hparams", "module_arguments")


if TYPE_CHECKING:  # type checkers know classmethod, not its subclasses: this is one that refuses instances
    class_only_method = classmethod
else:
    class class_only_method(classmethod):  # noqa: N801 (a decorator, named like classmethod)
        """A classmethod that refuses to be called on an instance: `model.load_from_checkpoint(path)` would
        return a new object and leave `model` as it was, which is never what the caller meant."""

        def __get__(self, instance: Any, owner: type | None = None) -> Callable[..., Any]:
            function = self.__func__
            cls = owner if owner is not None else type(instance)

            @functools.wraps(function)
            def call(*args: Any, **kwargs: Any) -> Any:
                if instance is not None:
                    raise TypeError(
                        f"{cls.__name__}.{function.__name__} builds a new object, so it is called on the class: "
                        f"model = {cls.__name__}.{function.__name__}(...), not on an instance"
                    )
                return function(cls, *args, **kwargs)

            return call


def load_from_checkpoint(cls: type[Module] | type[DataModule], checkpoint_path: str | os.PathLike | IO[bytes],
                         map_location: Any = None, hparams_file: str | os.PathLike | None = None,
                         strict: bool | None = None, weights_only: bool | None = None, **kwargs: Any) -> Any:
    """`cls` (a Module or DataModule subclass) rebuilt from the checkpoint at `checkpoint_path`."""
    from trellis.checkpointing import load_checkpoint_file
    from trellis.datamodule import DataModule

    checkpoint = load_checkpoint_file(checkpoint_path, map_location=map_location or _saved_device_if_available,
                                      weights_only=weights_only)
    if hparams_file is not None:
        checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = load_hparams_file(hparams_file)
    hparams = checkpoint.setdefault(cls.CHECKPOINT_HYPER_PARAMS_KEY, {})
    hparams.update(kwargs)
    instance = _instantiate(cls, checkpoint, kwargs)
    if isinstance(instance, DataModule):
        state = checkpoint.get(type(instance).__qualname__)
        if state is not None:
            instance.load_state_dict(state)
        return instance
    return _load_weights(instance, checkpoint, strict, _describe(checkpoint_path))


def _instantiate(cls: type[Module] | type[DataModule], checkpoint: dict[str, Any], overrides: dict[str, Any]) -> Any:
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    named = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    from trellis.module import Module

    saved: dict[str, Any] = {}
    if issubclass(cls, Module):
        for key in _PAST_HPARAMS_KEYS:
            saved.update(checkpoint.get(key) or {})
    saved.update(checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY])
    instantiator = saved.pop(INSTANTIATOR_KEY, None)
    name = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_NAME)
    kind = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_TYPE)
    if name and name in named:  # they came as one object (`__init__(self, hparams)`): rebuilt as one
        arguments = {name: rebuild_hparams(saved, kind), **overrides}
    else:
        arguments = {**saved, **overrides}
    if not takes_any:
        arguments = {key: value for key, value in arguments.items() if key in named}
    if instantiator is None:
        return cls(**arguments)
    from trellis.config_cli.given_hparams import trusted_instantiator  # written by the config command line

    return trusted_instantiator(instantiator)(cls, arguments)


def _load_weights(module: Any, checkpoint: dict[str, Any], strict: bool | None, source: str) -> Any:
    if module._strict_loading is not None and strict is not None and strict != module.strict_loading:
        raise ValueError(
            f"load_from_checkpoint(..., strict={strict!r}) contradicts {type(module).__name__}.strict_loading="
            f"{module.strict_loading!r}: pass the same value, or leave one of them unset"
        )
    strict = module.strict_loading if strict is None else strict
    module.configure_model()
    module.on_load_checkpoint(checkpoint)
    state_dict = checkpoint["state_dict"]
    try:
        keys = type(module).load_state_dict(module, state_dict, strict=strict)
    except RuntimeError as error:
        if "loading state_dict" not in str(error):  # not torch's report of missing, unexpected or reshaped weights
            raise
        raise CheckpointMismatchError.from_load_error(source, type(module).__name__, error) from error
    if not strict:
        if keys.missing_keys:
            rank_zero_warn(f"{type(module).__name__} has weights the checkpoint {source!r} does not hold, left as "
                           f"initialised: {keys.missing_keys}")
        if keys.unexpected_keys:
            rank_zero_warn(f"the checkpoint {source!r} holds weights {type(module).__name__} does not have, "
                           f"ignored: {keys.unexpected_keys}")
    if not state_dict:
        rank_zero_warn(f"the checkpoint {source!r} holds no weights ('state_dict' is empty)")
        return module
    device = next((value.device for value in state_dict.values() if isinstance(value, torch.Tensor)), None)
    return type(module).to(module, device) if device is not None else module


def _saved_device_if_available(storage: Any, location: str) -> Any:
    """torch.load's map_location by default: each tensor on the device it was saved from, or on the CPU when
    this machine has no such device (a checkpoint written on a GPU, loaded on a laptop)."""
    try:
        device_module = torch.get_device_module(torch.device(location).type)
        available = device_module.is_available()
    except (RuntimeError, AttributeError, ValueError):
        available = False
    return None if available else storage.cpu()


def load_hparams_file(path: str | os.PathLike) -> dict[str, Any]:
    """Hyperparameters from a .yaml/.yml file (as the CSV and TensorBoard loggers write hparams.yaml) or a
    two-column key,value .csv file."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".yaml", ".yml", ".csv"):
        raise ConfigurationError(f"hparams_file={path!r}: pass a .yaml, .yml or .csv file")
    if not os.path.isfile(path):
        raise ConfigurationError(f"hparams_file={path!r} does not exist: pass the hparams.yaml of the run")
    if extension == ".csv":
        with open(path, newline="") as file:
            rows = list(csv.reader(file))[1:]
        return {row[0]: _literal(row[1]) for row in rows if len(row) >= 2}
    try:
        import yaml
    except ImportError as error:
        raise ConfigurationError(f"reading hparams_file={path!r} needs PyYAML: pip install pyyaml") from error
    with open(path) as file:
        loaded = yaml.safe_load(file)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"hparams_file={path!r} holds a {type(loaded).__name__}, not a mapping of names "
                                 "to values")
    return loaded


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _describe(source: Any) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source)
