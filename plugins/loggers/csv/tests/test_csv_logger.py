"""CSV logger: versioned run directories, growing columns, background writes, resume and restart without gaps
or repeats, and a full disk that never stops training."""

from __future__ import annotations

import csv
import os
import time

import pytest
import torch
import yaml

from trellis.callbacks.model_checkpoint import ModelCheckpoint
from trellis_csv import CSVLogger


def read_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def loss_steps(path: str) -> list[int]:
    return [int(row["step"]) for row in read_rows(path) if row.get("loss_step")]


def test_each_run_gets_the_next_version_directory_with_its_hparams(tmp_path):
    first = CSVLogger(save_dir=tmp_path)
    first.log_hyperparams({"learning_rate": 0.1, "layers": [2, 3], "optimizer": {"name": "sgd"}})
    second = CSVLogger(save_dir=tmp_path)  # while the first is still running: never the same directory
    first.save()

    assert first.log_dir == os.path.join(tmp_path, "lightning_logs", "version_0")
    assert second.version == 1
    with open(os.path.join(first.log_dir, "hparams.yaml")) as file:
        assert yaml.safe_load(file) == {"learning_rate": 0.1, "layers": [2, 3], "optimizer": {"name": "sgd"}}


def test_a_finished_run_leaves_only_its_files_and_the_next_run_a_new_version(tmp_path):
    logger = CSVLogger(save_dir=tmp_path)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    assert ".trellis_run" in os.listdir(logger.log_dir)  # held while the run writes
    logger.finalize("success")
    assert sorted(os.listdir(logger.log_dir)) == ["hparams.yaml", "metrics.csv"]
    assert CSVLogger(save_dir=tmp_path).version == 1


def test_a_prefix_goes_before_every_metric_name_as_in_lightning(tmp_path):
    logger = CSVLogger(tmp_path, "runs", None, "train")  # Lightning's positional order
    logger.log_metrics({"loss": 1.0, "epoch": 0}, step=0)
    logger.save()
    with open(logger.metrics_path) as file:
        assert file.readline().strip() == "step,train-loss,train-epoch"


def test_new_metrics_add_columns_and_earlier_rows_keep_their_values(tmp_path):
    logger = CSVLogger(save_dir=tmp_path)
    logger.log_metrics({"loss": 1.0, "epoch": 0}, step=1)
    logger.save()
    logger.log_metrics({"loss": 0.5, "val_acc": 0.9, "epoch": 0}, step=2)
    logger.save()

    with open(logger.metrics_path) as file:
        assert file.readline().strip() == "step,epoch,loss,val_acc"
    assert read_rows(logger.metrics_path) == [
        {"step": "1", "epoch": "0", "loss": "1.0", "val_acc": ""},
        {"step": "2", "epoch": "0", "loss": "0.5", "val_acc": "0.9"},
    ]


def test_rows_reach_the_file_in_the_background_without_any_flush_call(tmp_path):
    logger = CSVLogger(save_dir=tmp_path, flush_logs_every_n_steps=1000, flush_interval=0.05)
    for step in range(1, 4):
        logger.log_metrics({"loss": float(step)}, step=step)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (os.path.exists(logger.metrics_path) and
                                               len(read_rows(logger.metrics_path)) == 3):
        time.sleep(0.05)
    assert [row["step"] for row in read_rows(logger.metrics_path)] == ["1", "2", "3"]
    logger.finalize("success")


def test_a_trainer_writes_every_step_and_the_epoch_aggregate(tmp_path, kit):
    trainer = kit.quiet_trainer(logger="csv", max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(kit.TinyRegression(), kit.random_loader(batches=4))

    assert isinstance(trainer.logger, CSVLogger)
    rows = read_rows(trainer.logger.metrics_path)
    assert [int(row["step"]) for row in rows if row["loss_step"]] == list(range(8))
    assert [(row["step"], row["epoch"]) for row in rows if row["loss_epoch"]] == [("3", "0"), ("7", "1")]


def test_resume_from_a_mid_epoch_checkpoint_has_no_duplicated_and_no_missing_step(tmp_path, kit):
    every_four = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_top_k=-1,
                                 filename="{step}")
    interrupted = kit.quiet_trainer(logger="csv", max_steps=6, default_root_dir=tmp_path, callbacks=[every_four])
    interrupted.fit(kit.TinyRegression(), kit.random_loader(batches=8))  # rows at steps 0..5, checkpoint at 4

    resumed = kit.quiet_trainer(logger="csv", max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8), ckpt_path=tmp_path / "checkpoints" / "step=4.ckpt")

    assert resumed.logger.log_dir == interrupted.logger.log_dir
    rows = read_rows(resumed.logger.metrics_path)
    assert [int(row["step"]) for row in rows if row["loss_step"]] == list(range(8))
    assert [row["step"] for row in rows if row["loss_epoch"]] == ["7"]
    assert resumed.logger.read_back() == [(int(row["step"]), key, float(value)) for row in rows
                                          for key, value in row.items() if key != "step" and value]


