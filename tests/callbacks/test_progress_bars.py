"""The progress bars: which one a Trainer gets, what TQDMProgressBar and RichProgressBar show, the shared
ProgressBar base (totals, metrics, enable/disable), and the per-step cost of the default bar."""

from __future__ import annotations

import importlib.util
import io
import re

import pytest
import torch

import trellis
from support import TinyRegressor, loader
from trellis.callbacks import (
    ModelSummary,
    PlainProgressBar,
    ProgressBar,
    RichModelSummary,
    RichProgressBar,
    TQDMProgressBar,
    tqdm_progress,
)
from trellis.errors import ConfigurationError


def trainer_with(**flags) -> trellis.Trainer:
    defaults = dict(logger=False, enable_model_summary=False, enable_checkpointing=False)
    return trellis.Trainer(**{**defaults, **flags})


class ProgressRegressor(TinyRegressor):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("shown", loss, prog_bar=True)
        return loss


def test_the_default_bar_is_tqdm_and_the_trainer_finds_it():
    trainer = trainer_with()
    bars = [callback for callback in trainer.callbacks if isinstance(callback, ProgressBar)]
    assert len(bars) == 1 and isinstance(bars[0], TQDMProgressBar)
    trainer.fit(TinyRegressor(), loader(64))
    assert trainer.progress_bar_callback is bars[0]
    assert trainer_with(enable_progress_bar=False).progress_bar_callback is None


