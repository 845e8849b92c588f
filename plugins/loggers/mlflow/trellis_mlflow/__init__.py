"""MLflow logger: params, batched metrics, checkpoint (and model) artifacts, all sent from a background thread."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from trellis.plugin import BackgroundDelivery, Logger, flatten_hparams, hold_file, rank_zero_warn, release_file
from trellis.plugin import DeliveryItem as Item

TRELLIS_PLUGIN_API = 1

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: Trellis run status -> MLflow run status.
RUN_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
CHECKPOINT_ARTIFACT_PATH = "checkpoints"
MODEL_ARTIFACT_PATH = "model"
#: Tag naming the run independently of the server, so a checkpoint taken before the run existed still finds it.
RUN_KEY_TAG = "trellis.run_key"
#: where checkpoints wait (hard links) for their upload, so that top-k may remove them meanwhile
HELD_FILES = "mlflow_held_checkpoints"
_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
_PARAMS_PER_BATCH = 100
_PARAM_VALUE_LIMIT = 6000
_INVALID_KEY_CHARACTERS = re.compile(r"[^\w\-./ ]")


class MLflowLogger(Logger):
    """One MLflow run per training; its identity travels in checkpoints so a resumed fit continues it.

    Training never waits for the server: log calls queue items, and a background thread creates the run and
    delivers them every `flush_interval` seconds, retrying every `retry_interval` seconds while the server is
    down. Checkpoints wait for delivery only while the server answers (at most `checkpoint_timeout` seconds);
    the run is named by a key chosen here (the `trellis.run_key` tag) until the server has given it an id. At
    the end, `finalize` waits at most `finalize_timeout` seconds; what is still undelivered then is saved in
    `<save_dir>/mlflow_undelivered_<run>.jsonl` and named.

    Without a tracking URI (argument or MLFLOW_TRACKING_URI) runs go to MLflow's default store, as
    `mlflow.get_tracking_uri()` resolves it (a sqlite file, `mlflow.db`, in the working directory).

    Resume: MLflow cannot delete metric points, so a resumed run skips the (metric, step) points that the run
    already received after the checkpoint: each step is in the run's history once.
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
        retry_interval: float = 5.0,
        checkpoint_timeout: float = 5.0,
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
        self.checkpoint_timeout = checkpoint_timeout
        self.finalize_timeout = finalize_timeout
        self.run_key = uuid.uuid4().hex
        self._run_id = run_id or os.environ.get("MLFLOW_RUN_ID")
        self._resuming = self._run_id is not None
        self._run_ready = threading.Event()
        self._client: MlflowClient | None = None
        self._client_lock = threading.Lock()
        self._resolved_uri: str | None = None
        self._step: int | None = None  # the last step logged, and the rows logged at it (for the resume position)
        self._step_rows: list[Mapping[str, float]] = []
        #: the checkpoint's last step and the keys logged at it (step None: the checkpoint came before any row)
        self._resume_position: tuple[int | None, list[str]] | None = None
        self._skip: set[tuple[str, int]] = set()
        #: key -> (step, value) last sent (delivery thread): a row repeating it at the same step (the epoch-end row
        #: repeats `epoch`) sends no second point, which MLflow would keep apart by its timestamp
        self._last_sent: dict[str, tuple[int, float]] = {}
        where = self.tracking_uri or "the default tracking URI"
        self._delivery = BackgroundDelivery(
            f"MLflow ({where})", self._deliver, self._spill_path, interval=flush_interval, retry_interval=retry_interval
        )

    @property
    def experiment(self) -> MlflowClient:
        """The MlflowClient of this logger (use it with `logger.run_id`)."""
        with self._client_lock:
            if self._client is None:
                import mlflow

                self._resolved_uri = self.tracking_uri or mlflow.get_tracking_uri()
                self._client = mlflow.MlflowClient(tracking_uri=self._resolved_uri)
            return self._client

    @property
    def run_id(self) -> str | None:
        """The MLflow run id; waits (at most finalize_timeout seconds) for the background thread to create it."""
        if self._run_id is None:
            self._delivery.wake()
            self._run_ready.wait(self.finalize_timeout)
        return self._run_id

    @property
    def version(self) -> str | None:
        return self.run_id

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        flat = flatten_hparams(params)
        self._delivery.put({"kind": "params", "params": {name: str(value) for name, value in flat.items()}})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._delivery.put({"step": step, "time": time.time(), "metrics": dict(metrics)})
        if step == self._step:
            self._step_rows.append(metrics)
        else:
            self._step, self._step_rows = step, [metrics]

    def log_checkpoint(self, path: str) -> None:
        if self.log_checkpoints:
            held = hold_file(path, os.path.join(self.save_dir, HELD_FILES))
            self._delivery.put({"kind": "artifact", "path": held, "artifact_path": CHECKPOINT_ARTIFACT_PATH})

    def on_fit_end(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        """With log_model=True: the trained weights as the run's `model/model.pt` artifact (rank zero)."""
        if self.log_model and trainer.is_global_zero:
            directory = os.path.join(self.save_dir, f"mlflow_model_{self._run_id or self.run_key}")
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, "model.pt")
            torch.save(trainer.strategy.module_state_dict(), path)
            self._delivery.put({"kind": "artifact", "path": path, "artifact_path": MODEL_ARTIFACT_PATH})

    def save(self) -> None:
        """Ask the background thread to deliver now; never waits for the server."""
        self._delivery.wake()

    def finalize(self, status: str) -> None:
        """Close the run with its status after everything queued; waits at most finalize_timeout seconds."""
        self._delivery.put({"kind": "status", "status": RUN_STATUS.get(status, "FINISHED")})
        self._delivery.close(self.finalize_timeout)

    def state_dict(self) -> dict[str, Any]:
        """The run's identity (its id, or the key it will be found by) and the position of the checkpoint.

        What is queued is delivered first while the server answers (at most checkpoint_timeout seconds); while
        it does not, the checkpoint does not wait: a crash then loses the rows still queued, a normal end saves
        them to the undelivered file.
        """
        if self._run_id is not None and not self._delivery.failing:
            self._delivery.flush(self.checkpoint_timeout)
        keys = sorted({_key(name) for row in self._step_rows for name in row})
        return {
            "run_id": self._run_id, "run_key": self.run_key, "experiment_name": self.experiment_name,
            "tracking_uri": self._resolved_uri or self.tracking_uri, "step": self._step, "keys_at_step": keys,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the checkpoint's run, in the store it lives in (unless a different one was chosen)."""
        uri = state.get("tracking_uri")
        if self.tracking_uri is not None and uri != self.tracking_uri:
            return
        if not (state.get("run_id") or state.get("run_key")):
            return
        self.tracking_uri = self.tracking_uri or uri
        self._run_id = state.get("run_id")
        self.run_key = state.get("run_key") or self.run_key
        self._resuming = True
        if "step" in state:
            self._resume_position = (state["step"], list(state.get("keys_at_step", [])))
        if state.get("step") is not None:
            self._step, self._step_rows = state["step"], [dict.fromkeys(self._resume_position[1], 0.0)]

    def read_back(self) -> list[tuple[int, str, float]]:
        """(step, key, value) of every metric point the server holds for this run."""
        client, run_id = self.experiment, self.run_id
        if run_id is None:
            return []
        return [(point.step, key, point.value) for key in client.get_run(run_id).data.metrics
                for point in client.get_metric_history(run_id, key)]

    # -- the delivery thread ----------------------------------------------------------------------
    def _deliver(self, items: list[Item]) -> None:
        """Send items in MLflow batches; repeating a chunk is harmless (MLflow keeps one of identical points)."""
        from mlflow.entities import Metric, Param

        client = self.experiment
        run_id = self._ensure_run(client)
        last_sent = dict(self._last_sent)  # kept only once the batch is sent: a failed send is retried whole
        params = [Param(_key(name), value[:_PARAM_VALUE_LIMIT])
                  for item in items if item.get("kind") == "params" for name, value in item["params"].items()]
        metrics = [
            Metric(key, float(value), int(item["time"] * 1000), item["step"])
            for item in items if "metrics" in item
            for key, value in ((_key(name), value) for name, value in item["metrics"].items())
            if (key, item["step"]) not in self._skip and _new_point(last_sent, key, item["step"], float(value))
        ]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start:start + _PARAMS_PER_BATCH])
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + _METRICS_PER_BATCH])
        self._last_sent = last_sent
        for item in items:
            if item.get("kind") == "artifact" and os.path.exists(item["path"]):
                client.log_artifact(run_id, item["path"], item["artifact_path"])
                release_file(item["path"], os.path.join(self.save_dir, HELD_FILES))
            elif item.get("kind") == "status":
                client.set_terminated(run_id, status=item["status"])

    def _ensure_run(self, client: MlflowClient) -> str:
        """The run: the checkpoint's, the one tagged with our key, or a new one; a resumed one is RUNNING again."""
        if self._run_id is not None and self._resuming and not _run_exists(client, self._run_id):
            rank_zero_warn(f"MLflow: the checkpoint's run {self._run_id} is not in {self._resolved_uri}; the resumed "
                           "training is logged to a new run there")
            self._run_id, self._resume_position = None, None
        if self._run_id is None:
            experiment = client.get_experiment_by_name(self.experiment_name)
            experiment_id = (
                experiment.experiment_id if experiment is not None
                else client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
            )
            tagged = client.search_runs(
                [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{self.run_key}'", max_results=1
            )
            run = tagged[0] if tagged else client.create_run(
                experiment_id, run_name=self.run_name, tags={**self.tags, RUN_KEY_TAG: self.run_key}
            )
            self._run_id = run.info.run_id
        self._run_ready.set()
        if self._resuming:
            client.update_run(self._run_id, status="RUNNING")
            self._skip = self._points_after_checkpoint(client)
            self._resuming = False
        return self._run_id

    def _points_after_checkpoint(self, client: MlflowClient) -> set[tuple[str, int]]:
        """(key, step) points the interrupted run sent after the checkpoint: the resumed run does not send them."""
        if self._resume_position is None:
            return set()
        step, keys_at_step = self._resume_position
        return {
            (key, point.step) for key in client.get_run(self._run_id).data.metrics
            for point in client.get_metric_history(self._run_id, key)
            if step is None or point.step > step or (point.step == step and key not in keys_at_step)
        }

    def _spill_path(self) -> str:
        return os.path.join(self.save_dir, f"mlflow_undelivered_{self._run_id or self.run_key}.jsonl")


def _new_point(last_sent: dict[str, tuple[int, float]], key: str, step: int, value: float) -> bool:
    """Whether (step, value) differs from what `key` last sent; records it."""
    if last_sent.get(key) == (step, value):
        return False
    last_sent[key] = (step, value)
    return True


def _run_exists(client: MlflowClient, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _key(name: str) -> str:
    """MLflow keys take letters, digits and _-./ and spaces; anything else becomes "_"."""
    return _INVALID_KEY_CHARACTERS.sub("_", str(name))
