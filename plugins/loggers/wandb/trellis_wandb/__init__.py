"""Weights & Biases logger: config from hparams, metrics at their logged step, checkpoints as artifacts."""

from __future__ import annotations

import glob
import os
import secrets
import string
import threading
from collections.abc import Mapping
from typing import Any

from trellis.plugin import BackgroundDelivery, Logger, hold_file, plain_value, release_file
from trellis.plugin import DeliveryItem as Item

TRELLIS_PLUGIN_API = 1

#: Trellis run status -> the exit code wandb records for the run.
EXIT_CODES = {"success": 0, "failed": 1, "interrupted": 255}
_ID_ALPHABET = string.ascii_lowercase + string.digits
#: where checkpoints wait (hard links) for their upload, so that top-k may remove them meanwhile
HELD_FILES = "wandb_held_checkpoints"


class WandbLogger(Logger):
    """One wandb run; its id is fixed up front and travels in checkpoints, so a resumed fit continues it.

    Settings not passed here come from wandb's own environment (WANDB_MODE, WANDB_PROJECT, WANDB_NAME, ...).
    Training never waits for wandb: log calls queue items, and a background thread starts the run and hands
    them to it every `flush_interval` seconds, retrying every `retry_interval` seconds when wandb cannot
    start. `finalize` waits at most `finalize_timeout` seconds; what is left is saved and named.

    Resume: wandb keeps the first value logged at a step and ignores steps below the run's current one, so
    the resumed run skips the steps the run already holds (online); offline runs are merged the same way by
    `wandb sync`, and `read_back` reads them so.
    """

    name = "wandb"

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        id: str | None = None,
        save_dir: str | os.PathLike | None = None,
        tags: list[str] | None = None,
        log_checkpoints: bool = True,
        flush_interval: float = 0.5,
        retry_interval: float = 60.0,
        checkpoint_timeout: float = 5.0,
        finalize_timeout: float = 60.0,
        **init_kwargs: Any,
    ) -> None:
        self.project = project
        self.run_name = name
        self._id = id or os.environ.get("WANDB_RUN_ID") or "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
        self.save_dir = os.fspath(save_dir or os.environ.get("WANDB_DIR") or ".")
        self.tags = tags
        self.log_checkpoints = log_checkpoints
        self.checkpoint_timeout = checkpoint_timeout
        self.finalize_timeout = finalize_timeout
        self.init_kwargs = init_kwargs
        self._run: Any = None
        self._run_lock = threading.Lock()
        self._last_step = -1  # the delivery thread's: wandb drops rows below the step it is at
        self._delivery = BackgroundDelivery(
            "wandb", self._deliver, lambda: os.path.join(self.save_dir, f"wandb_undelivered_{self.version}.jsonl"),
            interval=flush_interval, retry_interval=retry_interval,
        )

    @classmethod
    def from_trainer(cls, root_dir: str) -> WandbLogger:
        return cls(save_dir=os.environ.get("WANDB_DIR") or root_dir)

    @property
    def version(self) -> str:
        """The run id, chosen before the run starts (wandb's format: 8 lowercase letters and digits)."""
        return self._id

    @property
    def experiment(self) -> Any:
        """The wandb Run (starts it on first use)."""
        with self._run_lock:
            if self._run is None:
                import wandb

                os.makedirs(self.save_dir, exist_ok=True)
                self._run = wandb.init(
                    project=self.project, name=self.run_name, id=self.version, resume="allow", dir=self.save_dir,
                    tags=self.tags, **self.init_kwargs,
                )
                self._last_step = max(self._last_step, self._run.starting_step)
            return self._run

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._delivery.put({"kind": "config", "config": plain_value(dict(params))})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._delivery.put({"step": step, "metrics": dict(metrics)})

    def log_checkpoint(self, path: str) -> None:
        if self.log_checkpoints:
            self._delivery.put({"kind": "artifact", "path": hold_file(path, os.path.join(self.save_dir, HELD_FILES))})

    def save(self) -> None:
        """Ask the background thread to deliver now; never waits for wandb."""
        self._delivery.wake()

    def finalize(self, status: str) -> None:
        self._delivery.put({"kind": "finish", "exit_code": EXIT_CODES.get(status, 1)})
        self._delivery.close(self.finalize_timeout)

    def state_dict(self) -> dict[str, Any]:
        """The run id; rows queued so far are handed to wandb first while it takes them (at most
        checkpoint_timeout seconds), not while it fails."""
        if self._run is not None and not self._delivery.failing:
            self._delivery.flush(self.checkpoint_timeout)
        return {"id": self.version, "project": self.project}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("id") and state.get("project") == self.project and self._run is None:
            self._id = state["id"]

    def read_back(self) -> list[tuple[int, str, float]]:
        """(step, key, value) of what the run holds: the online history, or the offline runs merged as
        `wandb sync` merges them (the first value logged at a step wins; a later run's lower steps are ignored)."""
        from trellis_wandb.transaction_log import merged_history

        self._delivery.flush(self.finalize_timeout)
        pattern = os.path.join(self.save_dir, "wandb", f"offline-run-*-{self.version}", f"run-{self.version}.wandb")
        paths = sorted(glob.glob(pattern))
        if paths:
            return merged_history(paths)
        import wandb

        run = wandb.Api().run(f"{self.experiment.entity}/{self.experiment.project}/{self.version}")
        return [(row["_step"], key, value) for row in run.scan_history()
                for key, value in row.items() if not key.startswith("_") and value is not None]

    # -- the delivery thread ----------------------------------------------------------------------
    def _deliver(self, items: list[Item]) -> None:
        """Rows of one step go to wandb in one log call; a row below wandb's current step would be dropped."""
        run = self.experiment
        row: dict[str, Any] = {}
        for index, item in enumerate(items):
            if "metrics" in item:
                if item["step"] < self._last_step:
                    continue
                row.update(item["metrics"])
                following = items[index + 1] if index + 1 < len(items) else None
                if following is None or following.get("step") != item["step"]:
                    run.log(row, step=item["step"])
                    self._last_step, row = item["step"], {}
            elif item["kind"] == "config":
                run.config.update(item["config"], allow_val_change=True)
            elif item["kind"] == "artifact":
                self._log_artifact(run, item)
            else:
                run.finish(exit_code=item["exit_code"])
                with self._run_lock:
                    self._run = None

    def _log_artifact(self, run: Any, item: Item) -> None:
        """The checkpoint as a new version of the run's model artifact, from the link held since it was saved."""
        import wandb

        if not os.path.exists(item["path"]):
            return
        artifact = wandb.Artifact(f"model-{run.id}", type="model")
        artifact.add_file(item["path"], policy="immutable")
        run.log_artifact(artifact, aliases=["latest"])
        release_file(item["path"], os.path.join(self.save_dir, HELD_FILES))
