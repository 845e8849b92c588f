"""Which callbacks a run uses: the user's, the module's own, and the defaults nobody replaced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trellis.callback_loading import resolve_callbacks
from trellis.callbacks.base import Callback


class CallbackSet:
    """The Trainer's callbacks (names resolved through entry points) and the defaults its flags enable."""

    def __init__(self, given: Sequence[Any] | Any | None, progress_bar: bool, summary: bool, checkpointing: bool,
                 refresh_rate: int = 1, summary_depth: int = 1, max_time: float | None = None) -> None:
        self.user: list[Callback] = resolve_callbacks(given)
        self.defaults = _default_callbacks(progress_bar, summary, checkpointing, refresh_rate, summary_depth)
        if max_time is not None:  # Trainer(max_time=...) is a Timer, unless the user passed one
            from trellis.callbacks.timer import Timer

            self.defaults.append(Timer(duration=max_time, interval="step", verbose=True))

    def for_module(self, module: Any | None) -> list[Callback]:
        """User callbacks, replaced by the module's own of the same type; defaults only where none given.

        Monitoring callbacks (ModelCheckpoint, EarlyStopping) come last."""
        from_module = list(module.configure_callbacks() or []) if module is not None else []
        module_types = {type(callback) for callback in from_module}
        chosen = [callback for callback in self.user if type(callback) not in module_types] + from_module
        for default in self.defaults:
            if not any(isinstance(callback, type(default)) for callback in chosen):
                chosen.append(default)
        return sorted(chosen, key=lambda callback: getattr(callback, "runs_last", False))


def _default_callbacks(progress_bar: bool, summary: bool, checkpointing: bool, refresh_rate: int,
                       summary_depth: int) -> list[Callback]:
    from trellis.callbacks.model_checkpoint import ModelCheckpoint
    from trellis.callbacks.model_summary import ModelSummary
    from trellis.callbacks.progress_bar import ProgressBar

    enabled = ((progress_bar, lambda: ProgressBar(refresh_rate=refresh_rate)),
               (summary, lambda: ModelSummary(max_depth=summary_depth)), (checkpointing, ModelCheckpoint))
    return [make() for flag, make in enabled if flag]
