"""CSV logger: <save_dir>/<name>/version_N/metrics.csv and hparams.yaml, written by a background thread."""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Mapping
from typing import Any

import yaml

from trellis.plugin import BackgroundDelivery, Logger, RunDirectory, global_rank, plain_value, rank_zero_warn
from trellis.plugin import DeliveryItem as Item

TRELLIS_PLUGIN_API = 1

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"
UNDELIVERED_FILE = "undelivered.jsonl"


class CSVLogger(Logger):
    """Rows of (step, epoch, metrics...); new metric names add columns (the file is rewritten, wider).

    `log_metrics` only queues the row: a background thread writes rows, in order, every `flush_interval`
    seconds or `flush_logs_every_n_steps` rows, whichever comes first, and all of them before every
    checkpoint. A kill loses at most that window, never a row logged before the last checkpoint. A full disk
    warns once and keeps the rows until they can be written; rows never written are named in a warning.

    Resume: the version directory travels in checkpoints; a resumed run keeps the rows logged before the
    checkpoint and drops the rest (the resumed run logs them again), so each row is in the file once.
    """

    name = "csv"

    def __init__(
        self,
        save_dir: str | os.PathLike = ".",
        name: str = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
        flush_interval: float = 0.5,
        flush_timeout: float = 10.0,
    ) -> None:
        self.save_dir = os.fspath(save_dir)
        self.run_name = name
        #: put before every metric name, joined with "-" (Lightning's `prefix`)
        self.prefix = prefix
        self.flush_every = max(1, flush_logs_every_n_steps)
        self.flush_timeout = flush_timeout
        self._run = RunDirectory(self.save_dir, name, version, owned=(METRICS_FILE, HPARAMS_FILE))
        self._delivery = BackgroundDelivery(
            f"CSV logger ({self.save_dir})", self._write, lambda: os.path.join(self.log_dir, UNDELIVERED_FILE),
            interval=flush_interval,
        )
        self._rows_logged = 0
        self._columns: list[str] = []  # of the file; read and written on the delivery thread only
        self._file_size: int | None = None

    @property
    def version(self) -> int | str:
        return self._run.version

    @property
    def log_dir(self) -> str:
        return self._run.path

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.log_dir, METRICS_FILE)

    @property
    def experiment(self) -> CSVLogger:
        return self

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._delivery.put({"kind": "hparams", "params": {key: plain_value(value) for key, value in params.items()}})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self.prefix:
            metrics = {f"{self.prefix}-{name}": value for name, value in metrics.items()}
        self._delivery.put({"step": step, "metrics": metrics})
        self._rows_logged += 1
        if not self._rows_logged % self.flush_every:
            self._delivery.wake()

    def save(self) -> None:
        """Write every row logged so far (waits at most flush_timeout seconds)."""
        self._delivery.flush(self.flush_timeout)

    def finalize(self, status: str) -> None:
        self._delivery.close(self.flush_timeout)
        self._run.release(status)

    def state_dict(self) -> dict[str, Any]:
        """Every row logged so far is written before the checkpoint exists; the checkpoint counts them."""
        self.save()
        self._run.mark_checkpointed()
        return {"version": self.version, "save_dir": self.save_dir, "name": self.run_name, "rows": self._rows_logged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the checkpoint's run: rows written after the checkpoint are dropped (the resumed run writes
        them again), so no row is duplicated or missing."""
        if state.get("save_dir") != self.save_dir or state.get("name") != self.run_name:
            return
        self.save()
        self._run.continue_run(state["version"])
        self._rows_logged = state["rows"]
        self._columns, self._file_size = [], None
        if global_rank() == 0 and os.path.exists(self.metrics_path):  # other ranks must not race to rewrite it
            self._truncate(state["rows"])

    def read_back(self) -> list[tuple[int, str, float]]:
        """(step, name, value) of every cell in metrics.csv, in file order."""
        self.save()
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path, newline="") as file:
            return [(int(row["step"]), key, float(value)) for row in csv.DictReader(file)
                    for key, value in row.items() if key != "step" and value != ""]

    # -- the delivery thread ----------------------------------------------------------------------
    def _write(self, items: list[Item]) -> None:
        self._run.claim()
        rows = []
        for item in items:
            if "metrics" in item:
                rows.append({"step": item["step"], **item["metrics"]})
            else:
                self._write_hparams(item["params"])
        if rows:
            self._write_rows(rows)

    def _write_hparams(self, params: dict[str, Any]) -> None:
        path = os.path.join(self.log_dir, HPARAMS_FILE)
        with open(path + ".tmp", "w") as file:
            yaml.safe_dump(params, file)
        os.replace(path + ".tmp", path)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append the rows, or rewrite the file with a wider header; a failed write leaves the file as it was."""
        path = self.metrics_path
        if self._file_size is None:
            self._columns = _header(path)
            self._file_size = os.path.getsize(path) if self._columns else 0
        new_columns = list(dict.fromkeys(key for row in rows for key in row if key not in self._columns))
        if new_columns:
            columns = _ordered(self._columns + new_columns)
            earlier = _rows(path, self._file_size) if self._columns else []
            text = _csv_text(columns, earlier + rows, header=True)
            try:
                with open(path + ".tmp", "w", newline="") as file:
                    file.write(text)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(path + ".tmp", path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.remove(path + ".tmp")
                raise
            self._columns, self._file_size = columns, len(text.encode())
            return
        data = _csv_text(self._columns, rows, header=False).encode()
        with open(path, "rb+") as file:
            file.truncate(self._file_size)  # a write that failed half-way leaves no partial row behind
            file.seek(self._file_size)
            try:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            except OSError:
                file.truncate(self._file_size)
                raise
        self._file_size += len(data)

    def _truncate(self, rows: int) -> None:
        """Keep the header and the first `rows` rows, in place (no space needed on a full disk)."""
        try:
            with open(self.metrics_path, "rb+") as file:
                offset, found = _end_of_records(file, rows + 1)
                file.truncate(offset)
        except OSError as error:
            rank_zero_warn(f"CSV logger: could not drop the rows written after the checkpoint from "
                           f"{self.metrics_path} ({error}); rows after the checkpoint may appear twice.")
            return
        if found < rows + 1:
            rank_zero_warn(
                f"CSV logger: {self.metrics_path} holds {max(found - 1, 0)} of the {rows} rows logged before the "
                f"checkpoint; the last {rows + 1 - found} never reached the file (see undelivered.jsonl beside it)."
            )


def _rows(path: str, size: int) -> list[dict[str, str]]:
    """The rows in the first `size` bytes of the file (what was written whole)."""
    with open(path, "rb") as file:
        text = file.read(size).decode()
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _header(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        return next(csv.reader(file), [])


def _csv_text(columns: list[str], rows: list[dict[str, Any]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _end_of_records(file: Any, records: int) -> tuple[int, int]:
    """Byte offset after the first `records` CSV records of a binary file (quoted newlines respected), and
    how many records there were up to that point."""
    offset = 0

    def lines():
        nonlocal offset
        for line in file:
            offset += len(line)
            yield line.decode()

    reader = csv.reader(lines())
    found = 0
    for found, _ in enumerate(reader, start=1):
        if found == records:
            return offset, found
    return offset, found


def _ordered(columns: list[str]) -> list[str]:
    """step and epoch first, then metrics in order of appearance."""
    leading = [name for name in ("step", "epoch") if name in columns]
    return leading + [name for name in columns if name not in leading]
