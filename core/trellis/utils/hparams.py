"""Hyperparameter containers."""

from __future__ import annotations

import inspect
import types
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
