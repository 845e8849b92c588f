"""MLflow logger against a real `mlflow server` on 127.0.0.1 and against MLflow's default (sqlite) store."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
import torch
from mlflow import MlflowClient

import trellis
from trellis.callbacks.model_checkpoint import ModelCheckpoint
from trellis_mlflow import RUN_KEY_TAG, MLflowLogger

STARTUP_TIMEOUT = 150  # a cold `mlflow server` imports a lot; on two busy cores this takes tens of seconds


class MlflowServer:
    """`mlflow server` in its own process group, stoppable and restartable on the same port and store."""

    def __init__(self, root: str, kit, backend_store: str | None = None) -> None:
        self.kit = kit
        self.port = kit.free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        executable = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
        self.command = [
            executable, "server", "--backend-store-uri", backend_store or f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination", f"{root}/artifacts", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
        ]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )

    def wait_ready(self) -> None:
        self.kit.wait_until(lambda: self.kit.http_ok(f"{self.uri}/health"), self.process, STARTUP_TIMEOUT,
                            "mlflow server")

    def stop(self) -> None:
        if self.process is not None:
            self.kit.stop(self.process)


@pytest.fixture(scope="module")
def server(tmp_path_factory, kit) -> Iterator[MlflowServer]:
    running = MlflowServer(str(tmp_path_factory.mktemp("mlflow_server")), kit)
    running.start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture
def tracking(server, monkeypatch) -> MlflowServer:
    """Point MLflow's own environment variables at the server, the way users configure MLflow."""
    if server.process is None or server.process.poll() is not None:
        server.start()
        server.wait_ready()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "trellis-tests")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return server


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((metric.step, metric.value) for metric in client.get_metric_history(run_id, key))


def every_n_steps(directory, steps: int) -> ModelCheckpoint:
    return ModelCheckpoint(dirpath=directory, every_n_train_steps=steps, save_top_k=-1, filename="{step}")


