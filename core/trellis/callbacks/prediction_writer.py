"""BasePredictionWriter: write predictions as trainer.predict produces them, per batch or per epoch."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Sequence
from typing import Any, Literal

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError


class WriteInterval(str, enum.Enum):
    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

    @property
    def on_batch(self) -> bool:
        return self in (WriteInterval.BATCH, WriteInterval.BATCH_AND_EPOCH)

    @property
    def on_epoch(self) -> bool:
        return self in (WriteInterval.EPOCH, WriteInterval.BATCH_AND_EPOCH)


class BasePredictionWriter(Callback):
    """Subclass and implement `write_on_batch_end` (write_interval "batch"), `write_on_epoch_end` ("epoch"), or
    both ("batch_and_epoch"). `batch_indices` are the dataset indices of each batch's samples, as the loader's
    sampler drew them (with DDP: this process's share), so predictions can be matched to their inputs."""

    def __init__(self, write_interval: Literal["batch", "epoch", "batch_and_epoch"] = "batch") -> None:
        if write_interval not in [interval.value for interval in WriteInterval]:
            raise ConfigurationError(
                f"`write_interval` should be one of {[interval.value for interval in WriteInterval]}.")
        self.interval = WriteInterval(write_interval)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        step = getattr(pl_module, "predict_step", None)
        if step is not None and "dataloader_iter" in inspect.signature(step).parameters:
            raise NotImplementedError("The `PredictionWriterCallback` does not support using `dataloader_iter`.")

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Sequence[int] | None,
                           batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        """Write one batch's prediction."""
        raise NotImplementedError(f"{type(self).__name__} writes per batch: implement write_on_batch_end")

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Sequence[Any],
                           batch_indices: Sequence[Any]) -> None:
        """Write all predictions of the epoch (a list per loader when there are several)."""
        raise NotImplementedError(f"{type(self).__name__} writes per epoch: implement write_on_epoch_end")

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        if self.interval.on_batch:
            batch_indices = trainer.predict_loop.current_batch_indices
            self.write_on_batch_end(trainer, pl_module, outputs, batch_indices, batch, batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.interval.on_epoch:
            loop = trainer.predict_loop
            self.write_on_epoch_end(trainer, pl_module, loop.predictions, loop.epoch_batch_indices)