def test_without_tqdm_the_default_is_the_plain_bar(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tqdm" else real_find_spec(name, *a))
    assert isinstance(trainer_with().progress_bar_callback, PlainProgressBar)


def test_a_given_bar_replaces_the_default_and_a_rich_bar_brings_the_rich_summary():
    class Dots(ProgressBar):
        def disable(self):
            pass

    trainer = trainer_with(callbacks=[Dots()])
    assert [type(c).__name__ for c in trainer.callbacks if isinstance(c, ProgressBar)] == ["Dots"]
    trainer = trainer_with(callbacks=[RichProgressBar()], enable_model_summary=True)
    assert [type(c) for c in trainer.callbacks if isinstance(c, ModelSummary)] == [RichModelSummary]


def test_a_bar_written_on_the_base_class_is_enabled_and_the_shipped_bars_switch_off_and_on():
    class Counting(ProgressBar):
        def __init__(self) -> None:
            super().__init__()
            self.batches = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.batches += 1

    custom = Counting()
    assert custom.is_enabled and not custom.is_disabled  # Lightning's base: a bar shows unless it says otherwise
    quiet = dict(enable_model_summary=False, logger=False, enable_checkpointing=False, max_epochs=1)
    trellis.Trainer(callbacks=[custom], **quiet).fit(TinyRegressor(), loader())
    assert custom.batches > 0
    for bar in (TQDMProgressBar(), RichProgressBar(), PlainProgressBar()):
        bar.disable()
        assert bar.is_disabled and not bar.is_enabled
        bar.enable()
        assert bar.is_enabled
    assert TQDMProgressBar(refresh_rate=0).is_disabled


def test_two_bars_or_a_bar_with_bars_turned_off_are_refused():
    with pytest.raises(ConfigurationError, match="multiple progress bar callbacks"):
        trainer_with(callbacks=[TQDMProgressBar(), RichProgressBar()])
    with pytest.raises(ConfigurationError, match="enable_progress_bar=False` but found `TQDMProgressBar`"):
        trainer_with(callbacks=[TQDMProgressBar()], enable_progress_bar=False)


def test_tqdm_shows_epochs_counts_rates_metrics_and_validation(capsys, tmp_path):
    trainer = trainer_with(max_epochs=2, logger=True, default_root_dir=tmp_path)
    trainer.fit(ProgressRegressor(), loader(128), loader(64))
    out = capsys.readouterr().out
    assert "Sanity Checking DataLoader 0: 100%" in out and "Validation DataLoader 0: 100%" in out
    final = out.rsplit("Epoch 1: 100%", 1)[1].split("\n")[0]
    assert re.match(r"\|█+\| 4/4 \[\d\d:\d\d<00:00, +[\d.]+it/s, v_num=0, .*\]", final)
    shown = float(re.search(r"shown=([\d.]+)", final).group(1))
    val_loss = float(re.search(r"val_loss=([\d.]+)", final).group(1))
    assert shown == pytest.approx(trainer.progress_bar_metrics["shown"], abs=1e-3)
    assert val_loss == pytest.approx(trainer.progress_bar_metrics["val_loss"], abs=1e-3)


def test_tqdm_bars_for_test_and_predict(capsys):
    class Predicts(TinyRegressor):
        def predict_step(self, batch, batch_idx):
            return self.net(batch[0])

        def test_step(self, batch, batch_idx):
            self.log("test_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

    trainer = trainer_with()
    trainer.test(Predicts(), loader(96), verbose=False)
    trainer.predict(Predicts(), loader(64))
    out = capsys.readouterr().out
    assert "Testing DataLoader 0: 100%|██████████| 3/3" in out
    assert "Predicting DataLoader 0: 100%|██████████| 2/2" in out


def test_tqdm_refresh_rate_zero_shows_nothing_and_leave_keeps_every_epoch(capsys):
    trainer_with(max_epochs=2, callbacks=[TQDMProgressBar(refresh_rate=0)]).fit(TinyRegressor(), loader(64))
    assert capsys.readouterr().out == ""
    trainer_with(max_epochs=2, callbacks=[TQDMProgressBar(leave=True)], num_sanity_val_steps=0).fit(
        TinyRegressor(), loader(64))
    lines = [line for line in capsys.readouterr().out.split("\n") if "Epoch" in line]
    assert len(lines) == 2  # one kept line per epoch


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def count_redraws(monkeypatch, bar: TQDMProgressBar, batches: int) -> list[int]:
    """Fit `batches` batches and return the batch counts the training bar was redrawn at."""
    redraws = []

    class Counting(tqdm_progress.tqdm_class()):
        def refresh(self, *args, **kwargs):
            redraws.append(self.n)
            return super().refresh(*args, **kwargs)

    monkeypatch.setattr(bar, "init_train_tqdm", lambda: Counting(disable=False, file=io.StringIO()))
    trainer_with(max_epochs=1, callbacks=[bar]).fit(TinyRegressor(), loader(32 * batches, batch_size=32))
    return [n for n in redraws if n > 0]


def test_in_a_log_the_default_bar_redraws_at_each_tenth_of_the_epoch(monkeypatch):
    assert count_redraws(monkeypatch, TQDMProgressBar(), 95) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 95]


def test_in_a_terminal_the_default_bar_redraws_at_most_once_per_mininterval(monkeypatch):
    """Per step the bar only counts; it redraws when tqdm's mininterval (0.1 s) passed, and at the last batch."""
    clock = iter(range(10**6))
    monkeypatch.setattr(tqdm_progress.time, "monotonic", lambda: next(clock) * 0.01)  # each reading: +10 ms
    monkeypatch.setattr(tqdm_progress.sys, "stdout", Terminal())
    batch_redraws = count_redraws(monkeypatch, TQDMProgressBar(), 100)
    assert 8 <= len(batch_redraws) <= 12 and batch_redraws[-1] == 100  # ~every 10 steps, and the last one


def test_totals_of_the_base_bar():
    seen = {}

    class Recording(ProgressBar):
        def disable(self):
            pass

        def on_train_epoch_start(self, trainer, pl_module):
            seen["train"] = self.total_train_batches

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            self.has_dataloader_changed(dataloader_idx)
            seen.setdefault("sanity" if trainer.sanity_checking else "validation",
                            self.total_val_batches_current_dataloader)
            seen["all validation"] = self.total_val_batches

    class TwoValidationLoaders(TinyRegressor):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            super().validation_step(batch, batch_idx)

    trainer = trainer_with(max_epochs=-1, max_steps=5, callbacks=[Recording()], num_sanity_val_steps=1)
    trainer.fit(TwoValidationLoaders(), loader(128), [loader(64), loader(96)])
    assert seen["sanity"] == 1 and seen["validation"] == 2 and seen["all validation"] == 2 + 3
    assert seen["train"] == min(4, 5 - 4)  # max_steps bounds the last epoch's bar


def test_get_metrics_shows_the_version_and_warns_on_a_clash(tmp_path):
    class ClashingName(TinyRegressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("v_num", 1.0, prog_bar=True)
            return loss

    bar = PlainProgressBar(stream=io.StringIO())
    trainer = trainer_with(callbacks=[bar], logger=True, default_root_dir=tmp_path, max_epochs=1)
    with pytest.warns(UserWarning, match="already tracks a metric with the name\\(s\\) 'v_num'"):
        trainer.fit(ClashingName(), loader(64))
        assert bar.get_metrics(trainer, trainer.lightning_module) == {"v_num": 1.0}  # the logged value wins


def test_rich_bar_draws_to_its_console(tmp_path):
    buffer = io.StringIO()
    bar = RichProgressBar(console_kwargs={"file": buffer, "width": 200, "force_terminal": False})
    trainer = trainer_with(max_epochs=2, callbacks=[bar])
    trainer.fit(ProgressRegressor(), loader(128), loader(64))
    out = buffer.getvalue()
    assert re.search(r"Epoch 1/1 .* 4/4 [\d:]+ • [\d:]+ [\d.]+it/s ", out)
    assert re.search(r"shown: [\d.]+", out) and re.search(r"val_loss: [\d.]+", out)
    assert bar.progress is not None and bar._progress_stopped


def test_plain_bar_prints_lines_for_logs():
    stream = io.StringIO()
    trainer_with(max_epochs=1, callbacks=[PlainProgressBar(stream=stream)]).fit(TinyRegressor(), loader(32 * 20))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("Epoch 0: [####################] 20/20")