@pytest.mark.slow
def test_fit_by_name_sends_params_every_metric_and_checkpoints(tracking, tmp_path, kit):
    trainer = kit.quiet_trainer(logger=["mlflow", "csv"], max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(kit.TinyRegression(learning_rate=0.05), kit.random_loader(batches=8))

    logger, csv_logger = trainer.loggers
    client = MlflowClient(tracking.uri)
    run = client.get_run(logger.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "trellis-tests"
    assert run.info.status == "FINISHED"
    assert run.data.params == {"learning_rate": "0.05", "width": "4"}
    with open(csv_logger.metrics_path) as file:
        rows = list(csv.DictReader(file))
    for key in ("loss_step", "loss_epoch", "epoch"):
        expected = {(int(row["step"]), float(row[key])) for row in rows if row[key]}
        # a value repeated at the same step (the epoch-end row repeats `epoch`) is one point, not one per row
        assert history(client, logger.run_id, key) == sorted(expected)
    assert len(history(client, logger.run_id, "loss_step")) == 16
    artifacts = [artifact.path for artifact in client.list_artifacts(logger.run_id, "checkpoints")]
    # every checkpoint saved, also the first epoch's that top-k removed before its upload came
    assert sorted(artifacts) == ["checkpoints/epoch=0-step=8.ckpt", "checkpoints/epoch=1-step=16.ckpt"]
    assert not os.listdir(tmp_path / "mlflow_held_checkpoints")


@pytest.mark.slow
def test_log_model_uploads_the_trained_weights(tracking, tmp_path, kit):
    logger = MLflowLogger(log_model=True, save_dir=tmp_path)
    trainer = kit.quiet_trainer(logger=logger, max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False)
    module = kit.TinyRegression()
    trainer.fit(module, kit.random_loader(batches=4))
    client = MlflowClient(tracking.uri)
    assert [artifact.path for artifact in client.list_artifacts(logger.run_id, "model")] == ["model/model.pt"]
    downloaded = client.download_artifacts(logger.run_id, "model/model.pt", str(tmp_path / "download"))
    weights = torch.load(downloaded, weights_only=True)
    assert all(torch.equal(weights[name], value) for name, value in module.state_dict().items())


@pytest.mark.slow
def test_resume_continues_the_same_run_and_sends_no_step_twice(tracking, tmp_path, kit):
    """The interrupted run logged steps 3..5 after the checkpoint of global step 4: its points are kept and the
    resumed run does not send them again (MLflow cannot delete points)."""
    first = kit.quiet_trainer(logger="mlflow", max_steps=6, default_root_dir=tmp_path,
                              callbacks=[every_n_steps(tmp_path / "checkpoints", 4)])
    first.fit(kit.TinyRegression(), kit.random_loader(batches=8))

    resumed = kit.quiet_trainer(logger="mlflow", max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8), ckpt_path=tmp_path / "checkpoints" / "step=4.ckpt")

    assert resumed.logger.run_id == first.logger.run_id
    client = MlflowClient(tracking.uri)
    assert [step for step, _ in history(client, first.logger.run_id, "loss_step")] == list(range(8))
    assert [step for step, _ in history(client, first.logger.run_id, "epoch")] == list(range(8))
    assert client.get_run(first.logger.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_resume_from_a_checkpoint_taken_before_the_first_row_sends_no_step_twice(tracking, tmp_path, kit):
    """The checkpoint of the first optimizer step is written before that batch's row is logged: everything the
    run holds came after it, and the resumed run sends none of it again."""
    first = kit.quiet_trainer(logger="mlflow", max_steps=4, default_root_dir=tmp_path,
                              callbacks=[every_n_steps(tmp_path / "checkpoints", 1)])
    first.fit(kit.TinyRegression(), kit.random_loader(batches=8))
    state = torch.load(tmp_path / "checkpoints" / "step=1.ckpt", weights_only=True)["loggers"]["mlflow"]
    assert state["step"] is None

    resumed = kit.quiet_trainer(logger="mlflow", max_steps=8, default_root_dir=tmp_path, enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8), ckpt_path=tmp_path / "checkpoints" / "step=1.ckpt")

    assert resumed.logger.run_id == first.logger.run_id
    client = MlflowClient(tracking.uri)
    assert [step for step, _ in history(client, first.logger.run_id, "loss_step")] == list(range(8))


class ServerOutage(trellis.Callback):
    """Stops the server after step 3 and starts it again after step 7, while training goes on."""

    def __init__(self, server: MlflowServer) -> None:
        self.server = server

    def on_train_batch_end(self, trainer) -> None:
        if trainer.global_step == 3:
            assert trainer.logger.run_id  # the run exists before the outage
            self.server.stop()
        if trainer.global_step == 7:
            self.server.start()


@pytest.mark.slow
def test_a_server_stopped_mid_run_and_restarted_loses_no_metric(tracking, tmp_path, kit):
    logger = MLflowLogger(save_dir=tmp_path, flush_interval=0.2, retry_interval=0.5, finalize_timeout=STARTUP_TIMEOUT)
    trainer = kit.quiet_trainer(logger=logger, max_epochs=2, default_root_dir=tmp_path,
                                callbacks=[ServerOutage(tracking)])
    with pytest.warns(UserWarning, match="Training goes on") as warned:
        trainer.fit(kit.TinyRegression(), kit.random_loader(batches=8))

    assert len([warning for warning in warned if "Training goes on" in str(warning.message)]) == 1
    assert not list(tmp_path.glob("mlflow_undelivered_*.jsonl"))
    client = MlflowClient(tracking.uri)
    assert [step for step, _ in history(client, logger.run_id, "loss_step")] == list(range(16))
    assert [step for step, _ in history(client, logger.run_id, "loss_epoch")] == [7, 15]
    assert client.get_run(logger.run_id).info.status == "FINISHED"


class Clock(trellis.Callback):
    """When each checkpoint-taking step ended, and when training ended."""

    def on_train_start(self, trainer) -> None:
        self.started = time.monotonic()

    def on_train_end(self, trainer) -> None:
        self.trained = time.monotonic() - self.started


@pytest.mark.slow
def test_a_server_down_from_the_start_never_blocks_training_and_what_it_missed_is_named(tmp_path, monkeypatch, kit):
    """A dead port with MLflow's own retry policy (7 retries with backoff: minutes per request). Checkpoints
    every 2 steps used to wait for run creation behind those retries (~250 s each)."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    logger = MLflowLogger(tracking_uri=f"http://127.0.0.1:{kit.free_port()}", save_dir=tmp_path, finalize_timeout=2.0)
    clock = Clock()
    trainer = kit.quiet_trainer(logger=logger, max_steps=8, default_root_dir=tmp_path,
                                callbacks=[clock, every_n_steps(tmp_path / "checkpoints", 2)])
    with pytest.warns(UserWarning) as warned:
        started = time.monotonic()
        trainer.fit(kit.TinyRegression(), kit.random_loader(batches=8))
        fit_seconds = time.monotonic() - started

    assert trainer.global_step == 8
    assert clock.trained < 30, f"training took {clock.trained:.1f} s: it waited for the server"
    assert fit_seconds < clock.trained + 30, f"finalize took {fit_seconds - clock.trained:.1f} s, not about 2 s"
    spilled = tmp_path / f"mlflow_undelivered_{logger.run_key}.jsonl"
    items = [json.loads(line) for line in spilled.read_text().splitlines()]
    assert [item["step"] for item in items if "metrics" in item] == [*range(8), 7]  # step 7 ends the epoch too
    assert [item["kind"] for item in items if "metrics" not in item] == ["params"] + ["artifact"] * 4 + ["status"]
    [message] = [str(warning.message) for warning in warned if str(spilled) in str(warning.message)]
    assert "9 metric row(s) for steps 0..7" in message and "6 of them" not in message


@pytest.mark.slow
def test_a_server_that_starts_late_gets_everything_and_a_checkpoint_from_before_it_resumes_the_run(
    tmp_path, monkeypatch, kit
):
    """Checkpoints taken while the server is down name the run by its key; the run is created when the
    server comes up, and a resume from such a checkpoint continues it."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    late = MlflowServer(str(tmp_path / "server"), kit)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", late.uri)

    class StartServer(trellis.Callback):
        def on_train_batch_end(self, trainer) -> None:
            if trainer.global_step == 3:
                late.start()

    logger = MLflowLogger(save_dir=tmp_path, flush_interval=0.2, retry_interval=0.5, finalize_timeout=STARTUP_TIMEOUT)
    clock = Clock()
    trainer = kit.quiet_trainer(logger=logger, max_steps=6, default_root_dir=tmp_path,
                                callbacks=[clock, StartServer(), every_n_steps(tmp_path / "checkpoints", 2)])
    try:
        with pytest.warns(UserWarning, match="Training goes on"):
            trainer.fit(kit.TinyRegression(), kit.random_loader(batches=8))
        assert clock.trained < 30, f"training took {clock.trained:.1f} s: it waited for the server"
        late.wait_ready()
        state = torch.load(tmp_path / "checkpoints" / "step=2.ckpt", weights_only=True)["loggers"]["mlflow"]
        assert state["run_id"] is None and state["run_key"] == logger.run_key

        resumed = kit.quiet_trainer(logger=MLflowLogger(save_dir=tmp_path, finalize_timeout=STARTUP_TIMEOUT),
                                    max_steps=8, default_root_dir=tmp_path, enable_checkpointing=False)
        resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8),
                    ckpt_path=tmp_path / "checkpoints" / "step=2.ckpt")
        client = MlflowClient(late.uri)
        run = client.get_run(logger.run_id)
        steps = [step for step, _ in history(client, logger.run_id, "loss_step")]
    finally:
        late.stop()
    assert resumed.logger.run_id == logger.run_id
    assert run.data.tags[RUN_KEY_TAG] == logger.run_key
    assert steps == list(range(8))
    assert run.info.status == "FINISHED"
    assert not list(tmp_path.glob("mlflow_undelivered_*.jsonl"))


