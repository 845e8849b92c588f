"""trellis.Callback: hooks into the loops, with state that travels in checkpoints."""

from __future__ import annotations

from typing import Any

from trellis.hookspecs import LifecycleHooks


class Callback(LifecycleHooks):
    """Override the hooks you need (listed in docs/hooks.md); each receives what it names (trainer,
    pl_module, batch, ...). A hook you do not override is never called."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints; make it unique when several of a type are used."""
        return type(self).__qualname__

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""
