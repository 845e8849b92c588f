"""PlainProgressBar: a progress bar readable both in a terminal and in a CI log, without tqdm."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from trellis.callbacks.progress_bar import SwitchedProgressBar
from trellis.stages import TrainerFn


class PlainProgressBar(SwitchedProgressBar):
    """Redraws one line in a terminal (at most every `refresh_seconds`); prints plain lines elsewhere.

    In a log (not a terminal) a line is printed at each tenth of an epoch and at epoch end, so a CI log stays
    short and still shows progress. The default bar when tqdm is not installed.
    """

    def __init__(self, refresh_rate: int = 1, refresh_seconds: float = 0.1, stream: TextIO | None = None) -> None:
        super().__init__()
        self.refresh_rate = max(1, refresh_rate)
        self.refresh_seconds = refresh_seconds
        self._stream = stream
        self._last_draw = 0.0
        self._started = 0.0
        self._next_log_fraction = 0.1
        self._draws = False
        self._tty = False
        self._total = math.inf

    @property
    def stream(self) -> TextIO:
        """Where lines go: the stream given, else sys.stdout as it is when the bar draws."""
        return self._stream if self._stream is not None else sys.stdout

    def _interactive(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._started = time.monotonic()
        self._next_log_fraction = 0.1
        self._draws = self._enabled
        self._tty = self._interactive()
        self._total = self.total_train_batches

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._draws or (batch_idx + 1) % self.refresh_rate:
            return
        done, total = batch_idx + 1, self._total
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= self.refresh_seconds:
                self._last_draw = now
                self.stream.write("\r" + self._line(trainer, done, total))
                self.stream.flush()
        elif math.isfinite(total) and done / total >= self._next_log_fraction and done < total:
            self._next_log_fraction = math.floor(done / total * 10 + 1) / 10
            self.stream.write(self._line(trainer, done, total) + "\n")
            self.stream.flush()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._enabled:
            done = trainer.fit_loop.batches_done
            self.stream.write(("\r" if self._interactive() else "") + self._line(trainer, done, done) + "\n")
            self.stream.flush()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._enabled and not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            metrics = _format(trainer.progress_bar_metrics)
            if metrics and not self._interactive():
                self.stream.write(f"Epoch {trainer.current_epoch} validation: {metrics}\n")
                self.stream.flush()

    def _line(self, trainer: Any, done: int, total: float) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        total_text = str(int(total)) if math.isfinite(total) else "?"
        bar = ""
        if math.isfinite(total) and total:
            filled = int(20 * done / total)
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
        metrics = _format(self.get_metrics(trainer, trainer.lightning_module))
        return (f"Epoch {trainer.current_epoch}: {bar}{done}/{total_text} "
                f"{done / elapsed:.1f} it/s" + (f" {metrics}" if metrics else ""))


def _format(metrics: dict[str, Any]) -> str:
    return " ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in sorted(metrics.items()))
