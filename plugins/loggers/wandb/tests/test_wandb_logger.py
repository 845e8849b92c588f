"""wandb logger in offline mode, read back from the .wandb transaction log that wandb wrote (decoded with
wandb's own protobuf Record by trellis_wandb.transaction_log)."""

from __future__ import annotations

import glob
import json
import os
import time

import pytest
from wandb.proto import wandb_internal_pb2

from trellis.callbacks.model_checkpoint import ModelCheckpoint
from trellis_wandb import WandbLogger
from trellis_wandb.transaction_log import finished_records, history


def run_records(save_dir: str, run_id: str) -> list[list[wandb_internal_pb2.Record]]:
    """Records of each local run directory of this id, oldest first."""
    paths = sorted(glob.glob(os.path.join(save_dir, "wandb", f"offline-run-*-{run_id}", f"run-{run_id}.wandb")))
    return [finished_records(path) for path in paths]


def config(records: list[wandb_internal_pb2.Record]) -> dict[str, object]:
    values: dict[str, object] = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            values.update({item.key: json.loads(item.value_json) for item in record.config.update})
    return values


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)


def test_fit_by_name_writes_config_every_step_and_checkpoint_artifacts(tmp_path, kit):
    trainer = kit.quiet_trainer(logger="wandb", max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(kit.TinyRegression(learning_rate=0.05), kit.random_loader(batches=8))

    [records] = run_records(str(tmp_path), trainer.logger.version)
    [run] = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    assert run.run_id == trainer.logger.version
    assert {key: config(records)[key] for key in ("learning_rate", "width")} == {"learning_rate": 0.05, "width": 4}
    rows = history(records)
    assert sorted(step for step, row in rows.items() if "loss_step" in row) == list(range(16))
    assert "loss_epoch" in rows[7]
    assert rows[15]["loss_epoch"] == pytest.approx(trainer.logged_metrics["loss_epoch"])
    assert rows[15]["epoch"] == 1
    artifacts = [record.artifact for record in records if record.WhichOneof("record_type") == "artifact"]
    assert [artifact.name for artifact in artifacts] == [f"model-{trainer.logger.version}"] * 2  # one per epoch
    assert not os.listdir(tmp_path / "wandb_held_checkpoints")  # links removed once uploaded


def test_resume_from_a_checkpoint_continues_the_same_run_id(tmp_path, kit):
    every_four = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_top_k=-1,
                                 filename="{step}")
    first = kit.quiet_trainer(logger="wandb", max_steps=4, default_root_dir=tmp_path, callbacks=[every_four])
    first.fit(kit.TinyRegression(), kit.random_loader(batches=8))

    time.sleep(1.0 - time.time() % 1.0)  # wandb names offline run dirs by start second: keep the two apart
    resumed = kit.quiet_trainer(logger="wandb", max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8), ckpt_path=tmp_path / "checkpoints" / "step=4.ckpt")

    assert resumed.logger.version == first.logger.version
    before, after = run_records(str(tmp_path), first.logger.version)
    assert sorted(step for step, row in history(before).items() if "loss_step" in row) == list(range(4))
    # the checkpoint was taken before the row of its batch (step 3) was logged: the resumed run logs it again,
    # and wandb sync keeps the first value of a step
    assert sorted(step for step, row in history(after).items() if "loss_step" in row) == list(range(3, 8))
    assert [step for step, name, _ in resumed.logger.read_back() if name == "loss_step"] == list(range(8))


def test_a_resumed_offline_run_reads_back_each_step_once_as_wandb_sync_merges_it(tmp_path, kit):
    """The interrupted run logged steps 3..5 after the checkpoint of global step 4; sync keeps them and ignores
    the resumed run's rows at those steps."""
    every_four = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_top_k=-1,
                                 filename="{step}")
    first = kit.quiet_trainer(logger="wandb", max_steps=6, default_root_dir=tmp_path, callbacks=[every_four])
    first.fit(kit.TinyRegression(), kit.random_loader(batches=8))

    time.sleep(1.0 - time.time() % 1.0)  # wandb names offline run dirs by start second: keep the two apart
    resumed = kit.quiet_trainer(logger="wandb", max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8), ckpt_path=tmp_path / "checkpoints" / "step=4.ckpt")

    points = resumed.logger.read_back()
    assert [step for step, name, _ in points if name == "loss_step"] == list(range(8))
    assert len(points) == len({(step, name) for step, name, _ in points})


def test_a_wandb_that_cannot_start_keeps_rows_and_names_what_it_never_got(tmp_path, monkeypatch):
    """wandb.init failing (no network, no login) cannot be produced offline, so init is made to fail."""
    import wandb

    def init(**kwargs):
        raise wandb.errors.CommError("could not reach api.wandb.ai")

    monkeypatch.setattr(wandb, "init", init)
    logger = WandbLogger(save_dir=tmp_path, finalize_timeout=1.0)
    with pytest.warns(UserWarning) as warned:
        for step in range(1, 4):
            logger.log_metrics({"loss": float(step)}, step=step)
        logger.finalize("success")
    spilled = tmp_path / f"wandb_undelivered_{logger.version}.jsonl"
    messages = [str(warning.message) for warning in warned]
    assert sum("Training goes on" in message for message in messages) == 1
    assert any("steps 1..3" in message and str(spilled) in message for message in messages)
    items = [json.loads(line) for line in spilled.read_text().splitlines()]
    assert items == [{"step": step, "metrics": {"loss": float(step)}} for step in range(1, 4)] + [
        {"kind": "finish", "exit_code": 0}
    ]
