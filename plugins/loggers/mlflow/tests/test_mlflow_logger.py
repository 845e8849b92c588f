"""MLflow logger against a real `mlflow server` on 127.0.0.1 with a sqlite backend store."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from mlflow import MlflowClient

import trellis
from trellis.callbacks.model_checkpoint import ModelCheckpoint
from trellis_mlflow import MLflowLogger

STARTUP_TIMEOUT = 150  # a cold `mlflow server` imports a lot; on two busy cores this takes tens of seconds


class MlflowServer:
    """`mlflow server` in its own process group, stoppable and restartable on the same port and store."""

    def __init__(self, root: str, kit) -> None:
        self.kit = kit
        self.port = kit.free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        executable = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
        self.command = [
            executable, "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination", f"{root}/artifacts", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
        ]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )

    def wait_ready(self) -> None:
        self.kit.wait_until(lambda: self.kit.http_ok(f"{self.uri}/health"), self.process, STARTUP_TIMEOUT, "mlflow server")

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
        expected = [(int(row["step"]), float(row[key])) for row in rows if row[key]]
        assert history(client, logger.run_id, key) == sorted(expected)
    assert len(history(client, logger.run_id, "loss_step")) == 16
    artifacts = [artifact.path for artifact in client.list_artifacts(logger.run_id, "checkpoints")]
    assert artifacts == ["checkpoints/" + os.path.basename(trainer.checkpoint_callback.best_model_path)]


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
def test_resume_from_a_checkpoint_continues_the_same_run(tracking, tmp_path, kit):
    every_four = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    first = kit.quiet_trainer(logger="mlflow", max_steps=4, default_root_dir=tmp_path, callbacks=[every_four])
    first.fit(kit.TinyRegression(), kit.random_loader(batches=8))

    resumed = kit.quiet_trainer(logger="mlflow", max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False)
    resumed.fit(kit.TinyRegression(), kit.random_loader(batches=8), ckpt_path=tmp_path / "checkpoints" / "step=4.ckpt")

    assert resumed.logger.run_id == first.logger.run_id
    client = MlflowClient(tracking.uri)
    assert [step for step, _ in history(client, first.logger.run_id, "loss_step")] == list(range(1, 9))
    assert client.get_run(first.logger.run_id).info.status == "FINISHED"


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
    logger = MLflowLogger(save_dir=tmp_path, flush_interval=0.2, finalize_timeout=STARTUP_TIMEOUT)
    trainer = kit.quiet_trainer(logger=logger, max_epochs=2, default_root_dir=tmp_path, callbacks=[ServerOutage(tracking)])
    with pytest.warns(UserWarning, match="Training goes on") as warned:
        trainer.fit(kit.TinyRegression(), kit.random_loader(batches=8))

    assert len([warning for warning in warned if "Training goes on" in str(warning.message)]) == 1
    assert not os.path.exists(tmp_path / f"mlflow_undelivered_{logger.run_id}.jsonl")
    client = MlflowClient(tracking.uri)
    assert [step for step, _ in history(client, logger.run_id, "loss_step")] == list(range(1, 17))
    assert [step for step, _ in history(client, logger.run_id, "loss_epoch")] == [8, 16]
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_what_a_server_that_never_returns_did_not_get_is_saved_and_named(tmp_path, monkeypatch, kit):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    logger = MLflowLogger(tracking_uri=f"http://127.0.0.1:{kit.free_port()}", save_dir=tmp_path,
                          flush_interval=0.1, finalize_timeout=1.0)
    with pytest.warns(UserWarning) as warned:
        logger.log_hyperparams({"learning_rate": 0.1})
        for step in range(1, 4):
            logger.log_metrics({"loss": float(step), "epoch": 0.0}, step=step)
        logger.finalize("success")

    spilled = tmp_path / "mlflow_undelivered_unstarted.jsonl"
    assert any("steps 1..3" in str(warning.message) and str(spilled) in str(warning.message) for warning in warned)
    items = [json.loads(line) for line in spilled.read_text().splitlines()]
    assert items[0] == {"params": {"learning_rate": "0.1"}}
    assert [(item["step"], item["metrics"]) for item in items[1:]] == [
        (step, {"loss": float(step), "epoch": 0.0}) for step in range(1, 4)
    ]
