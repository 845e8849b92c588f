"""BasePredictionWriter: per-batch and per-epoch writes with the dataset indices of each batch's samples, and
trainer.predict's return_predictions."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from support import quiet_trainer
from trellis.callbacks import BasePredictionWriter
from trellis.errors import ConfigurationError


class Doubler(trellis.Module):
    """Predicts twice its input; the inputs are the dataset indices themselves."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Linear(1, 1)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return batch[0] * 2


def indexed_loader(size: int, batch_size: int, seed: int | None = None) -> DataLoader:
    """Samples whose value is their index in the dataset (shuffled with `seed`)."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(TensorDataset(torch.arange(size)), batch_size=batch_size, shuffle=seed is not None,
                      generator=generator)


class Recorder(BasePredictionWriter):
    def __init__(self, write_interval: str) -> None:
        super().__init__(write_interval)
        self.batches: list[tuple] = []
        self.epochs: list[tuple] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self.batches.append((prediction, batch_indices, batch[0], batch_idx, dataloader_idx))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        self.epochs.append((predictions, batch_indices))


def test_each_batch_is_written_with_the_indices_the_sampler_drew():
    writer = Recorder("batch")
    predictions = quiet_trainer(callbacks=[writer]).predict(Doubler(), indexed_loader(10, 4, seed=3))
    assert len(writer.batches) == 3 and not writer.epochs
    for batch_idx, (prediction, indices, inputs, index, loader_index) in enumerate(writer.batches):
        assert indices == inputs.tolist()  # the shuffled dataset indices of this batch
        assert torch.equal(prediction, inputs * 2) and (index, loader_index) == (batch_idx, 0)
    assert [p.tolist() for p in predictions] == [batch[0].tolist() for batch in writer.batches]


def test_the_epoch_write_gets_every_prediction_and_index_per_loader():
    writer = Recorder("epoch")
    trainer = quiet_trainer(callbacks=[writer], limit_predict_batches=2)
    returned = trainer.predict(Doubler(), [indexed_loader(6, 2), indexed_loader(9, 3, seed=0)])
    (predictions, indices), = writer.epochs
    assert [[p.tolist() for p in loader] for loader in predictions] == [[[0, 2], [4, 6]], [
        [2 * i for i in batch] for batch in indices[1]]]
    assert indices[0] == [[0, 1], [2, 3]] and len(indices[1]) == 2
    assert ([[p.tolist() for p in loader] for loader in returned]
            == [[p.tolist() for p in loader] for loader in predictions])
    assert not writer.batches


def test_without_returned_predictions_the_writers_still_get_them():
    writer = Recorder("batch_and_epoch")
    trainer = quiet_trainer(callbacks=[writer])
    assert trainer.predict(Doubler(), indexed_loader(4, 2), return_predictions=False) is None
    assert len(writer.batches) == 2 and [p.tolist() for p in writer.epochs[0][0]] == [[0, 2], [4, 6]]
    assert trainer.predict_loop.predictions == []  # nothing kept after the call


def test_batch_writers_alone_keep_no_epoch_indices():
    seen = []

    class Checks(Doubler):
        def on_predict_epoch_end(self):
            seen.append(self.trainer.predict_loop.epoch_batch_indices)

    quiet_trainer(callbacks=[Recorder("batch")]).predict(Checks(), indexed_loader(4, 2), return_predictions=False)
    assert seen == [[[]]]


def test_an_unknown_interval_is_refused():
    with pytest.raises(ConfigurationError, match=r"`write_interval` should be one of \['batch', 'epoch'"):
        Recorder("something")


def test_a_writer_that_does_not_implement_its_interval_says_so():
    class Incomplete(BasePredictionWriter):
        pass

    with pytest.raises(NotImplementedError, match="implement write_on_batch_end"):
        quiet_trainer(callbacks=[Incomplete()]).predict(Doubler(), indexed_loader(4, 2))
