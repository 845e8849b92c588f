"""Weights & Biases logger: config from hparams, metrics at their global step, checkpoints as artifacts."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from trellis.roles import Logger
from trellis.utils.hparams import plain_value
from trellis.utils.pending import Item, PendingItems

TRELLIS_PLUGIN_API = 1

#: Trellis run status -> the exit code wandb records for the run.
EXIT_CODES = {"success": 0, "failed": 1, "interrupted": 255}
INIT_RETRY_SECONDS = 60.0


class WandbLogger(Logger):
    """One wandb run; its id is fixed up front and travels in checkpoints, so a resumed fit continues it.

    Settings not passed here come from wandb's own environment (WANDB_MODE, WANDB_PROJECT, WANDB_NAME, ...).
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
        **init_kwargs: Any,
    ) -> None:
        self.project = project
        self.run_name = name
        self._id = id or os.environ.get("WANDB_RUN_ID")
        self.save_dir = os.fspath(save_dir or os.environ.get("WANDB_DIR") or ".")
        self.tags = tags
        self.log_checkpoints = log_checkpoints
        self.init_kwargs = init_kwargs
        self._run: Any = None
        self._next_init = 0.0
        self._pending = PendingItems("wandb", self._deliver, chunk_size=1)

    @classmethod
    def from_trainer(cls, root_dir: str) -> WandbLogger:
        return cls(save_dir=os.environ.get("WANDB_DIR") or root_dir)

    @property
    def version(self) -> str:
        """The run id, chosen before the run starts (wandb's own id format)."""
        if self._id is None:
            from wandb.sdk.lib.runid import generate_id

            self._id = generate_id()
        return self._id

    @property
    def experiment(self) -> Any:
        """The wandb Run (starts it on first use)."""
        if self._run is None:
            if time.monotonic() < self._next_init:
                raise RuntimeError("wandb did not start; the next attempt waits for the retry interval")
            import wandb

            os.makedirs(self.save_dir, exist_ok=True)
            self._next_init = time.monotonic() + INIT_RETRY_SECONDS
            self._run = wandb.init(
                project=self.project, name=self.run_name, id=self.version, resume="allow", dir=self.save_dir,
                tags=self.tags, **self.init_kwargs,
            )
        return self._run

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._pending.add({"config": plain_value(dict(params))})
        self._pending.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._pending.add({"step": step, "metrics": dict(metrics)})
        self._pending.flush()

    def log_checkpoint(self, path: str) -> None:
        if self.log_checkpoints:
            self._pending.add({"artifact": os.path.abspath(path)})
            self._pending.flush()

    def save(self) -> None:
        self._pending.flush()

    def finalize(self, status: str) -> None:
        self._next_init = 0.0
        self._pending.flush()
        if len(self._pending):
            self._pending.spill(os.path.join(self.save_dir, f"wandb_undelivered_{self.version}.jsonl"))
        if self._run is not None:
            self._run.finish(exit_code=EXIT_CODES.get(status, 1))
            self._run = None

    def state_dict(self) -> dict[str, Any]:
        return {"id": self.version, "project": self.project}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("id") and state.get("project") == self.project and self._run is None:
            self._id = state["id"]

    def _deliver(self, items: list[Item]) -> None:
        run = self.experiment
        for item in items:
            if "metrics" in item:
                run.log(item["metrics"], step=item["step"])
            elif "config" in item:
                run.config.update(item["config"], allow_val_change=True)
            elif os.path.exists(item["artifact"]):  # a checkpoint removed since (top-k) is skipped
                import wandb

                artifact = wandb.Artifact(f"model-{run.id}", type="model")
                artifact.add_file(item["artifact"])
                run.log_artifact(artifact, aliases=["latest"])
