"""One pluggy PluginManager per run: registration, validation, and the bound callers the loops use.

Implementations take the arguments they name (any subset of the hook's, passed by name). An implementation
whose arguments are named otherwise, or that takes *args, gets them positionally in the hook's order, as
Lightning passes them: `on_train_batch_end(self, tr, module, outs, b, i)` and a Module's
`on_load_checkpoint(self, _)` work unchanged. A method named like a near miss of a hook is an error.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import pluggy

from trellis.errors import HookValidationError
from trellis.hookspecs import CALLBACK_ONLY_HOOKS, HOOK_NAMES, HookName, LifecycleHooks

_IMPL_OPTS: pluggy.HookimplOpts = {
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
        self._proxies: dict[int, _PositionalHooks] = {}
        #: hook calls are monitored (the simple profiler): the loops then call through pluggy.
        self.monitored = False

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if name not in HOOK_NAMES:
            return None
        if isinstance(plugin, _PositionalHooks):
            return _IMPL_OPTS.copy() if name in plugin.hooks else None
        return _IMPL_OPTS.copy() if _implements(plugin, name) else None

    def register(self, plugin: object, name: str | None = None) -> str | None:
        _check_hook_names(plugin)
        adapted = _positional_hooks(plugin)
        if adapted is not None:
            self._proxies[id(plugin)] = adapted
        plugin_name = super().register(adapted if adapted is not None else plugin, name)
        self._refresh()
        return plugin_name

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        if plugin is not None:
            plugin = self._proxies.pop(id(plugin), plugin)
        removed = super().unregister(plugin, name)
        self._refresh()
        return removed

    def is_registered(self, plugin: object) -> bool:
        return super().is_registered(self._proxies.get(id(plugin), plugin))

    def register_in_call_order(self, plugins: Iterable[object]) -> None:
        """Register so that hooks run in the given order (pluggy calls the last registered first)."""
        for plugin in reversed(list(plugins)):
            if plugin is not None and not self.is_registered(plugin):
                self.register(plugin)

    def add_hookcall_monitoring(self, before: Any, after: Any) -> Callable[[], None]:
        self.monitored = True
        return super().add_hookcall_monitoring(before, after)

    def call(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call a hook if anybody implements it; results of the implementations that returned one."""
        caller = self.callers.get(hook)
        return caller(**kwargs) if caller is not None else []

    def _refresh(self) -> None:
        self.callers = {
            hook: caller for hook in HOOK_NAMES if (caller := getattr(self.hook, hook)).get_hookimpls()
        }


def _implements(plugin: object, name: str) -> bool:
    if name in CALLBACK_ONLY_HOOKS and not _receives_callback_only_hook(plugin, name):
        return False
    method = getattr(type(plugin), name, None) if not inspect.ismodule(plugin) else getattr(plugin, name, None)
    return method is not None and callable(method) and not getattr(method, "_trellis_default_hook", False)


def _receives_callback_only_hook(plugin: object, name: str) -> bool:
    """Lightning calls these hooks on callbacks (and on_exception on the DataModule), never on the Module: a
    Module method of that name is the user's own."""
    from trellis.datamodule import DataModule
    from trellis.module_hooks import ModuleHooks

    if isinstance(plugin, ModuleHooks):
        return False
    return name == "on_exception" or not isinstance(plugin, DataModule)


def _check_hook_names(plugin: object) -> None:
    """Refuse methods whose names are near misses of real hooks (a typo would never be called)."""
    from trellis.module_hooks import LOOP_METHOD_NAMES

    for attribute in dir(type(plugin)):
        if attribute in HOOK_NAMES or attribute in LOOP_METHOD_NAMES or not attribute.startswith(_HOOK_LIKE_PREFIXES):
            continue
        if not callable(getattr(type(plugin), attribute, None)):
            continue
        nearest = difflib.get_close_matches(attribute, HOOK_NAMES, n=1, cutoff=0.85)
        if nearest:
            raise HookValidationError(
                f"{type(plugin).__qualname__}.{attribute} is not a Trellis hook and would never be called; "
                f"did you mean {nearest[0]!r}? Rename the method (hooks are listed in docs/hooks.md)."
            )


class _PositionalHooks:
    """What is registered for an object with hooks whose arguments must be passed positionally: for each
    hook it implements, a function taking the hook's argument names that forwards them in order."""

    def __init__(self, plugin: object, hooks: dict[str, Callable[..., Any]]) -> None:
        self.plugin, self.hooks = plugin, hooks
        for name, function in hooks.items():
            setattr(self, name, function)

    def __repr__(self) -> str:
        return f"<hooks of {self.plugin!r}, arguments passed in order>"


