"""Hyperparameter containers."""

from __future__ import annotations

import argparse
import copy
import inspect
import types
from collections.abc import Mapping, Sequence
from typing import Any


class AttributeDict(dict):
    """A dict whose keys read and write as attributes (self.hparams.lr)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as error:
            raise AttributeError(f"hparams has no {key!r}; it holds {sorted(self)}") from error

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def collect_init_arguments(frame: types.FrameType, instance: object) -> dict[str, Any]:
    """The arguments of the __init__ of `instance` running in `frame`, and of its subclasses' __init__s."""
    arguments: dict[str, Any] = {}
    while frame is not None and frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is instance:
        info = inspect.getargvalues(frame)
        local = info.locals
        own = {name: local[name] for name in info.args[1:] if name in local}
        if info.keywords and isinstance(local.get(info.keywords), dict):
            own.update(local[info.keywords])
        arguments = {**own, **arguments}
        frame = frame.f_back
    for name in ("self", "__class__"):
        arguments.pop(name, None)
    return arguments


def plain_value(value: Any) -> Any:
    """A YAML/JSON-safe form of a hyperparameter value (unknown objects become their repr)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(key): plain_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(item) for item in value]
    return repr(value)


def flatten_hparams(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameter dicts as "outer/inner" keys (for backends with flat parameter names)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class HyperparametersMixin:
    """self.hparams, the classic `self.hparams = namespace` assignment, and save_hyperparameters()."""

    @property
    def hparams(self) -> AttributeDict:
        return self._own("_hparams")

    @hparams.setter
    def hparams(self, value: Mapping[str, Any] | argparse.Namespace) -> None:
        data = vars(value) if isinstance(value, argparse.Namespace) else dict(value)
        object.__setattr__(self, "_hparams", AttributeDict(data))
        object.__setattr__(self, "_hparams_initial", AttributeDict(copy.deepcopy(data)))

    @property
    def hparams_initial(self) -> AttributeDict:
        """The hyperparameters as saved, before any change during training (what checkpoints store)."""
        return self._own("_hparams_initial")

    def save_hyperparameters(self, *names: str, ignore: Sequence[str] | str | None = None) -> None:
        """Store the arguments of the calling __init__ in self.hparams (and so in checkpoints and loggers)."""
        arguments = collect_init_arguments(inspect.currentframe().f_back, self)
        ignored = {ignore} if isinstance(ignore, str) else set(ignore or ())
        if len(names) == 1 and isinstance(arguments.get(names[0]), (Mapping, argparse.Namespace)):
            value = arguments[names[0]]
            arguments = vars(value) if isinstance(value, argparse.Namespace) else dict(value)
        elif names:
            arguments = {name: arguments[name] for name in names}
        selected = {name: value for name, value in arguments.items() if name not in ignored}
        self.hparams.update(selected)
        self.hparams_initial.update(copy.deepcopy(selected))

    def _own(self, attribute: str) -> AttributeDict:
        if attribute not in self.__dict__:
            object.__setattr__(self, attribute, AttributeDict())
        return self.__dict__[attribute]
