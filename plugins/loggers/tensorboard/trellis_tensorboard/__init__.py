"""TensorBoard logger: event files in <save_dir>/<name>/version_N, written by the tensorboard package."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trellis.roles import Logger
from trellis.utils.hparams import flatten_hparams
from trellis.utils.pending import Item, PendingItems
from trellis.utils.run_directory import VersionedRunDirectory

TRELLIS_PLUGIN_API = 1

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

UNDELIVERED_FILE = "undelivered.jsonl"
#: Trellis run status -> HParams session status (names in tensorboard.plugins.hparams.api_pb2).
_STATUS = {"success": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "interrupted": "STATUS_ABORTED"}


class TensorBoardLogger(VersionedRunDirectory, Logger):
    """Scalars at their global step, hparams with the run's metric names, and the SummaryWriter itself.

    The version directory travels in checkpoints. A resumed run reopens it with `purge_step` set to the
    step after the checkpoint, so readers drop the events the interrupted run wrote past that point.
    """

    name = "tensorboard"

    def __init__(
        self,
        save_dir: str | os.PathLike = ".",
        name: str = "trellis_logs",
        version: int | str | None = None,
        flush_secs: int = 120,
        max_queue: int = 10,
    ) -> None:
        self.save_dir = os.fspath(save_dir)
        self.run_name = name
        self._version = version
        self.flush_secs = flush_secs
        self.max_queue = max_queue
        self._writer: SummaryWriter | None = None
        self._purge_step: int | None = None
        self._last_step = -1
        self._hparams: dict[str, Any] | None = None
        self._metric_names: dict[str, None] = {}
        self._pending = PendingItems(f"TensorBoard ({self.save_dir})", self._write, chunk_size=1)

    @property
    def experiment(self) -> SummaryWriter:
        """The SummaryWriter of this run (add_image, add_histogram, add_graph, ...)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(self.log_dir, exist_ok=True)
            self._writer = SummaryWriter(
                log_dir=self.log_dir, purge_step=self._purge_step, max_queue=self.max_queue, flush_secs=self.flush_secs
            )
        return self._writer

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._hparams = {str(key): _scalar(value) for key, value in flatten_hparams(params).items()}
        self._pending.add({"hparams": "start"})
        self._pending.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._last_step = max(self._last_step, step)
        for metric_name in metrics:
            self._metric_names.setdefault(metric_name)
        self._pending.add({"step": step, "metrics": dict(metrics)})
        self._pending.flush()

    def save(self) -> None:
        if self._pending.flush() and self._writer is not None:
            self._writer.flush()

    def finalize(self, status: str) -> None:
        if self._hparams is not None:
            self._pending.add({"hparams": "end", "status": status})
        self.save()
        if len(self._pending):
            self._pending.spill(os.path.join(self.log_dir, UNDELIVERED_FILE))
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def state_dict(self) -> dict[str, Any]:
        self.save()
        return {"version": self.version, "save_dir": self.save_dir, "name": self.run_name, "last_step": self._last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("save_dir") != self.save_dir or state.get("name") != self.run_name:
            return
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._version = state["version"]
        self._last_step = state.get("last_step", -1)
        self._purge_step = self._last_step + 1  # events written after the checkpoint are written again

    def _write(self, items: list[Item]) -> None:
        writer = self.experiment
        for item in items:
            if "metrics" in item:
                for metric_name, value in item["metrics"].items():
                    writer.add_scalar(metric_name, value, item["step"])
            else:
                self._write_hparams(writer, end_status=item.get("status"))

    def _write_hparams(self, writer: SummaryWriter, end_status: str | None) -> None:
        """Session start at log_hyperparams; at the end, the experiment with the metric names and the status."""
        from torch.utils.tensorboard.summary import hparams

        experiment, session_start, _ = hparams(self._hparams, dict.fromkeys(self._metric_names, 0.0))
        if end_status is None:
            writer.file_writer.add_summary(session_start)
            return
        writer.file_writer.add_summary(experiment)
        writer.file_writer.add_summary(_session_end(end_status))

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
