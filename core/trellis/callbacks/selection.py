"""Which callbacks a run uses: the user's, the module's own, and the defaults nobody replaced."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from trellis.callback_loading import resolve_callbacks
from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError


class CallbackSet:
    """The Trainer's callbacks (names resolved through entry points) and the defaults its flags enable.

    As in Lightning: a progress bar, a model summary and a ModelCheckpoint are added unless turned off or one of
    their kind (any ProgressBar, ModelSummary or Checkpoint) is given; the progress bar is TQDMProgressBar when
    tqdm is installed, else PlainProgressBar; next to a RichProgressBar the summary is a RichModelSummary.
    """

    def __init__(self, given: Sequence[Any] | Any | None, progress_bar: bool, summary: bool, checkpointing: bool,
                 refresh_rate: int = 1, summary_depth: int = 1, max_time: float | None = None) -> None:
        from trellis.callbacks.progress_bar import ProgressBar

        self.user: list[Callback] = resolve_callbacks(given)
        bars = [callback for callback in self.user if isinstance(callback, ProgressBar)]
        if len(bars) > 1:
            raise ConfigurationError(
                "You added multiple progress bar callbacks to the Trainer, but currently only one progress bar is "
                f"supported: keep one of {[type(bar).__name__ for bar in bars]}"
            )
        if bars and not progress_bar:
            raise ConfigurationError(
                f"Trainer was configured with `enable_progress_bar=False` but found `{type(bars[0]).__name__}` in "
                "callbacks list: remove one of the two"
            )
        self.defaults: list[Callback] = []
        if max_time is not None:  # Trainer(max_time=...) is a Timer, unless the user passed one
            from trellis.callbacks.timer import Timer

            self.defaults.append(Timer(duration=max_time, interval="step", verbose=True))
        self.defaults += _default_callbacks(progress_bar, summary, checkpointing, refresh_rate, summary_depth, bars)

    def for_module(self, module: Any | None) -> list[Callback]:
        """User callbacks, replaced by the module's own of the same type; defaults only where none of their kind
        is given.

        Lightning's order: the given ones, then the defaults (timer, progress bar, summary, checkpoint), with
        checkpoint callbacks moved last."""
        from trellis.callbacks.checkpoint import Checkpoint

        from_module = list(module.configure_callbacks() or []) if module is not None else []
        module_types = {type(callback) for callback in from_module}
        chosen = [callback for callback in self.user if type(callback) not in module_types] + from_module
        for default in self.defaults:
            if not any(isinstance(callback, _kind(default)) for callback in chosen):
                chosen.append(default)
        return sorted(chosen, key=lambda callback: isinstance(callback, Checkpoint))


def _kind(default: Callback) -> type:
    """The base class whose instances replace a default: any progress bar, summary or checkpoint callback."""
    from trellis.callbacks.checkpoint import Checkpoint
    from trellis.callbacks.model_summary import ModelSummary
    from trellis.callbacks.progress_bar import ProgressBar

    return next((base for base in (ProgressBar, ModelSummary, Checkpoint) if isinstance(default, base)), type(default))


def _default_callbacks(progress_bar: bool, summary: bool, checkpointing: bool, refresh_rate: int,
                       summary_depth: int, bars: list[Any]) -> list[Callback]:
    defaults: list[Callback] = []
    if progress_bar and not bars:
        defaults.append(default_progress_bar(refresh_rate))
    if summary:
        from trellis.callbacks.rich_progress import RichProgressBar

        if any(isinstance(bar, RichProgressBar) for bar in bars):
            from trellis.callbacks.rich_model_summary import RichModelSummary

            defaults.append(RichModelSummary(max_depth=summary_depth))
        else:
            from trellis.callbacks.model_summary import ModelSummary

            defaults.append(ModelSummary(max_depth=summary_depth))
    if checkpointing:
        from trellis.callbacks.model_checkpoint import ModelCheckpoint

        defaults.append(ModelCheckpoint())
    return defaults


def default_progress_bar(refresh_rate: int = 1) -> Callback:
    """TQDMProgressBar when tqdm is installed (Lightning's default), else the dependency-free PlainProgressBar."""
    if importlib.util.find_spec("tqdm") is not None:
        from trellis.callbacks.tqdm_progress import TQDMProgressBar

        return TQDMProgressBar(refresh_rate=refresh_rate)
    from trellis.callbacks.plain_progress_bar import PlainProgressBar

    return PlainProgressBar(refresh_rate=refresh_rate)
