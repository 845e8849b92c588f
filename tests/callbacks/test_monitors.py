"""DeviceStatsMonitor, ThroughputMonitor (with Throughput) and OnExceptionCheckpoint in real fits; rows read back
from the CSV logger's file."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from support import TinyRegressor, loader, quiet_trainer
from trellis.callbacks import DeviceStatsMonitor, OnExceptionCheckpoint, ThroughputMonitor
from trellis.callbacks.throughput import Throughput
from trellis.errors import ConfigurationError


def read_rows(trainer) -> list[dict[str, str]]:
    with open(os.path.join(trainer.log_dir, "metrics.csv"), newline="") as file:
        return list(csv.DictReader(file))


def test_device_stats_are_logged_around_batches_at_the_logging_steps(tmp_path):
    trainer = quiet_trainer(logger="csv", default_root_dir=tmp_path, max_epochs=1, log_every_n_steps=2,
                            callbacks=[DeviceStatsMonitor()])
    trainer.fit(TinyRegressor(), loader(128), loader(32))
    rows = read_rows(trainer)
    key = "DeviceStatsMonitor.on_train_batch_start/cpu_percent"
    assert [int(row["step"]) for row in rows if row.get(key)] == [1, 3]  # before the batches logged at 1 and 3
    for hook in ("on_train_batch_end", "on_validation_batch_start", "on_validation_batch_end"):
        values = [float(row[f"DeviceStatsMonitor.{hook}/cpu_vm_percent"]) for row in rows
                  if row.get(f"DeviceStatsMonitor.{hook}/cpu_vm_percent")]
        assert values and all(0 <= value <= 100 for value in values)


def test_device_stats_can_be_filtered_or_left_out_on_cpu(tmp_path):
    trainer = quiet_trainer(logger="csv", default_root_dir=tmp_path, max_epochs=1, log_every_n_steps=1,
                            callbacks=[DeviceStatsMonitor(filter_keys={"cpu_percent"})])
    trainer.fit(TinyRegressor(), loader(64))
    columns = {name for row in read_rows(trainer) for name, value in row.items() if value}
    assert {name.split("/")[-1] for name in columns if name.startswith("DeviceStats")} == {"cpu_percent"}

    quiet = quiet_trainer(logger="csv", default_root_dir=tmp_path / "quiet", max_epochs=1, log_every_n_steps=1,
                          callbacks=[DeviceStatsMonitor(cpu_stats=False)])
    quiet.fit(TinyRegressor(), loader(64))
    assert not any(name.startswith("DeviceStats") for row in read_rows(quiet) for name, value in row.items() if value)


def test_device_stats_need_a_logger():
    with pytest.raises(ConfigurationError, match="Cannot use `DeviceStatsMonitor` callback with `Trainer"):
        quiet_trainer(max_epochs=1, callbacks=[DeviceStatsMonitor()]).fit(TinyRegressor(), loader(64))


def test_throughput_rates_over_a_window():
    throughput = Throughput(window_size=3, world_size=2)
    for second, batches in ((1.0, 1), (2.0, 2), (4.0, 3)):
        throughput.update(time=second, batches=batches, samples=batches * 8, lengths=batches * 80, flops=100)
    metrics = throughput.compute()
    elapsed = 4.0 - 1.0
    assert metrics["time"] == 4.0 and metrics["samples"] == 24 and metrics["lengths"] == 240
    assert metrics["device/batches_per_sec"] == pytest.approx((3 - 1) / elapsed)
    assert metrics["samples_per_sec"] == pytest.approx((24 - 8) / elapsed * 2)
    assert metrics["device/items_per_sec"] == pytest.approx((240 - 80) / elapsed)
    assert metrics["device/flops_per_sec"] == pytest.approx(2 * 100 * 2 / elapsed / 2)  # flops summed over ranks
    with pytest.raises(ValueError, match="Expected the value to increase"):
        throughput.update(time=4.0, batches=4, samples=32)


def test_throughput_monitor_logs_each_stage(tmp_path):
    class WithFlops(TinyRegressor):
        flops_per_batch = 1000

    monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch[0].shape[0], window_size=2)
    trainer = quiet_trainer(logger="csv", default_root_dir=tmp_path, max_epochs=1, log_every_n_steps=1,
                            callbacks=[monitor])
    trainer.fit(WithFlops(), loader(128), loader(64))
    rows = read_rows(trainer)
    assert [(int(row["step"]), int(float(row["train/samples"]))) for row in rows if row.get("train/samples")] == [
        (0, 32), (1, 64), (2, 96), (3, 128)]
    assert all(float(row["train/device/flops_per_sec"]) > 0 for row in rows[1:] if row.get("train/samples"))
    assert [int(float(row["validate/samples"])) for row in rows if row.get("validate/samples")] == [32, 64]
    assert trainer.logged_metrics["train/batches"] == 4


def test_on_exception_checkpoint_keeps_the_failed_state_until_a_run_succeeds(tmp_path):
    class Fails(TinyRegressor):
        def training_step(self, batch, batch_idx):
            if self.global_step == 3:
                raise KeyboardInterrupt
            return super().training_step(batch, batch_idx)

    callback = OnExceptionCheckpoint(tmp_path, filename="crash")
    trainer = quiet_trainer(max_epochs=2, callbacks=[callback])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(Fails(), loader(128))
    saved = torch.load(tmp_path / "crash.ckpt", weights_only=True)
    assert saved["global_step"] == 3 and callback.ckpt_path == str(tmp_path / "crash.ckpt")
    quiet_trainer(max_epochs=1, callbacks=[callback]).fit(TinyRegressor(), loader(64))
    assert not (tmp_path / "crash.ckpt").exists()
    with pytest.raises(ValueError, match="filename cannot be empty"):
        OnExceptionCheckpoint(tmp_path, filename="")
