"""TQDMProgressBar: Lightning's default progress bars, drawn by tqdm (imported when a bar is first made)."""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import sys
import time
from typing import Any

from trellis.callbacks.progress_bar import SwitchedProgressBar, finite_or_none
from trellis.stages import TrainerFn

#: width numbers are padded to, so that the postfix does not flicker as values change.
_PAD_SIZE = 5


@functools.cache
def tqdm_class() -> type:
    """Lightning's Tqdm: tqdm (tqdm.auto in notebooks with ipywidgets) padding numbers in the postfix."""
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm as base
    else:
        from tqdm import tqdm as base

    class Tqdm(base):
        @staticmethod
        def format_num(n: int | float | str) -> str:
            padded = isinstance(n, (float, str))
            text = n if isinstance(n, str) else base.format_num(n)
            if padded and "e" not in text:
                if "." not in text and len(text) < _PAD_SIZE:
                    try:
                        float(text)
                    except ValueError:
                        return text
                    text += "."
                text += "0" * (_PAD_SIZE - len(text))
            return text

    return Tqdm


class TQDMProgressBar(SwitchedProgressBar):
    """Bars for the sanity check, training (paused during validation), validation, test and predict, each with
    percent, count, elapsed time, ETA, it/s and (training) the prog_bar metrics.

    `refresh_rate`: redraw at most every this many batches (0 hides the bars). Redraws are further limited,
    which keeps a step cheap: in a terminal to tqdm's `mininterval` (0.1 s), in a log to each tenth of the
    epoch, and always at a bar's last batch. `process_position` offsets the bars by that many lines. `leave`
    keeps each epoch's finished bar.
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
    _BARS = ("_train_progress_bar", "_val_progress_bar", "_test_progress_bar", "_predict_progress_bar")

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__()
        self._refresh_rate = _resolve_refresh_rate(refresh_rate)
        self._process_position = process_position
        self._leave = leave
        self._train_progress_bar: Any = None
        self._val_progress_bar: Any = None
        self._test_progress_bar: Any = None
        self._predict_progress_bar: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {key: None if key in self._BARS else value for key, value in vars(self).items()}

    # -- the bars ---------------------------------------------------------------------------------
    def _bar(self, name: str) -> Any:
        bar = getattr(self, f"_{name}")
        if bar is None:
            raise TypeError(f"The `{type(self).__name__}._{name}` reference has not been set yet.")
        return bar

    @property
    def train_progress_bar(self) -> Any:
        return self._bar("train_progress_bar")

    @train_progress_bar.setter
    def train_progress_bar(self, bar: Any) -> None:
        self._train_progress_bar = bar

    @property
    def val_progress_bar(self) -> Any:
        return self._bar("val_progress_bar")

    @val_progress_bar.setter
    def val_progress_bar(self, bar: Any) -> None:
        self._val_progress_bar = bar

    @property
    def test_progress_bar(self) -> Any:
        return self._bar("test_progress_bar")

    @test_progress_bar.setter
    def test_progress_bar(self, bar: Any) -> None:
        self._test_progress_bar = bar

    @property
    def predict_progress_bar(self) -> Any:
        return self._bar("predict_progress_bar")

    @predict_progress_bar.setter
    def predict_progress_bar(self, bar: Any) -> None:
        self._predict_progress_bar = bar

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def process_position(self) -> int:
        return self._process_position

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def _make(self, description: str, position: int, leave: bool, **options: Any) -> Any:
        return tqdm_class()(desc=description, position=position, disable=self.is_disabled, leave=leave,
                            dynamic_ncols=True, file=sys.stdout, bar_format=self.BAR_FORMAT, **options)

    def init_sanity_tqdm(self) -> Any:
        """The bar of the sanity check (override to customise)."""
        return self._make(self.sanity_check_description, 2 * self.process_position, leave=False)

    def init_train_tqdm(self) -> Any:
        """The training bar (override to customise)."""
        return self._make(self.train_description, 2 * self.process_position, leave=True, smoothing=0)

    def init_predict_tqdm(self) -> Any:
        return self._make(self.predict_description, 2 * self.process_position, leave=True, smoothing=0)

    def init_validation_tqdm(self) -> Any:
        """The validation bar: below the training bar during fit, alone in validate."""
        has_main_bar = self.trainer.state.fn != TrainerFn.VALIDATING
        return self._make(self.validation_description, 2 * self.process_position + has_main_bar,
                          leave=not has_main_bar)

    def init_test_tqdm(self) -> Any:
        return self._make("Testing", 2 * self.process_position, leave=True)

    # -- sanity check and training ----------------------------------------------------------------
    def on_sanity_check_start(self, *_: Any) -> None:
        self.val_progress_bar = self.init_sanity_tqdm()
        self.train_progress_bar = tqdm_class()(disable=True)  # a placeholder until training starts

    def on_sanity_check_end(self, *_: Any) -> None:
        self.val_progress_bar.close()
        self.train_progress_bar.close()

    def on_train_start(self, *_: Any) -> None:
        self.train_progress_bar = self.init_train_tqdm()

    def on_train_epoch_start(self, trainer: Any, *_: Any) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        _restart(self.train_progress_bar, self.total_train_batches, f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        bar, n = self._train_progress_bar, batch_idx + 1
        if bar is None or bar.disable or (n % self._refresh_rate and n != bar.total):
            return
        if _due(bar, n):
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
        if self._leave:
            self.train_progress_bar.close()

    def on_train_end(self, *_: Any) -> None:
        self.train_progress_bar.close()

    # -- validation, test, predict ----------------------------------------------------------------
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.val_progress_bar = self.init_validation_tqdm()

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            description = self.sanity_check_description if trainer.sanity_checking else self.validation_description
            _restart(self.val_progress_bar, self.total_val_batches_current_dataloader,
                     f"{description} DataLoader {dataloader_idx}")

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._advance(self._val_progress_bar, batch_idx + 1)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        if self._train_progress_bar is not None and trainer.state.fn == TrainerFn.FITTING:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self.test_progress_bar = self.init_test_tqdm()

    def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            _restart(self.test_progress_bar, self.total_test_batches_current_dataloader,
                     f"{self.test_description} DataLoader {dataloader_idx}")

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._advance(self._test_progress_bar, batch_idx + 1)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self.test_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.predict_progress_bar = self.init_predict_tqdm()

    def on_predict_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            _restart(self.predict_progress_bar, self.total_predict_batches_current_dataloader,
                     f"{self.predict_description} DataLoader {dataloader_idx}")

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self._advance(self._predict_progress_bar, batch_idx + 1)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self.predict_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def _advance(self, bar: Any, n: int) -> None:
        if bar is not None and not bar.disable and (n % self._refresh_rate == 0 or n == bar.total) and _due(bar, n):
            bar.refresh()

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Print above the active bar (through tqdm.write)."""
        active = next((bar for name in self._BARS if (bar := getattr(self, name)) is not None and not bar.disable),
                      None)
        if active is not None:
            active.write(sep.join(map(str, args)), **kwargs)


