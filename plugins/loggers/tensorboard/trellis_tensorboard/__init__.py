"""TensorBoard logger: one event file (and hparams.yaml, as Lightning's) per run in <save_dir>/<name>/version_N,
written by a background thread."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trellis.plugin import (
    BackgroundDelivery,
    Logger,
    RunDirectory,
    flatten_hparams,
    global_rank,
    plain_value,
    rank_zero_warn,
)
from trellis.plugin import DeliveryItem as Item
from trellis_tensorboard.event_file import EventFile, frame, keep_records, new_file_name, records

TRELLIS_PLUGIN_API = 1

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

UNDELIVERED_FILE = "undelivered.jsonl"
EVENT_FILES = "events.out.tfevents.*"
#: the hyperparameters as Lightning's TensorBoardLogger writes them next to the events (an empty dict without any).
HPARAMS_FILE = "hparams.yaml"
#: Trellis run status -> HParams session status (names in tensorboard.plugins.hparams.api_pb2).
_STATUS = {"success": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "interrupted": "STATUS_ABORTED"}


class TensorBoardLogger(Logger):
    """Scalars at their logged step, hparams with the run's metric names, and a SummaryWriter for the rest.

    `log_metrics` only queues the row: a background thread serializes rows into one event file, in order,
    every `flush_secs` seconds or `max_queue` rows, whichever comes first, and all of them before every
    checkpoint. What `experiment` (a SummaryWriter) adds goes through the same queue into the same file. A
    full disk warns once and keeps the events until they can be written; a failed write leaves no torn record.

    Resume: the version directory and its event file travel in checkpoints; a resumed run cuts the file
    back to the events logged before the checkpoint and appends from there, so each step is in it once (the
    row and validation of the batch the checkpoint was taken in, logged after it, included), for every
    TensorBoard reader.
    """

    name = "tensorboard"

    def __init__(
        self,
        save_dir: str | os.PathLike = ".",
        name: str = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_secs: float = 0.5,
        max_queue: int = 100,
        flush_timeout: float = 10.0,
    ) -> None:
        self.save_dir = os.fspath(save_dir)
        self.run_name = name
        #: put before every metric name, joined with "-" (Lightning's `prefix`)
        self.prefix = prefix
        self.max_queue = max(1, max_queue)
        self.flush_timeout = flush_timeout
        self._run = RunDirectory(self.save_dir, name, version, owned=(EVENT_FILES, HPARAMS_FILE))
        self._delivery = BackgroundDelivery(
            f"TensorBoard ({self.save_dir})", self._write, lambda: os.path.join(self.log_dir, UNDELIVERED_FILE),
            interval=flush_secs,
        )
        self._file_name: str | None = None
        self._file: EventFile | None = None  # the delivery thread's
        self._events_logged = 0
        self._writer: SummaryWriter | None = None
        self._hparams: dict[str, Any] | None = None
        #: what hparams.yaml holds; replaced (never changed in place) on the caller's thread.
        self._hparams_file: dict[str, Any] = {}
        self._hparams_file_written = False  # the delivery thread's
        self._metric_names: dict[str, None] = {}

    @property
    def version(self) -> int | str:
        return self._run.version

    @property
    def log_dir(self) -> str:
        return self._run.path

    @property
    def experiment(self) -> SummaryWriter:
        """A SummaryWriter of this run (add_image, add_histogram, add_graph, ...), writing into its event file."""
        if self._writer is None:
            self._writer = _run_summary_writer(self)
        return self._writer

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._hparams = {str(key): _scalar(value) for key, value in flatten_hparams(params).items()}
        self._hparams_file = {str(key): plain_value(value) for key, value in params.items()}
        self._delivery.put({"kind": "hparams_file"})
        if self._events_logged == 0:  # a resumed run's file has its session start already
            self._put({"kind": "hparams", "phase": "start"})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        prefix = self.prefix
        named = {f"{prefix}-{name}": value for name, value in metrics.items()} if prefix else dict(metrics)
        self._delivery.put({"step": step, "time": time.time(), "metrics": named})
        self._events_logged += 1
        if not self._events_logged % self.max_queue:
            self._delivery.wake()

    def save(self) -> None:
        """Write every event logged so far (waits at most flush_timeout seconds)."""
        self._delivery.flush(self.flush_timeout)

    def finalize(self, status: str) -> None:
        if self._hparams is not None:
            self._put({"kind": "hparams", "phase": "experiment"})
            self._put({"kind": "hparams", "phase": "end", "status": status})
        self._delivery.close(self.flush_timeout)
        self._run.release(status)

    def state_dict(self) -> dict[str, Any]:
        """Every event logged so far is written before the checkpoint exists; the checkpoint counts them."""
        self.save()
        self._run.mark_checkpointed()
        return {
            "version": self.version, "save_dir": self.save_dir, "name": self.run_name,
            "events_file": self._file_name, "events": self._events_logged, "metric_names": list(self._metric_names),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("save_dir") != self.save_dir or state.get("name") != self.run_name:
            return
        self.save()
        self._run.continue_run(state["version"])
        self._file_name, self._file = state.get("events_file"), None
        self._events_logged = state.get("events", 0)
        self._metric_names = dict.fromkeys(state.get("metric_names", []))
        if global_rank() == 0 and self._file_name and os.path.exists(self._events_path()):
            self._cut_to_checkpoint()

    def read_back(self) -> list[tuple[int, str, float]]:
        """(step, tag, value) of every scalar in this run's event file, in file order."""
        from tensorboard.compat.proto.event_pb2 import Event

        self.save()
        if self._file_name is None or not os.path.exists(self._events_path()):
            return []
        rows = []
        for data in records(self._events_path()):
            event = Event.FromString(data)
            rows += [(event.step, value.tag, value.simple_value) for value in event.summary.value
                     if value.WhichOneof("value") == "simple_value"]
        return rows

    def _put(self, item: Item) -> None:
        self._delivery.put(item)
        self._events_logged += 1

    def _events_path(self) -> str:
        return os.path.join(self.log_dir, self._file_name)

    def _cut_to_checkpoint(self) -> None:
        """Keep the file's version record and the events logged before the checkpoint (no space needed)."""
        try:
            kept = keep_records(self._events_path(), self._events_logged + 1)
        except OSError as error:
            rank_zero_warn(f"TensorBoard: could not cut {self._events_path()} back to the checkpoint ({error}); "
                           "events after the checkpoint may appear twice.")
            return
        if kept < self._events_logged + 1:
            rank_zero_warn(
                f"TensorBoard: {self._events_path()} holds {max(kept - 1, 0)} of the {self._events_logged} events "
                f"logged before the checkpoint; the last {self._events_logged + 1 - kept} never reached the file."
            )

    # -- the delivery thread ----------------------------------------------------------------------
    def _write(self, items: list[Item]) -> None:
        self._run.claim()
        if self._file is None:
            self._file = self._open_file()
        events = [item for item in items if item.get("kind") != "hparams_file"]
        if len(events) < len(items) or not (
                self._hparams_file_written or os.path.exists(os.path.join(self.log_dir, HPARAMS_FILE))):
            self._write_hparams_file()
        if events:
            self._file.append(b"".join(frame(self._serialize(item)) for item in events))

    def _write_hparams_file(self) -> None:
        import yaml

        path = os.path.join(self.log_dir, HPARAMS_FILE)
        with open(path + ".tmp", "w") as file:
            yaml.safe_dump(self._hparams_file, file)
        os.replace(path + ".tmp", path)
        self._hparams_file_written = True

    def _open_file(self) -> EventFile:
        """This run's event file: the resumed one, or a new one that starts with the file version record."""
        from tensorboard.compat.proto.event_pb2 import Event

        if self._file_name is not None and os.path.exists(self._events_path()):
            return EventFile(self._events_path())
        self._file_name = new_file_name()
        file = EventFile(self._events_path())
        file.append(frame(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()))
        return file

    def _serialize(self, item: Item) -> bytes:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        if "metrics" in item:
            for metric_name in item["metrics"]:
                self._metric_names.setdefault(metric_name)
            values = [Summary.Value(tag=tag, simple_value=value) for tag, value in item["metrics"].items()]
            return Event(wall_time=item["time"], step=item["step"], summary=Summary(value=values)).SerializeToString()
        if item["kind"] == "event":
            return item["event"]
        return Event(wall_time=time.time(), summary=self._hparams_summary(item)).SerializeToString()

    def _hparams_summary(self, item: Item) -> Any:
        """Session start at log_hyperparams; at the end, the experiment with the metric names and the status."""
        from torch.utils.tensorboard.summary import hparams

        experiment, session_start, _ = hparams(self._hparams, dict.fromkeys(self._metric_names, 0.0))
        if item["phase"] == "start":
            return session_start
        if item["phase"] == "experiment":
            return experiment
        return _session_end(item["status"])