def test_a_validation_logged_at_the_checkpoint_step_after_the_checkpoint_is_in_the_file_once(tmp_path, kit):
    """The checkpoint after the 4th optimizer step is written before that batch's row and its validation are
    logged, at step 3."""
    every_four = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_top_k=-1,
                                 filename="{step}")
    def validation_step(self, batch, batch_idx):
        inputs, targets = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(inputs), targets))

    module = type("WithValidation", (kit.TinyRegression,), {"validation_step": validation_step})()
    flags = {"default_root_dir": tmp_path, "val_check_interval": 4, "num_sanity_val_steps": 0}
    kit.quiet_trainer(logger="csv", max_steps=6, callbacks=[every_four], **flags).fit(
        module, kit.random_loader(batches=8), kit.random_loader(batches=2))
    resumed = kit.quiet_trainer(logger="csv", max_steps=8, enable_checkpointing=False, **flags)
    resumed.fit(module, kit.random_loader(batches=8), kit.random_loader(batches=2),
                ckpt_path=tmp_path / "checkpoints" / "step=4.ckpt")

    points = resumed.logger.read_back()
    assert sorted(step for step, name, _ in points if name == "val_loss") == [3, 7]
    assert sorted(step for step, name, _ in points if name == "loss_step") == list(range(8))


def test_a_restart_after_a_kill_before_the_first_checkpoint_writes_each_row_once(tmp_path, kit):
    kit.run_killed(tmp_path, "csv", kill_at=3)  # in on_train_batch_end of the 3rd batch, before its row is logged
    killed_dir = tmp_path / "lightning_logs" / "version_0"
    assert loss_steps(killed_dir / "metrics.csv") == [0, 1]

    with pytest.warns(UserWarning, match="killed before its first checkpoint"):
        restarted = kit.quiet_trainer(logger="csv", max_steps=8, default_root_dir=tmp_path, enable_checkpointing=False)
        restarted.fit(kit.TinyRegression(), kit.random_loader())

    assert restarted.logger.log_dir == str(killed_dir)
    assert os.listdir(tmp_path / "lightning_logs") == ["version_0"]
    assert loss_steps(restarted.logger.metrics_path) == list(range(8))


def test_a_run_killed_after_a_checkpoint_stays_resumable_and_a_fresh_run_gets_its_own_version(tmp_path, kit):
    kit.run_killed(tmp_path, "csv", kill_at=5, checkpoint_at=2)
    killed_dir = tmp_path / "lightning_logs" / "version_0"
    before = (killed_dir / "metrics.csv").read_text()

    fresh = kit.quiet_trainer(logger="csv", max_steps=2, default_root_dir=tmp_path, enable_checkpointing=False)
    fresh.fit(kit.TinyRegression(), kit.random_loader())
    assert fresh.logger.version == 1
    assert (killed_dir / "metrics.csv").read_text() == before

    resumed = kit.quiet_trainer(logger="csv", max_steps=8, default_root_dir=tmp_path, enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(), ckpt_path=killed_dir / "checkpoints" / "step=4.ckpt")
    assert resumed.logger.log_dir == str(killed_dir)
    assert loss_steps(resumed.logger.metrics_path) == list(range(8))


def test_a_fresh_run_with_a_fixed_version_replaces_what_an_earlier_run_left_there(tmp_path):
    earlier = CSVLogger(save_dir=tmp_path, version="baseline")
    earlier.log_metrics({"loss": 9.0}, step=1)
    earlier.finalize("success")

    again = CSVLogger(save_dir=tmp_path, version="baseline")
    with pytest.warns(UserWarning, match=r"metrics.csv replaced: this run was started fresh"):
        again.log_metrics({"loss": 1.0}, step=1)
        again.save()
    again.finalize("success")
    assert again.read_back() == [(1, "loss", 1.0)]


def test_a_disk_full_from_the_start_warns_once_trains_on_and_writes_everything_once_there_is_room(small_disk):
    outcome = small_disk.fit("csv", free_at=6)

    assert outcome["global_step"] == 10
    failures = [message for message in outcome["warnings"] if "Training goes on" in message]
    assert len(failures) == 1, outcome["warnings"]
    assert small_disk.mode == "RLIMIT_FSIZE" or "No space left on device" in failures[0]
    assert [step for step, name, _ in outcome["points"] if name == "loss"] == list(range(10))


def test_a_disk_that_stays_full_says_exactly_which_rows_were_lost(small_disk):
    outcome = small_disk.fit("csv", free_at=-1)

    assert outcome["global_step"] == 10
    lost = [message for message in outcome["warnings"] if "lost" in message]
    assert len(lost) == 1, outcome["warnings"]
    assert "10 metric row(s) for steps 0..9 (epoch, loss)" in lost[0]
    assert "1 hparams item(s)" in lost[0]
    assert outcome["points"] == []
