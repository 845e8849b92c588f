"""RichProgressBar: progress bars drawn by rich (imported when the display starts)."""

from __future__ import annotations

import datetime
import functools
import importlib.util
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from trellis.callbacks.progress_bar import SwitchedProgressBar, finite_or_none
from trellis.stages import TrainerFn


@dataclass
class RichProgressBarTheme:
    """Styles (rich style strings) of the parts of the bars, and how metrics are written."""

    description: str = ""
    progress_bar: str = "#6206E0"
    progress_bar_finished: str = "#6206E0"
    progress_bar_pulse: str = "#6206E0"
    batch_progress: str = ""
    time: str = "dim"
    processing_speed: str = "dim underline"
    metrics: str = "italic"
    metrics_text_delimiter: str = " "
    metrics_format: str = ".3f"


@functools.cache
def rich_columns() -> SimpleNamespace:
    """The columns of Lightning's rich bars, as classes built on rich's (rich is imported here)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class BatchesProcessedColumn(ProgressColumn):
        """`done/total` (`--` for a loader of unknown length)."""

        def __init__(self, style: str) -> None:
            self.style = style
            super().__init__()

        def render(self, task: Any) -> Text:
            total = "--" if task.total is None else int(task.total)
            return Text(f"{int(task.completed)}/{total}", style=self.style)

    class CustomTimeColumn(ProgressColumn):
        """`elapsed • remaining`."""

        max_refresh = 0.5

        def __init__(self, style: str) -> None:
            self.style = style
            super().__init__()

        def render(self, task: Any) -> Text:
            elapsed = task.finished_time if task.finished else task.elapsed
            remaining = task.time_remaining
            elapsed_text = "-:--:--" if elapsed is None else str(datetime.timedelta(seconds=int(elapsed)))
            remaining_text = "-:--:--" if remaining is None else str(datetime.timedelta(seconds=int(remaining)))
            return Text(f"{elapsed_text} • {remaining_text}", style=self.style)

    class ProcessingSpeedColumn(ProgressColumn):
        """`x.xxit/s`."""

        def __init__(self, style: str) -> None:
            self.style = style
            super().__init__()

        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:>.2f}it/s" if task.speed is not None else "0.00it/s", style=self.style)

    class MetricsTextColumn(ProgressColumn):
        """The prog_bar metrics, next to the training bar only."""

        def __init__(self, bar: RichProgressBar, style: str, delimiter: str, number_format: str) -> None:
            self._bar, self._style, self._delimiter, self._format = bar, style, delimiter, number_format
            self.metrics: dict[str, Any] = {}
            super().__init__()

        def render(self, task: Any) -> Text:
            trainer = self._bar._trainer
            if (trainer is None or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking
                    or task.id != self._bar.train_progress_bar_id):
                return Text()
            return Text(self._delimiter.join(self._texts()), justify="left", style=self._style)

        def _texts(self) -> Any:
            for name, value in self.metrics.items():
                if not isinstance(value, str):
                    try:
                        value = f"{value:{self._format}}"
                    except (TypeError, ValueError):
                        value = str(value)
                yield f"{name}: {value}"

    return SimpleNamespace(BatchesProcessedColumn=BatchesProcessedColumn, CustomTimeColumn=CustomTimeColumn,
                           ProcessingSpeedColumn=ProcessingSpeedColumn, MetricsTextColumn=MetricsTextColumn)


class RichProgressBar(SwitchedProgressBar):
    """Bars for the sanity check, training (with the prog_bar metrics), validation, test and predict, drawn by
    rich: description, bar, `done/total`, `elapsed • remaining`, speed.

    `refresh_rate`: redraws per second (0 hides the bars); `leave` keeps each epoch's bar; `theme` styles the
    parts; `console_kwargs` configure rich's Console.
    """

    def __init__(self, refresh_rate: int = 100, leave: bool = False, theme: RichProgressBarTheme | None = None,
                 console_kwargs: dict[str, Any] | None = None) -> None:
        if importlib.util.find_spec("rich") is None:
            raise ModuleNotFoundError(
                "`RichProgressBar` requires `rich` >= 10.2.2. Install it by running `pip install -U rich`.")
        super().__init__()
        self._refresh_rate = refresh_rate
        self._leave = leave
        self._console_kwargs = console_kwargs or {}
        self.theme = theme or RichProgressBarTheme()
        self.progress: Any = None
        self._console: Any = None
        self._metric_component: Any = None
        self._progress_stopped = False
        self.train_progress_bar_id: Any = None
        self.val_sanity_progress_bar_id: Any = None
        self.val_progress_bar_id: Any = None
        self.test_progress_bar_id: Any = None
        self.predict_progress_bar_id: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": None, "_console": None, "_metric_component": None}

    @property
    def refresh_rate(self) -> float:
        return self._refresh_rate

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def _task(self, task_id: Any) -> Any:
        assert self.progress is not None and task_id is not None
        return self.progress.tasks[task_id]

    @property
    def train_progress_bar(self) -> Any:
        return self._task(self.train_progress_bar_id)

    @property
    def val_sanity_check_bar(self) -> Any:
        return self._task(self.val_sanity_progress_bar_id)

    @property
    def val_progress_bar(self) -> Any:
        return self._task(self.val_progress_bar_id)

    @property
    def test_progress_bar(self) -> Any:
        return self._task(self.test_progress_bar_id)

    def configure_columns(self, trainer: Any) -> list[Any]:
        """The columns before the metrics (override to change them)."""
        from rich.progress import BarColumn, TextColumn

        columns, theme = rich_columns(), self.theme
        return [
            TextColumn("[progress.description]{task.description}"),
            BarColumn(complete_style=theme.progress_bar, finished_style=theme.progress_bar_finished,
                      pulse_style=theme.progress_bar_pulse),
            columns.BatchesProcessedColumn(style=theme.batch_progress),
            columns.CustomTimeColumn(style=theme.time),
            columns.ProcessingSpeedColumn(style=theme.processing_speed),
        ]

    def _init_progress(self, trainer: Any) -> None:
        if not self.is_enabled or (self.progress is not None and not self._progress_stopped):
            return
        from rich import get_console, reconfigure
        from rich.progress import Progress

        self._reset_progress_bar_ids()
        reconfigure(**self._console_kwargs)
        self._console = get_console()
        if self._console._live_stack:  # a display left by an earlier run
            self._console.clear_live()
        theme = self.theme
        self._metric_component = rich_columns().MetricsTextColumn(
            self, theme.metrics, theme.metrics_text_delimiter, theme.metrics_format)
        self.progress = Progress(*self.configure_columns(trainer), self._metric_component, auto_refresh=True,
                                 refresh_per_second=self.refresh_rate, disable=self.is_disabled,
                                 console=self._console)
        self.progress.start()
        self._progress_stopped = False

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self._progress_stopped = True

    def _reset_progress_bar_ids(self) -> None:
        self.train_progress_bar_id = self.val_sanity_progress_bar_id = self.val_progress_bar_id = None
        self.test_progress_bar_id = self.predict_progress_bar_id = None

    def _add_task(self, total: int | float, description: str, visible: bool = True) -> Any:
        assert self.progress is not None
        styled = f"[{self.theme.description}]{description}" if self.theme.description else description
        return self.progress.add_task(styled, total=finite_or_none(total), visible=visible)

    def _update(self, task_id: Any, completed: int, visible: bool = True) -> None:
        if self.progress is not None and self.is_enabled and task_id is not None:
            self.progress.update(task_id, completed=completed, visible=visible)

    def _hide(self, task_id: Any) -> None:
        if self.progress is not None and task_id is not None:
            self.progress.update(task_id, advance=0, visible=False)

    def _update_metrics(self, trainer: Any, pl_module: Any) -> None:
        if self.is_enabled and self._metric_component is not None:
            self._metric_component.metrics = self.get_metrics(trainer, pl_module)

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        return {name: value.item() if isinstance(value, torch.Tensor) else value for name, value in metrics.items()}

    def _train_description(self, epoch: int) -> str:
        description = f"Epoch {epoch}"
        if self.trainer.max_epochs is not None:
            description += f"/{self.trainer.max_epochs - 1}"
        width = len(self.validation_description)
        return f"{description:{width}}" if width > len(description) else description

    # -- hooks ------------------------------------------------------------------------------------
    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self._init_progress(trainer)

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
        self._hide(self.val_sanity_progress_bar_id)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._init_progress(trainer)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.is_disabled:
            return
        total, description = self.total_train_batches, self._train_description(trainer.current_epoch)
        if self.train_progress_bar_id is not None and self._leave:
            self._stop_progress()
            self._init_progress(trainer)
        if self.progress is None:
            return
        if self.train_progress_bar_id is None:
            self.train_progress_bar_id = self._add_task(total, description)
        else:
            self.progress.reset(self.train_progress_bar_id, total=finite_or_none(total), description=description,
                                visible=True)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.is_enabled and self.train_progress_bar_id is None and self.progress is not None:
            self.train_progress_bar_id = self._add_task(self.total_train_batches,
                                                        self._train_description(trainer.current_epoch))
        self._update(self.train_progress_bar_id, batch_idx + 1)
        self._update_metrics(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._update_metrics(trainer, pl_module)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._init_progress(trainer)

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if self.is_disabled or self.progress is None or not self.has_dataloader_changed(dataloader_idx):
            return
        total = self.total_val_batches_current_dataloader
        if trainer.sanity_checking:
            self._hide(self.val_sanity_progress_bar_id)
            self.val_sanity_progress_bar_id = self._add_task(total, self.sanity_check_description, visible=False)
        else:
            self._hide(self.val_progress_bar_id)
            self.val_progress_bar_id = self._add_task(total, self.validation_description, visible=False)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self.is_enabled:
            self._update(self.val_sanity_progress_bar_id if trainer.sanity_checking else self.val_progress_bar_id,
                         batch_idx + 1)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.is_enabled and trainer.state.fn == TrainerFn.FITTING:
            self._hide(self.val_progress_bar_id)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._update_metrics(trainer, pl_module)
        self.reset_dataloader_idx_tracker()

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._init_progress(trainer)

    def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        if self.is_disabled or self.progress is None or not self.has_dataloader_changed(dataloader_idx):
            return
        self._hide(self.test_progress_bar_id)
        self.test_progress_bar_id = self._add_task(self.total_test_batches_current_dataloader, self.test_description)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._update(self.test_progress_bar_id, batch_idx + 1)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self.reset_dataloader_idx_tracker()

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._init_progress(trainer)

    def on_predict_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        if self.is_disabled or self.progress is None or not self.has_dataloader_changed(dataloader_idx):
            return
        self._hide(self.predict_progress_bar_id)
        self.predict_progress_bar_id = self._add_task(self.total_predict_batches_current_dataloader,
                                                      self.predict_description)

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self._update(self.predict_progress_bar_id, batch_idx + 1)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self.reset_dataloader_idx_tracker()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._stop_progress()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._stop_progress()

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print through rich's console, above the bars."""
        if self._console is not None:
            self._console.print(*args, **kwargs)
        else:
            print(*args, **kwargs)
