"""CSV logger: versioned run directories, growing columns, flushing, and resume without gaps or repeats."""

from __future__ import annotations

import csv
import os

import yaml

from trellis.callbacks.model_checkpoint import ModelCheckpoint
from trellis_csv import CSVLogger


def read_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_each_run_gets_the_next_version_directory_with_its_hparams(tmp_path):
    first = CSVLogger(save_dir=tmp_path)
    first.log_hyperparams({"learning_rate": 0.1, "layers": [2, 3], "optimizer": {"name": "sgd"}})
    second = CSVLogger(save_dir=tmp_path)

    assert first.log_dir == os.path.join(tmp_path, "trellis_logs", "version_0")
    assert second.version == 1
    with open(os.path.join(first.log_dir, "hparams.yaml")) as file:
        assert yaml.safe_load(file) == {"learning_rate": 0.1, "layers": [2, 3], "optimizer": {"name": "sgd"}}


def test_new_metrics_add_columns_and_earlier_rows_keep_their_values(tmp_path):
    logger = CSVLogger(save_dir=tmp_path, flush_logs_every_n_steps=1)
    logger.log_metrics({"loss": 1.0, "epoch": 0}, step=1)
    logger.log_metrics({"loss": 0.5, "val_acc": 0.9, "epoch": 0}, step=2)

    with open(logger.metrics_path) as file:
        assert file.readline().strip() == "step,epoch,loss,val_acc"
    assert read_rows(logger.metrics_path) == [
        {"step": "1", "epoch": "0", "loss": "1.0", "val_acc": ""},
        {"step": "2", "epoch": "0", "loss": "0.5", "val_acc": "0.9"},
    ]


def test_rows_reach_the_file_every_n_steps_so_a_crash_loses_at_most_that_window(tmp_path):
    logger = CSVLogger(save_dir=tmp_path, flush_logs_every_n_steps=3)
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.log_metrics({"loss": 2.0}, step=2)
    assert not os.path.exists(logger.metrics_path)
    logger.log_metrics({"loss": 3.0}, step=3)
    logger.log_metrics({"loss": 4.0}, step=4)
    assert [row["step"] for row in read_rows(logger.metrics_path)] == ["1", "2", "3"]
    logger.finalize("success")
    assert [row["step"] for row in read_rows(logger.metrics_path)] == ["1", "2", "3", "4"]


def test_the_default_logger_of_a_trainer_writes_every_step_and_the_epoch_aggregate(tmp_path, kit):
    trainer = kit.quiet_trainer(max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(kit.TinyRegression(), kit.random_loader(batches=4))

    assert isinstance(trainer.logger, CSVLogger)
    rows = read_rows(trainer.logger.metrics_path)
    assert [int(row["step"]) for row in rows if row["loss_step"]] == list(range(1, 9))
    assert [(row["step"], row["epoch"]) for row in rows if row["loss_epoch"]] == [("4", "0"), ("8", "1")]


def test_resume_from_a_mid_epoch_checkpoint_has_no_duplicated_and_no_missing_step(tmp_path, kit):
    every_four = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    interrupted = kit.quiet_trainer(max_steps=6, default_root_dir=tmp_path, callbacks=[every_four])
    interrupted.fit(kit.TinyRegression(), kit.random_loader(batches=8))  # rows up to step 6, checkpoint at 4

    resumed = kit.quiet_trainer(max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8), ckpt_path=tmp_path / "checkpoints" / "step=4.ckpt")

    assert resumed.logger.log_dir == interrupted.logger.log_dir
    rows = read_rows(resumed.logger.metrics_path)
    assert [int(row["step"]) for row in rows if row["loss_step"]] == list(range(1, 9))
    assert [row["step"] for row in rows if row["loss_epoch"]] == ["8"]