def _run_summary_writer(logger: TensorBoardLogger) -> SummaryWriter:
    """A SummaryWriter whose events join the logger's queue, so they land in the run's one event file in order."""
    from torch.utils.tensorboard import FileWriter, SummaryWriter

    class QueuedEvents:
        """The part of tensorboard's EventFileWriter that torch's FileWriter uses."""

        def get_logdir(self) -> str:
            return logger.log_dir

        def add_event(self, event: Any) -> None:
            logger._put({"kind": "event", "event": event.SerializeToString()})

        def flush(self) -> None:
            logger.save()

        def close(self) -> None:
            logger.save()

        def reopen(self) -> None:
            pass

    class RunFileWriter(FileWriter):
        def __init__(self) -> None:  # no EventFileWriter: it would open a second event file
            self.event_writer = QueuedEvents()

    class RunSummaryWriter(SummaryWriter):
        def _get_file_writer(self) -> FileWriter:
            if self.file_writer is None:
                self.file_writer = RunFileWriter()
                self.all_writers = {logger.log_dir: self.file_writer}
            return self.file_writer

    return RunSummaryWriter(log_dir=logger.log_dir)


def _session_end(status: str) -> Any:
    """The HParams session end with the run's status (torch's helper always says success)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from tensorboard.plugins.hparams.metadata import PLUGIN_NAME, SESSION_END_INFO_TAG

    content = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=getattr(api_pb2, _STATUS[status])), version=0
    )
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=metadata)])


def _scalar(value: Any) -> bool | int | float | str:
    """The HParams dashboard takes numbers, booleans and strings; anything else is shown as its repr."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