def _restart(bar: Any, total: int | float, description: str) -> None:
    """Start the bar over for a new epoch or loader, and choose when it redraws (see _due)."""
    bar.reset()
    bar.total = finite_or_none(total)
    bar.initial = 0
    bar.set_description(description)
    interactive = bool(getattr(sys.stdout, "isatty", lambda: False)())
    bar.log_stride = None if interactive or bar.total is None else max(1, math.ceil(bar.total / 10))
    bar.drawn_at = time.monotonic()


def _due(bar: Any, n: int) -> bool:
    """Count `n` batches done; whether to redraw now. Always at the last batch; otherwise, writing to a log (not a
    terminal), at each tenth of the total, so a log gets a few lines per epoch; in a terminal, once tqdm's
    `mininterval` (0.1 s) has passed. A step that does not redraw costs no call besides the hook's."""
    bar.n = n
    if n == bar.total:
        return True
    stride = bar.log_stride  # both set by _restart, at every epoch's and loader's start
    if stride is not None:
        return n % stride == 0
    now = time.monotonic()
    if now - bar.drawn_at < bar.mininterval:
        return False
    bar.drawn_at = now
    return True


def _resolve_refresh_rate(refresh_rate: int) -> int:
    """Colab crashes with rate 1 (20 there); TQDM_MINITERS sets a minimum."""
    if os.getenv("COLAB_GPU") and refresh_rate == 1:
        return 20
    if "TQDM_MINITERS" in os.environ:
        return max(int(os.environ["TQDM_MINITERS"]), refresh_rate)
    return refresh_rate
