"""One pluggy PluginManager per run: registration, validation, and the bound callers the loops use."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from trellis.errors import HookValidationError
from trellis.hookspecs import HOOK_NAMES, HookName, LifecycleHooks

_IMPL_OPTS = {
    "wrapper": False,
    "hookwrapper": False,
    "optionalhook": False,
    "tryfirst": False,
    "trylast": False,
    "specname": None,
}
#: prefixes of names that look like hooks; a near miss of a real hook is an error, not a dead method.
_HOOK_LIKE_PREFIXES = ("on_", "setup", "teardown")


class HookManager(pluggy.PluginManager):
    """Registers hook implementers by method name and calls only hooks somebody implements."""

    def __init__(self) -> None:
        super().__init__("trellis")
        self.add_hookspecs(LifecycleHooks)
        #: hook name -> its caller when at least one plugin implements it.
        self.callers: dict[str, pluggy.HookCaller] = {}

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        if name not in HOOK_NAMES:
            return None
        method = getattr(type(plugin), name, None) if not inspect.ismodule(plugin) else getattr(plugin, name, None)
        if method is None or not callable(method) or getattr(method, "_trellis_default_hook", False):
            return None
        return dict(_IMPL_OPTS)

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        _check_hook_names(plugin)
        try:
            plugin_name = super().register(plugin, name)
        except pluggy.PluginValidationError as error:
            raise _argument_error(plugin, error) from None
        self._refresh()
        return plugin_name

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        self._refresh()
        return removed

    def register_in_call_order(self, plugins: Iterable[Any]) -> None:
        """Register so that hooks run in the given order (pluggy calls the last registered first)."""
        for plugin in reversed(list(plugins)):
            if plugin is not None and not self.is_registered(plugin):
                self.register(plugin)

    def call(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call a hook if anybody implements it; results of the implementations that returned one."""
        caller = self.callers.get(hook)
        return caller(**kwargs) if caller is not None else []

    def _refresh(self) -> None:
        self.callers = {
            hook: caller for hook in HOOK_NAMES if (caller := getattr(self.hook, hook)).get_hookimpls()
        }


def _check_hook_names(plugin: Any) -> None:
    """Refuse methods whose names are near misses of real hooks (a typo would never be called)."""
    for attribute in dir(type(plugin)):
        if attribute in HOOK_NAMES or not attribute.startswith(_HOOK_LIKE_PREFIXES):
            continue
        if not callable(getattr(type(plugin), attribute, None)):
            continue
        nearest = difflib.get_close_matches(attribute, HOOK_NAMES, n=1, cutoff=0.85)
        if nearest:
            raise HookValidationError(
                f"{type(plugin).__qualname__}.{attribute} is not a Trellis hook and would never be called; "
                f"did you mean {nearest[0]!r}? Rename the method (hooks are listed in docs/hooks.md)."
            )


def _argument_error(plugin: Any, error: pluggy.PluginValidationError) -> HookValidationError:
    """Rewrite pluggy's argument error with the nearest real argument name."""
    for hook in HOOK_NAMES:
        method = getattr(plugin, hook, None)
        if method is None or getattr(method, "_trellis_default_hook", False):
            continue
        allowed = getattr(LifecycleHooks, hook).__code__.co_varnames[1:]
        positional, _ = pluggy._hooks.varnames(method)
        unknown = [argument for argument in positional if argument not in allowed]
        if unknown:
            nearest = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f"did you mean {nearest[0]!r}? " if nearest else ""
            return HookValidationError(
                f"{type(plugin).__qualname__}.{hook} takes argument {unknown[0]!r}, which the hook does not pass; "
                f"{hint}The hook passes, by name: {', '.join(allowed)}."
            )
    return HookValidationError(str(error))



HookCall = Callable[..., list[Any]]


class BoundHooks:
    """Hook calls as the loops make them: trainer and module are bound once, and a hook nobody implements
    is None (`get`) or skipped (`fire`), so it costs nothing on the per-step path."""

    def __init__(self, manager: HookManager, trainer: object, module: object) -> None:
        self.manager = manager
        self._callers: dict[str, HookCall] = {
            name: functools.partial(caller, trainer=trainer, pl_module=module)
            for name, caller in manager.callers.items()
        }

    def get(self, name: HookName) -> HookCall | None:
        """The bound caller of a hook, None when no implementation is registered."""
        return self._callers.get(name)

    def fire(self, name: HookName, **arguments: Any) -> list[Any]:
        """Call a hook with the given arguments besides trainer and module; the implementations' results."""
        caller = self._callers.get(name)
        return caller(**arguments) if caller is not None else []
