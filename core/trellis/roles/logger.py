"""The logger role: where hyperparameters, metrics and artifacts go."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar


class Logger:
    """A metrics backend. The kernel calls it on global rank zero only.

    A failing backend must never kill training: warn once, keep the metrics, deliver them later or
    say exactly what was lost. Loggers may also implement any lifecycle hook.
    """

    name: ClassVar[str] = ""

    @classmethod
    def from_trainer(cls, root_dir: str) -> Logger:
        """Build the logger chosen by name: loggers that take a `save_dir` get the Trainer's default_root_dir."""
        if "save_dir" in inspect.signature(cls).parameters:
            return cls(save_dir=root_dir)
        return cls()

    @property
    def version(self) -> str | int | None:
        """Run identity inside the backend (a version number, a run id)."""
        return None

    @property
    def log_dir(self) -> str | None:
        """Local directory of this run, where the backend has one."""
        return None

    @property
    def experiment(self) -> Any:
        """The backend's own object (a SummaryWriter, an MLflow client, a wandb run)."""
        return None

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's hyperparameters, once at start."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def log_checkpoint(self, path: str) -> None:
        """Keep a saved checkpoint as an artifact, where the backend keeps artifacts."""

    def save(self) -> None:
        """Flush what is buffered."""

    def finalize(self, status: str) -> None:
        """Close the run; status is "success", "failed" or "interrupted"."""
        self.save()

    def state_dict(self) -> dict[str, Any]:
        """Run identity to checkpoint, so that a resumed training continues the same run."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the run that state_dict described."""