@pytest.mark.slow
def test_without_a_tracking_uri_runs_go_to_mlflows_default_store_that_its_client_and_ui_read(
    tmp_path, monkeypatch, kit
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    trainer = kit.quiet_trainer(logger="mlflow", max_steps=4, default_root_dir=tmp_path, enable_checkpointing=False)
    trainer.fit(kit.TinyRegression(learning_rate=0.05), kit.random_loader(batches=4))
    assert not list(tmp_path.glob("mlflow_undelivered_*.jsonl"))

    store = f"sqlite:///{tmp_path}/mlflow.db"  # MLflow's default: mlflow.db in the working directory
    run = MlflowClient(store).get_run(trainer.logger.run_id)
    assert run.data.params == {"learning_rate": "0.05", "width": "4"}
    assert run.info.status == "FINISHED"

    ui = MlflowServer(str(tmp_path / "ui"), kit, backend_store=store)  # what `mlflow ui` serves in this directory
    ui.start()
    try:
        ui.wait_ready()
        request = urllib.request.Request(
            f"{ui.uri}/api/2.0/mlflow/runs/search", data=json.dumps({"experiment_ids": ["0"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            runs = json.load(response)["runs"]
        with urllib.request.urlopen(ui.uri, timeout=30) as response:
            page = response.read().decode()
    finally:
        ui.stop()
    assert [found["info"]["run_id"] for found in runs] == [trainer.logger.run_id]
    assert "<html" in page.lower()


def test_what_a_server_that_never_returns_did_not_get_is_saved_and_named(tmp_path, monkeypatch, kit):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    logger = MLflowLogger(tracking_uri=f"http://127.0.0.1:{kit.free_port()}", save_dir=tmp_path,
                          flush_interval=0.1, finalize_timeout=5.0)
    with pytest.warns(UserWarning) as warned:
        logger.log_hyperparams({"learning_rate": 0.1})
        for step in range(1, 4):
            logger.log_metrics({"loss": float(step), "epoch": 0.0}, step=step)
        logger.finalize("success")

    spilled = tmp_path / f"mlflow_undelivered_{logger.run_key}.jsonl"
    assert any("steps 1..3" in str(warning.message) and str(spilled) in str(warning.message) for warning in warned)
    items = [json.loads(line) for line in spilled.read_text().splitlines()]
    assert items[0] == {"kind": "params", "params": {"learning_rate": "0.1"}}
    assert [(item["step"], item["metrics"]) for item in items[1:4]] == [
        (step, {"loss": float(step), "epoch": 0.0}) for step in range(1, 4)
    ]
    assert items[4] == {"kind": "status", "status": "FINISHED"}
