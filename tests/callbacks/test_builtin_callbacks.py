"""LearningRateMonitor and Timer in real fits, read back from the CSV logger's file and checkpoints."""

from __future__ import annotations

import csv
import datetime
import os
import time

import pytest
import torch

import trellis
from support import TinyRegressor, loader, quiet_trainer
from trellis.callbacks import LearningRateMonitor, Timer
from trellis.errors import ConfigurationError
from trellis.utils.durations import duration_seconds


class ScheduledRegressor(TinyRegressor):
    """SGD with momentum, two param groups, and a StepLR that halves the rate every epoch."""

    def configure_optimizers(self):
        first, second = self.net[0], self.net[2]
        optimizer = torch.optim.SGD([{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.01}],
                                    lr=0.1, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]


def read_metrics(trainer: trellis.Trainer) -> list[dict[str, str]]:
    with open(os.path.join(trainer.log_dir, "metrics.csv"), newline="") as file:
        return list(csv.DictReader(file))


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(row[name]) for row in rows if row.get(name)]


def test_lr_monitor_logs_each_group_per_epoch_following_the_scheduler(tmp_path):
    monitor = LearningRateMonitor(log_momentum=True)
    trainer = quiet_trainer(logger="csv", default_root_dir=tmp_path, max_epochs=3, callbacks=[monitor])
    trainer.fit(ScheduledRegressor(), loader(64))
    rows = read_metrics(trainer)
    assert column(rows, "lr-SGD/pg1") == pytest.approx([0.1, 0.05, 0.025])
    assert column(rows, "lr-SGD/pg2") == pytest.approx([0.01, 0.005, 0.0025])
    assert column(rows, "lr-SGD/pg1-momentum") == pytest.approx([0.9] * 3)
    assert monitor.lrs["lr-SGD/pg1"] == pytest.approx([0.1, 0.05, 0.025])


def test_lr_monitor_step_interval_logs_every_log_every_n_steps(tmp_path):
    monitor = LearningRateMonitor(logging_interval="step")
    trainer = quiet_trainer(logger="csv", default_root_dir=tmp_path, max_epochs=1, log_every_n_steps=2,
                            callbacks=[monitor])
    trainer.fit(TinyRegressor(lr=0.05), loader(256, batch_size=32))  # 8 optimizer steps
    assert monitor.lrs == {"lr-SGD": [0.05] * 4}  # steps 0, 2, 4, 6
    assert column(read_metrics(trainer), "lr-SGD") == [0.05] * 4


def test_lr_monitor_names_repeated_optimizers_apart():
    class TwoAdams(TinyRegressor):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            for optimizer in self.optimizers():
                optimizer.zero_grad()
                self.manual_backward(torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))
                optimizer.step()

        def configure_optimizers(self):
            return [torch.optim.Adam(self.net[0].parameters(), lr=1e-3),
                    torch.optim.Adam(self.net[2].parameters(), lr=2e-3, betas=(0.5, 0.999))]

    monitor = LearningRateMonitor(logging_interval="epoch", log_momentum=True)
    trainer = quiet_trainer(logger=True, max_epochs=1, callbacks=[monitor])
    trainer.fit(TwoAdams(), loader(32))
    assert monitor.lrs == {"lr-Adam": [1e-3], "lr-Adam-1": [2e-3]}
    assert trainer.logged_metrics["lr-Adam-1-momentum"] == 0.5


def test_lr_monitor_without_a_logger_says_how_to_fix_it():
    trainer = quiet_trainer(max_epochs=1, callbacks=[LearningRateMonitor()])
    with pytest.raises(ConfigurationError, match="needs a logger"):
        trainer.fit(TinyRegressor(), loader(32))


def test_lr_monitor_rejects_an_unknown_interval():
    with pytest.raises(ConfigurationError, match="'step', 'epoch' or None"):
        LearningRateMonitor(logging_interval="batch")


class SlowRegressor(TinyRegressor):
    def training_step(self, batch, batch_idx):
        time.sleep(0.02)
        return super().training_step(batch, batch_idx)


def test_timer_stops_training_after_its_duration():
    timer = Timer(duration=0.2, verbose=False)
    trainer = quiet_trainer(max_epochs=100, callbacks=[timer])
    started = time.monotonic()
    trainer.fit(SlowRegressor(), loader(256, batch_size=32))
    assert time.monotonic() - started < 5
    assert 0 < trainer.global_step < 100 * 8
    assert timer.time_elapsed("train") >= 0.2
    assert timer.start_time("train") < timer.end_time("train")


def test_timer_epoch_interval_finishes_the_epoch():
    timer = Timer(duration={"milliseconds": 50}, interval="epoch", verbose=False)
    trainer = quiet_trainer(max_epochs=100, callbacks=[timer])
    trainer.fit(SlowRegressor(), loader(256, batch_size=32))
    assert trainer.global_step == 8 * trainer.current_epoch


def test_timer_times_validation_and_test_separately():
    timer = Timer()
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(TinyRegressor(), loader(64), loader(64))
    assert timer.time_elapsed("validate") > 0
    assert timer.start_time("test") is None and timer.time_elapsed("test") == 0
    assert timer.time_remaining() is None


def test_timer_elapsed_time_survives_a_checkpoint(tmp_path):
    timer = Timer(duration="00:00:10:00", verbose=False)
    trainer = quiet_trainer(max_epochs=1, callbacks=[timer])
    trainer.fit(SlowRegressor(), loader(64))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    spent = timer.time_elapsed()

    resumed_timer = Timer(duration=600)
    resumed = quiet_trainer(max_epochs=2, callbacks=[resumed_timer])
    resumed.fit(SlowRegressor(), loader(64), ckpt_path=tmp_path / "run.ckpt")
    assert resumed_timer.time_elapsed() > spent
    assert resumed_timer.time_remaining() == pytest.approx(600 - resumed_timer.time_elapsed(), abs=1e-3)


@pytest.mark.parametrize(("duration", "seconds"), [
    (90, 90.0), ("01:02:03:04", 93784.0), (datetime.timedelta(minutes=2), 120.0), ({"hours": 1}, 3600.0),
])
def test_durations_take_the_forms_max_time_takes(duration, seconds):
    assert duration_seconds(duration) == seconds


def test_a_malformed_duration_says_which_forms_work():
    with pytest.raises(ConfigurationError, match="DD:HH:MM:SS"):
        Timer(duration="1h30")
