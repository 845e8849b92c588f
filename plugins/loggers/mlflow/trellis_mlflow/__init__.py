"""MLflow logger: params, batched metrics, checkpoint (and model) artifacts, sent from a background thread."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from trellis.roles import Logger
from trellis.utils.hparams import flatten_hparams
from trellis.utils.pending import Item, PendingItems
from trellis.utils.rank_zero import rank_zero_warn

TRELLIS_PLUGIN_API = 1

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: Trellis run status -> MLflow run status.
RUN_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
CHECKPOINT_ARTIFACT_PATH = "checkpoints"
MODEL_ARTIFACT_PATH = "model"
_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
_PARAMS_PER_BATCH = 100
_PARAM_VALUE_LIMIT = 6000
_INVALID_KEY_CHARACTERS = re.compile(r"[^\w\-./ ]")


class MLflowLogger(Logger):
    """One MLflow run per training; its run id travels in checkpoints so a resumed fit continues it.

    Nothing here blocks the training loop on the server: log calls queue items that a background thread
    delivers every `flush_interval` seconds, retrying while the server is down.
    """

    name = "mlflow"

    def __init__(
        self,
        experiment_name: str | None = None,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
        artifact_location: str | None = None,
        log_checkpoints: bool = True,
        log_model: bool = False,
        save_dir: str | os.PathLike = ".",
        flush_interval: float = 1.0,
        finalize_timeout: float = 30.0,
    ) -> None:
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.experiment_name = experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        self.run_name = run_name
        self.tags = {str(key): str(value) for key, value in (tags or {}).items()}
        self.artifact_location = artifact_location
        self.log_checkpoints = log_checkpoints
        self.log_model = log_model
        self.save_dir = os.fspath(save_dir)
        self.flush_interval = flush_interval
        self.finalize_timeout = finalize_timeout
        self._run_id = run_id or os.environ.get("MLFLOW_RUN_ID")
        self._resuming = self._run_id is not None
        self._client: MlflowClient | None = None
        self._run_lock = threading.Lock()
        where = self.tracking_uri or "the default tracking URI"
        self._pending = PendingItems(f"MLflow ({where})", self._deliver)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None

    @property
    def experiment(self) -> MlflowClient:
        """The MlflowClient of this logger (use it with `logger.run_id`)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def run_id(self) -> str:
        """The MLflow run, created on first use (this asks the server)."""
        with self._run_lock:
            if self._run_id is None:
                self._run_id = self._create_run()
            elif self._resuming:
                self.experiment.update_run(self._run_id, status="RUNNING")
            self._resuming = False
            return self._run_id

    @property
    def version(self) -> str:
        return self.run_id

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        flat = flatten_hparams(params)
        self._enqueue({"params": {_key(name): str(value)[:_PARAM_VALUE_LIMIT] for name, value in flat.items()}})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        timestamp = int(time.time() * 1000)
        self._enqueue({"step": step, "time": timestamp, "metrics": {_key(name): float(v) for name, v in metrics.items()}})

    def log_checkpoint(self, path: str) -> None:
        if self.log_checkpoints:
            self._enqueue({"artifact": os.path.abspath(path), "artifact_path": CHECKPOINT_ARTIFACT_PATH})

    def on_fit_end(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        """With log_model=True: the trained weights as the run's `model/model.pt` artifact (rank zero)."""
        if self.log_model and trainer.is_global_zero:
            directory = os.path.join(self.save_dir, f"mlflow_model_{self._run_id or 'run'}")
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, "model.pt")
            torch.save(trainer.strategy.module_state_dict(), path)
            self._enqueue({"artifact": path, "artifact_path": MODEL_ARTIFACT_PATH})

    def save(self) -> None:
        """Ask the sender to deliver now; never waits for the server."""
        self._wake.set()

    def finalize(self, status: str) -> None:
        """Deliver what is queued (up to finalize_timeout seconds), then close the run with its status."""
        if self._sender is not None:
            self._stop.set()
            self._wake.set()
            self._sender.join(self.finalize_timeout)
            self._sender = None
        if len(self._pending):
            run = self._run_id or "unstarted"
            self._pending.spill(os.path.join(self.save_dir, f"mlflow_undelivered_{run}.jsonl"))
            return
        if self._run_id is not None:
            try:
                self.experiment.set_terminated(self._run_id, status=RUN_STATUS.get(status, "FINISHED"))
            except Exception as error:  # the server went away at the very end: the run stays RUNNING
                rank_zero_warn(f"MLflow run {self._run_id} could not be marked {status}: {error}")

    def state_dict(self) -> dict[str, Any]:
        """The run id; if the sender has not created the run yet, it is created here."""
        if self._run_id is None:
            try:
                self.run_id
            except Exception as error:  # server down since the start: this checkpoint cannot name the run
                rank_zero_warn(f"MLflow: no run yet ({error}); a training resumed from this checkpoint starts a new run")
        return {"run_id": self._run_id, "experiment_name": self.experiment_name, "tracking_uri": self.tracking_uri}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("run_id") and state.get("tracking_uri") == self.tracking_uri:
            self._run_id, self._resuming = state["run_id"], True

    # -- delivery (background thread) ---------------------------------------------------------
    def _enqueue(self, item: Item) -> None:
        self._pending.add(item)
        if self._sender is None:
            self._stop.clear()
            self._sender = threading.Thread(target=self._send_loop, name="trellis-mlflow-sender", daemon=True)
            self._sender.start()

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            delivered = self._pending.flush()
            if self._stop.is_set() and (delivered or not len(self._pending)):
                return
            if self._stop.is_set():
                time.sleep(min(self.flush_interval, 0.5))

    def _deliver(self, items: list[Item]) -> None:
        """Send items in MLflow batches; repeating a chunk is harmless (MLflow drops duplicate metric rows)."""
        from mlflow.entities import Metric, Param

        run_id = self.run_id
        client = self.experiment
        params = [Param(name, value) for item in items if "params" in item for name, value in item["params"].items()]
        metrics = [
            Metric(name, value, item["time"], item["step"])
            for item in items if "metrics" in item for name, value in item["metrics"].items()
        ]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start:start + _PARAMS_PER_BATCH])
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + _METRICS_PER_BATCH])
        for item in items:
            if "artifact" in item and os.path.exists(item["artifact"]):  # a checkpoint since removed is skipped
                client.log_artifact(run_id, item["artifact"], item["artifact_path"])

    def _create_run(self) -> str:
        client = self.experiment
        experiment = client.get_experiment_by_name(self.experiment_name)
        experiment_id = (
            experiment.experiment_id if experiment is not None
            else client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
        )
        return client.create_run(experiment_id, run_name=self.run_name, tags=self.tags).info.run_id


def _key(name: str) -> str:
    """MLflow keys take letters, digits and _-./ and spaces; anything else becomes "_"."""
    return _INVALID_KEY_CHARACTERS.sub("_", str(name))
