"""The logger role: where hyperparameters, metrics and artifacts go, and the contract a resumed run relies on."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar


class Logger:
    """A metrics backend. The kernel calls it on global rank zero only (`state_dict`/`load_state_dict` on every
    rank: only rank zero may write).

    Never block, never die: `log_*` calls run on the training thread, so they only queue (serialization and
    I/O belong on a background thread: `trellis.utils.background.BackgroundDelivery` is the one the in-tree
    loggers share). Every wait is bounded. A failing backend (a full disk, a server that is down) warns once,
    keeps the items and delivers them later; what could never be delivered is saved to a file or named in a
    warning, never silently dropped.

    The resume contract (the conformance kit's `logger_resume` check holds every logger to it):

    1. `state_dict()` is called while a checkpoint is built. Everything logged before it is written (or, for a
       remote backend, queued and recorded in the state) before the checkpoint exists, and the state names the
       run (its version directory or run id) and the position of the checkpoint in it.
    2. `load_state_dict(state)` continues that run: same version, same backend run, never a new one. What the
       interrupted run wrote after the checkpoint is removed (cut back, purged) or, where the backend cannot
       delete, not written again: the Trainer logs everything after the checkpoint again, and each
       (step, metric) ends up in the run exactly once.
    3. A fit started fresh (no checkpoint) never writes into another run: it gets a new version, except that it
       takes over, from the start, a version whose run was killed before its first checkpoint (nothing could
       resume that one), so a restart after such a kill does not duplicate its rows either.
    4. `read_back()` returns what the backend holds for this run, so the kit can check 1-3.
    """

    name: ClassVar[str] = ""

    @classmethod
    def from_trainer(cls, root_dir: str) -> Logger:
        """Build the logger chosen by name: loggers that take a `save_dir` get the Trainer's default_root_dir."""
        if "save_dir" in inspect.signature(cls).parameters:
            build: Callable[..., Logger] = cls  # a subclass that takes save_dir
            return build(save_dir=root_dir)
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
        """Record the run's hyperparameters, once at the start of each fit."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue one row of metrics at a global step (a fresh dict per call; keep it, do not change it)."""
        raise NotImplementedError

    def log_checkpoint(self, path: str) -> None:
        """Keep a saved checkpoint as an artifact, where the backend keeps artifacts."""

    def save(self) -> None:
        """Deliver what is queued (a bounded wait, or none for a remote backend)."""

    def finalize(self, status: str) -> None:
        """Close the run; status is "success", "failed" or "interrupted". Waits a bounded time for delivery
        and reports what was not delivered; never raises for a backend failure."""
        self.save()

    def state_dict(self) -> dict[str, Any]:
        """The run's identity and the checkpoint's position in it, after making what was logged durable
        (contract point 1)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the run that state_dict described, without what was written after it (contract point 2)."""

    def read_back(self) -> list[tuple[int, str, float]]:
        """(step, metric name, value) of every point the backend holds for this run, after delivering what is
        queued. The conformance kit calls it to check the resume contract; a logger whose backend cannot be
        read back cannot show that it keeps it."""
        raise NotImplementedError(
            f"{type(self).__qualname__} does not implement read_back(): return the (step, name, value) points "
            "your backend holds for this run (read your file back, or query your server)"
        )
