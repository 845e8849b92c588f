"""CSV logger: <save_dir>/<name>/version_N/metrics.csv and hparams.yaml."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from typing import Any

import yaml

from trellis.roles import Logger
from trellis.utils.hparams import plain_value
from trellis.utils.rank_zero import global_rank
from trellis.utils.run_directory import VersionedRunDirectory

TRELLIS_PLUGIN_API = 1

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"


class CSVLogger(VersionedRunDirectory, Logger):
    """Rows of (step, epoch, metrics...), flushed every `flush_logs_every_n_steps` rows.

    New metric names add columns (the file is rewritten with the wider header). The version directory
    travels in checkpoints: a resumed run appends to the same file and drops the rows of steps after the
    checkpoint's global step (the resumed run logs those again), so no step is duplicated or missing.
    """

    name = "csv"

    def __init__(
        self,
        save_dir: str | os.PathLike = ".",
        name: str = "trellis_logs",
        version: int | str | None = None,
        flush_logs_every_n_steps: int = 50,
    ) -> None:
        self.save_dir = os.fspath(save_dir)
        self.run_name = name
        self._version = version
        self.flush_every = max(1, flush_logs_every_n_steps)
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = []
        self._rows_written = 0

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.log_dir, METRICS_FILE)

    @property
    def experiment(self) -> CSVLogger:
        return self

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        with open(os.path.join(self.log_dir, HPARAMS_FILE), "w") as file:
            yaml.safe_dump({key: plain_value(value) for key, value in params.items()}, file)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        row = {"step": step, **metrics}
        self._rows.append(row)
        if len(self._rows) >= self.flush_every:
            self.save()

    def save(self) -> None:
        if not self._rows:
            return
        os.makedirs(self.log_dir, exist_ok=True)
        existing = None
        if not self._columns and os.path.exists(self.metrics_path):
            self._columns, existing = self._read()
        new_columns = [key for row in self._rows for key in row if key not in self._columns]
        if new_columns or not os.path.exists(self.metrics_path):
            previous = existing if existing is not None else self._read()[1]
            self._columns = _ordered(self._columns + list(dict.fromkeys(new_columns)))
            self._write(previous + self._rows, mode="w")
            self._rows_written = len(previous)
        else:
            self._write(self._rows, mode="a")
        self._rows_written += len(self._rows)
        self._rows.clear()

    def finalize(self, status: str) -> None:
        self.save()

    def state_dict(self) -> dict[str, Any]:
        self.save()  # everything up to the checkpoint is on disk before the checkpoint exists
        return {"version": self.version, "save_dir": self.save_dir, "name": self.run_name, "rows": self._rows_written}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the checkpoint's run: rows written after the checkpoint are dropped (the resumed run
        writes them again), so no row is duplicated or missing."""
        if state.get("save_dir") != self.save_dir or state.get("name") != self.run_name:
            return
        self._version = state["version"]
        self._rows_written = state["rows"]
        if global_rank() == 0 and os.path.exists(self.metrics_path):  # other ranks must not race to rewrite it
            self._columns, rows = self._read()
            self._write(rows[: self._rows_written], mode="w")

    def _read(self) -> tuple[list[str], list[dict[str, Any]]]:
        """The file's columns and its rows (without empty cells)."""
        if not os.path.exists(self.metrics_path):
            return [], []
        with open(self.metrics_path, newline="") as file:
            reader = csv.DictReader(file)
            rows = [{key: value for key, value in row.items() if value != ""} for row in reader]
            return list(reader.fieldnames or []), rows

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        """Append rows, or rewrite the file atomically (a kill mid-rewrite leaves the old file whole)."""
        target = self.metrics_path if mode == "a" else self.metrics_path + ".tmp"
        with open(target, mode, newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self._columns)
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)
            file.flush()
            os.fsync(file.fileno())
        if mode == "w":
            os.replace(target, self.metrics_path)


def _ordered(columns: list[str]) -> list[str]:
    """step and epoch first, then metrics in order of appearance."""
    leading = [name for name in ("step", "epoch") if name in columns]
    return leading + [name for name in columns if name not in leading]
