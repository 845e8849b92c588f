"""LambdaCallback: a callback made on the fly from functions, one per hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError
from trellis.hookspecs import HOOK_NAMES


class LambdaCallback(Callback):
    """`LambdaCallback(on_train_epoch_end=lambda trainer, pl_module: ...)`: each function is called as the hook
    (with the hook's arguments in Lightning's order: trainer, pl_module, then the hook's own)."""

    def __init__(self, **hooks: Callable[..., Any] | None) -> None:
        unknown = sorted(name for name in hooks if name not in HOOK_NAMES)
        if unknown:
            raise ConfigurationError(
                f"LambdaCallback got {', '.join(unknown)}, which are not hooks; the hooks are listed in docs/hooks.md")
        given = {name: staticmethod(function) for name, function in hooks.items() if function is not None}
        for name, function in given.items():
            if not callable(function.__func__):
                raise ConfigurationError(f"LambdaCallback({name}=...) needs a function, got {function.__func__!r}")
        # the hook manager finds hooks on the class, so each instance gets a class with its functions as hooks
        self.__class__ = type(type(self).__name__, (type(self),), {"__qualname__": type(self).__qualname__,
                                                                   "__module__": type(self).__module__, **given})
        for name, function in given.items():
            setattr(self, name, function.__func__)