def _positional_hooks(plugin: object) -> _PositionalHooks | None:
    """The plugin's hooks as _PositionalHooks when one of them names arguments the hook does not pass."""
    if inspect.ismodule(plugin):
        return None
    reference = _reference_signatures(plugin)
    hooks: dict[str, Callable[..., Any]] = {}
    positional = False
    for name in HOOK_NAMES:
        if not _implements(plugin, name):
            continue
        method = getattr(plugin, name)
        passed = reference(name)
        adapter = _adapter(method, passed)
        positional |= adapter is not method
        hooks[name] = adapter
    return _PositionalHooks(plugin, hooks) if positional else None


def _reference_signatures(plugin: object) -> Callable[[str], list[str]]:
    """The order hook arguments are passed in: the Module form for modules and datamodules, else the spec's."""
    from trellis.datamodule import DataModule
    from trellis.module_hooks import ModuleHooks

    source = ModuleHooks if isinstance(plugin, (ModuleHooks, DataModule)) else LifecycleHooks

    def passed(name: str) -> list[str]:
        form = getattr(source, name, None) or getattr(LifecycleHooks, name)
        return list(inspect.signature(form).parameters)[1:]

    return passed


def _adapter(method: Callable[..., Any], passed: list[str]) -> Callable[..., Any]:
    """The method itself when it names only arguments the hook passes; else a forwarder in the hook's order."""
    parameters = list(inspect.signature(method).parameters.values())
    named = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_rest = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    if not takes_rest and all(p.name in passed for p in named):
        return method
    required = [p for p in named if p.default is p.empty]
    count = len(passed) if takes_rest else min(len(passed), max(len(required), len(named)))

    names = ", ".join(passed[:count])  # the spec's own argument names: identifiers pluggy reads from __code__
    namespace: dict[str, Any] = {"method": method}
    exec(f"def forward({names}):\n    return method({names})\n", namespace)  # noqa: S102
    forward: Callable[..., Any] = namespace["forward"]
    return forward


HookCall = Callable[..., list[Any]]


class HookContext(Protocol):
    """Told which hook runs (self.log's defaults and refusals depend on it): the MetricStore."""

    fx: str | None


class _NoContext:
    fx: str | None = None


class BoundHooks:
    """Hook calls as the loops make them: trainer and module are bound once, each implementation is called
    directly with the arguments it takes, and a hook nobody implements is None (`get`) or skipped (`fire`),
    so it costs nothing on the per-step path. With call monitoring on (the simple profiler), pluggy calls them.
    While a hook runs, `context.fx` names it.
    """

    def __init__(self, manager: HookManager, trainer: object, module: object,
                 context: HookContext | None = None) -> None:
        self.manager = manager
        monitored = manager.monitored
        context = context if context is not None else _NoContext()
        self._callers: dict[str, HookCall] = {
            name: _bound_caller(name, caller, trainer, module, monitored, context)
            for name, caller in manager.callers.items()
        }

    def get(self, name: HookName) -> HookCall | None:
        """The bound caller of a hook, None when no implementation is registered."""
        return self._callers.get(name)

    def fire(self, name: HookName, **arguments: Any) -> list[Any]:
        """Call a hook with the given arguments besides trainer and module; the implementations' results."""
        caller = self._callers.get(name)
        return caller(**arguments) if caller is not None else []


def _bound_caller(name: str, caller: pluggy.HookCaller, trainer: object, module: object, monitored: bool,
                  context: HookContext) -> HookCall:
    implementations = caller.get_hookimpls()
    if monitored or any(impl.kwargnames or impl.hookwrapper or impl.wrapper for impl in implementations):
        def through_pluggy(**arguments: Any) -> list[Any]:
            outer, context.fx = context.fx, name
            try:
                results: list[Any] = caller(trainer=trainer, pl_module=module, **arguments)
                return results
            finally:
                context.fx = outer

        return through_pluggy
    calls = tuple((impl.function, impl.argnames) for impl in reversed(implementations))  # pluggy's call order

    def call_each(**arguments: Any) -> list[Any]:
        arguments["trainer"] = trainer
        arguments["pl_module"] = module
        results = []
        outer, context.fx = context.fx, name
        try:
            for function, names in calls:
                result = function(*map(arguments.__getitem__, names))
                if result is not None:
                    results.append(result)
        finally:
            context.fx = outer
        return results

    return call_each
