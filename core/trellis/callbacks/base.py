"""trellis.Callback: hooks into the loops, with state that travels in checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trellis.hookspecs import LifecycleHooks


class Callback(LifecycleHooks):
    """Override the hooks you need (listed in docs/hooks.md); each receives what it names (trainer,
    pl_module, batch, ...), or all of them in order as Lightning passes them. A hook you do not override is
    never called."""

    if TYPE_CHECKING:
        #: set for each run: the module's log and log_dict (as in Lightning, a callback's self.log is the module's).
        log: Callable[..., None]
        log_dict: Callable[..., None]

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints; make it unique when several of a type are used."""
        return type(self).__qualname__

    def _generate_state_key(self, **kwargs: Any) -> str:
        """A state key from the class name and the settings that tell instances apart, as Lightning writes it:
        `ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', ...}`."""
        return f"{type(self).__qualname__}{kwargs!r}"

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""
