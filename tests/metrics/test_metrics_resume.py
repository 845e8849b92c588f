"""A run resumed from a checkpoint taken inside an epoch logs what the uninterrupted run logged."""

from __future__ import annotations

import pytest
import torch
import torchmetrics
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.callbacks import ModelCheckpoint


def data(samples: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 4, generator=generator)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=6)  # the last batch is smaller


class Resumable(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=2)
        self.updated_only = torchmetrics.MeanMetric()  # never logged itself: its state must survive too

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.layer(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.log("loss", loss, on_step=True, on_epoch=True)
        self.log("peak", loss, on_step=False, on_epoch=True, reduce_fx="max")
        if batch_idx == 0:
            self.log("first", loss)  # logged once, re-sent at every logged step of the epoch
        self.accuracy(logits, y)
        self.log("acc", self.accuracy, on_epoch=True)
        self.updated_only.update(loss)
        return loss

    def on_train_epoch_end(self):
        self.log("mean_loss", self.updated_only.compute())
        self.updated_only.reset()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1]), on_step=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)


def fit(root, logger, ckpt_path=None) -> trellis.Trainer:
    trellis.seed_everything(0)
    checkpoints = ModelCheckpoint(dirpath=root, every_n_train_steps=4, save_top_k=-1, filename="{step}")
    trainer = trellis.Trainer(max_epochs=2, logger=logger, log_every_n_steps=1, val_check_interval=3,
                              enable_progress_bar=False, enable_model_summary=False, callbacks=[checkpoints])
    trainer.fit(Resumable(), data(40, 0), data(12, 1), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")
def test_resuming_inside_an_epoch_logs_what_the_uninterrupted_run_logged(tmp_path, make_recording_logger):
    recording_logger, resumed_logger = make_recording_logger(), make_recording_logger()
    uninterrupted = fit(tmp_path, recording_logger)
    resumed = fit(tmp_path / "again", resumed_logger, ckpt_path=tmp_path / "step=12.ckpt")  # epoch 1, batch 5 of 7

    assert resumed_logger.rows == recording_logger.rows[-len(resumed_logger.rows):]
    assert any("acc_epoch" in row and step == 13 for step, row in resumed_logger.rows)  # an epoch row after it
    assert uninterrupted.callback_metrics.keys() == resumed.callback_metrics.keys()
    for name, value in uninterrupted.callback_metrics.items():
        assert torch.equal(value, resumed.callback_metrics[name]), name
    assert {name: float(value) for name, value in uninterrupted.logged_metrics.items()} == {
        name: float(value) for name, value in resumed.logged_metrics.items()}
