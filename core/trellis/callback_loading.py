"""The Trainer's callbacks: the ones passed in `callbacks=`, by object or by name, and the installed factories.

Callbacks by name (`Trainer(callbacks=["name"])`) come from the `trellis.callbacks` entry-point group and
run only when named. Distributions that want a callback in every Trainer declare a factory in the
`trellis.callback_factories` group (as Lightning's `lightning.pytorch.callbacks_factory`); installing the
distribution is the choice, and `TRELLIS_DISABLE_PLUGIN_AUTOLOAD=1` or `TRELLIS_BLOCK_PLUGINS` turn it off.
A factory that fails is skipped with a warning naming its distribution; it never stops a Trainer.
"""

from __future__ import annotations

from typing import Any

from trellis import discovery
from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError, PluginLoadError
from trellis.hookspecs import HOOK_NAMES
from trellis.utils.collections import as_list
from trellis.utils.rank_zero import warn_once


def resolve_callbacks(callbacks: Any) -> list[Callback]:
    """`callbacks=` (a Callback, a name, or a list of those), then the installed factories' callbacks.

    A factory's callback whose type the user passed already is left out: the user's configuration wins.
    """
    items = as_list(callbacks)
    chosen = [_named_callback(item) if isinstance(item, str) else _checked(item) for item in items]
    passed_types = {type(callback) for callback in chosen}
    return chosen + [callback for callback in factory_callbacks() if type(callback) not in passed_types]


def factory_callbacks() -> list[Callback]:
    """The callbacks of every installed `trellis.callback_factories` entry point (a failing one is skipped)."""
    made: list[Callback] = []
    for entry in discovery.installed_entries():
        if entry.role != discovery.CALLBACK_FACTORY_ROLE:
            continue
        try:
            result = entry.load()()
            callbacks = as_list(result)
            for callback in callbacks:
                if not isinstance(callback, Callback):
                    raise TypeError(f"it returned {type(callback).__qualname__}, not a trellis.Callback")
        except Exception as error:  # a factory nobody named in code must not stop the Trainer
            warn_once(
                f"callback factory {entry.name!r} from distribution {entry.origin} is skipped: "
                f"{type(error).__name__}: {error}. Block it with {discovery.BLOCK_VARIABLE}={entry.distribution} "
                "to silence this."
            )
            continue
        made += callbacks
    return made


def implemented_hooks(obj: Any) -> list[str]:
    """The hooks an object implements (methods named like a hook, other than Callback's empty defaults)."""
    return sorted(
        name for name in HOOK_NAMES
        if callable(method := getattr(type(obj), name, None)) and not getattr(method, "_trellis_default_hook", False)
    )


def _named_callback(name: str) -> Callback:
    entry = discovery.find("callback", name)
    callback = entry.load()()
    if not isinstance(callback, Callback):
        raise PluginLoadError(
            f"callback {name!r} from distribution {entry.origin} ({entry.value}) built a "
            f"{type(callback).__qualname__}, not a trellis.Callback: its author subclasses trellis.plugin.Callback"
        )
    return callback


def _checked(callback: Any) -> Callback:
    """Refuse what is not a Callback now, rather than at the first checkpoint, which saves callback state."""
    if isinstance(callback, Callback):
        return callback
    hooks = implemented_hooks(callback)
    if hooks:
        raise ConfigurationError(
            f"callbacks= got a {type(callback).__qualname__}, which implements {', '.join(hooks)} but is not a "
            "trellis.Callback: subclass trellis.Callback (its state then travels in checkpoints), or pass it in "
            "plugins=[...] as a plain hook plugin"
        )
    raise ConfigurationError(
        f"callbacks= got {callback!r}, which is neither a trellis.Callback nor a callback name, and implements no "
        f"hook: pass Callback objects or names of installed callbacks "
        f"({', '.join(discovery.names('callback')) or 'none installed'})"
    )
