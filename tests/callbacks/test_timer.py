"""Timer in real fits: stopping after its duration, the stages it times, its state in checkpoints."""

from __future__ import annotations

import datetime
import logging
import time

import pytest

from support import TinyRegressor, loader, quiet_trainer
from trellis.callbacks import Timer
from trellis.errors import ConfigurationError
from trellis.stages import RunningStage
from trellis.utils.durations import duration_seconds


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


def test_a_spent_timer_stops_before_the_first_step_and_says_so(caplog):
    trainer = quiet_trainer(max_epochs=3, callbacks=[Timer(duration=datetime.timedelta(0))])
    with caplog.at_level(logging.INFO):
        trainer.fit(TinyRegressor(), loader(64))
    assert trainer.global_step == 0 and trainer.current_epoch == 0
    assert "Time limit reached. Elapsed time is 0:00:00. Signaling Trainer to stop." in caplog.text


@pytest.mark.filterwarnings("ignore:Trainer was signaled to stop")
def test_min_epochs_outlast_a_spent_timer():
    trainer = quiet_trainer(max_epochs=5, min_epochs=2, callbacks=[Timer(duration=0, verbose=False)])
    trainer.fit(TinyRegressor(), loader(64))
    assert trainer.current_epoch == 2


def test_stages_can_be_named_by_running_stage():
    timer = Timer()
    trainer = quiet_trainer(max_epochs=1, callbacks=[timer])
    trainer.fit(TinyRegressor(), loader(64))
    assert timer.time_elapsed(RunningStage.TRAINING) == timer.time_elapsed("train") > 0
    assert set(timer.state_dict()["time_elapsed"]) == {stage.value for stage in RunningStage}
