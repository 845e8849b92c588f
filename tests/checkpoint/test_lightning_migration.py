"""PyTorch Lightning checkpoints resume where Lightning resumes them: same epoch, batch, step and learning rate.

Lightning is not needed: the checkpoints are built here in the layout Lightning 2.x writes (its "loops" entry:
ready/started/processed/completed counters per epoch, batch and validation batch; checked against files
written by Lightning 2.6), around weights taken from a Trellis run at the moment each checkpoint stands for.
Lightning steps epoch-interval schedulers right after an epoch's last batch, before validation and
on_train_epoch_end, and on resume neither steps them again nor repeats a validation it skipped; the expected
traces below are what Lightning's own resume produced from such files.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.checkpointing import FORMAT_VERSION, check_version

BATCHES = 4  # per epoch
EPOCHS = 3


def progress(ready: int, started: int, processed: int, completed: int) -> dict[str, int]:
    return {"ready": ready, "started": started, "processed": processed, "completed": completed}


def lightning_fit_loop(
    epochs: tuple[int, int, int, int],
    batches: tuple[int, int, int, int],
    last_batch: bool = False,
    validations: tuple[int, int, int, int] = (0, 0, 0, 0),
    steps: int = 0,
) -> dict[str, Any]:
    """Lightning 2.x's trainer.fit_loop.state_dict(): the counters, every key Lightning writes."""
    step_counts = {"ready": steps, "completed": steps}
    return {
        "state_dict": {},
        "epoch_loop.state_dict": {"_batches_that_stepped": steps},
        "epoch_loop.batch_progress": {"total": progress(*batches), "current": progress(*batches),
                                      "is_last_batch": last_batch},
        "epoch_loop.scheduler_progress": {"total": {"ready": 0, "completed": 0},
                                          "current": {"ready": 0, "completed": 0}},
        "epoch_loop.automatic_optimization.state_dict": {},
        "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
            "step": {"total": dict(step_counts), "current": dict(step_counts)},
            "zero_grad": {"total": {**step_counts, "started": steps}, "current": {**step_counts, "started": steps}},
        }},
        "epoch_loop.manual_optimization.state_dict": {},
        "epoch_loop.manual_optimization.optim_step_progress": {"total": {"ready": 0, "completed": 0},
                                                               "current": {"ready": 0, "completed": 0}},
        "epoch_loop.val_loop.state_dict": {},
        "epoch_loop.val_loop.batch_progress": {"total": progress(*validations), "current": progress(*validations),
                                               "is_last_batch": any(validations)},
        "epoch_progress": {"total": progress(*epochs), "current": progress(*epochs)},
    }


def lightning_checkpoint(state: dict[str, Any], fit_loop: dict[str, Any], epoch: int, global_step: int) -> dict:
    """A checkpoint as Lightning's trainer.save_checkpoint writes it (no format_version: format 0)."""
    idle = {"state_dict": {}, "batch_progress": {"total": progress(0, 0, 0, 0), "current": progress(0, 0, 0, 0),
                                                 "is_last_batch": False}}
    return {
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": state["weights"],
        "loops": {"fit_loop": fit_loop, "validate_loop": idle, "test_loop": idle, "predict_loop": idle},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {"best_model_path": "", "dirpath": "/x"}},
        "optimizer_states": [state["optimizer"]],
        "lr_schedulers": [state["scheduler"]],
        "hyper_parameters": {"lr": 0.1},
    }


# -- how each Lightning checkpoint maps onto Trellis's loop progress ------------------------------------------------
MAPPING = [
    # (written in, epoch counters, batch counters, last batch?, validation counters) -> (epoch, batches_done, pending)
    ("on_train_epoch_end of epoch 0", (1, 1, 1, 0), (4, 4, 4, 4), True, (1, 1, 1, 1), (1, 0, False)),
    ("trainer.save_checkpoint after fit", (3, 3, 3, 3), (4, 4, 4, 4), True, (1, 1, 1, 1), (3, 0, False)),
    ("on_train_batch_end of batch 0", (1, 1, 0, 0), (1, 1, 1, 0), False, (0, 0, 0, 0), (0, 1, False)),
    ("on_train_batch_end of epoch 1's last batch", (2, 2, 1, 1), (4, 4, 4, 3), True, (0, 0, 0, 0), (2, 0, False)),
    ("on_validation_end after batch 2 of epoch 1", (2, 2, 1, 1), (2, 2, 2, 2), False, (1, 1, 1, 1), (1, 2, False)),
    ("on_validation_end after epoch 0's last batch", (1, 1, 0, 0), (4, 4, 4, 4), True, (2, 2, 2, 2), (1, 0, False)),
    ("inside validation_step after batch 2", (1, 1, 0, 0), (2, 2, 2, 2), False, (1, 1, 0, 0), (0, 2, True)),
    ("inside training_step of batch 3", (1, 1, 0, 0), (3, 3, 2, 2), False, (0, 0, 0, 0), (0, 2, False)),
    ("on_train_epoch_start of epoch 2", (3, 2, 2, 2), (0, 0, 0, 0), False, (0, 0, 0, 0), (2, 0, False)),
]


@pytest.mark.parametrize(("written_in", "epochs", "batches", "last", "validations", "expected"), MAPPING,
                         ids=[case[0] for case in MAPPING])
def test_lightning_loop_progress_becomes_the_point_lightning_resumes_at(written_in, epochs, batches, last,
                                                                          validations, expected):
    fit_loop = lightning_fit_loop(epochs, batches, last, validations, steps=7)
    checkpoint = lightning_checkpoint({"weights": {}, "optimizer": {}, "scheduler": {}}, fit_loop, 0, 7)
    loops = check_version(checkpoint)["loops"]
    pending = loops["boundary"] == "after_batch"  # the batch boundary's work (validation) is still to run
    assert (loops["epoch"], loops["batches_done"], pending) == expected
    assert loops["phase"] == "running" and loops["global_step"] == 7 and loops["epoch_start_rng"] is None


def test_what_carries_over_and_what_does_not():
    state = {"weights": {"w": torch.ones(1)}, "optimizer": {"state": {}}, "scheduler": {"last_epoch": 2}}
    checkpoint = lightning_checkpoint(state, lightning_fit_loop((1, 1, 0, 0), (1, 1, 1, 0)), 0, 1)
    checkpoint["MixedPrecision"] = {"scale": 1024.0, "_growth_tracker": 3}
    check_version(checkpoint)
    assert checkpoint["format_version"] == FORMAT_VERSION
    assert checkpoint["precision"] == {"scale": 1024.0, "_growth_tracker": 3}  # the GradScaler
    assert checkpoint["lr_schedulers"] == [{"last_epoch": 2}] and checkpoint["hyper_parameters"] == {"lr": 0.1}
    assert "callbacks" not in checkpoint and "MixedPrecision" not in checkpoint


def test_a_checkpoint_without_lightning_loops_starts_the_epoch_after_the_one_it_records():
    checkpoint = {"state_dict": {}, "epoch": 4, "global_step": 50}
    assert check_version(checkpoint)["loops"]["epoch"] == 5


# -- resumed for real ---------------------------------------------------------------------------------------------
class Traced(trellis.Module):
    """Records (event, epoch, batch, global step, learning rate) so two runs can be compared event by event."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(3, 1)
        self.trace: list[tuple] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.trace.append(("train", self.current_epoch, batch_idx, self.global_step, lr))
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.trace.append(("val", self.current_epoch, self.global_step))

    def on_train_epoch_end(self):
        self.trace.append(("epoch_end", self.current_epoch, self.global_step))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class Snapshots(trellis.Callback):
    """Copies of the training state at the moments the Lightning checkpoints stand for."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def _take(self, name: str, trainer, module) -> None:
        self.states[name] = {
            "weights": {key: value.clone() for key, value in module.state_dict().items()},
            "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
            "scheduler": copy.deepcopy(trainer.lr_scheduler_configs[0].scheduler.state_dict()),
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx in (0, 1):
            self._take(f"epoch 1 batch {batch_idx}", trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:  # epoch 0's weights with its scheduler step: Lightning's epoch-end state
            self._take("end of epoch 0", trainer, pl_module)


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2 * BATCHES, 3, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=2)


def _fit(max_epochs: int, ckpt_path=None, callbacks=()) -> Traced:
    module = Traced()
    trainer = trellis.Trainer(max_epochs=max_epochs, val_check_interval=2, limit_val_batches=1,
                              num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(module, _loader(), _loader(), ckpt_path=ckpt_path)
    module.trainer_state = {"optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
                            "scheduler": copy.deepcopy(trainer.lr_scheduler_configs[0].scheduler.state_dict())}
    return module


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[Traced, Snapshots]:
    snapshots = Snapshots()
    return _fit(EPOCHS, callbacks=[snapshots]), snapshots


def _after(trace: list[tuple], event: tuple) -> int:
    """Index just past the first event starting with `event`."""
    return next(index for index, seen in enumerate(trace) if seen[:len(event)] == event) + 1


# (written in, snapshot, epoch counters, batch counters, last batch, validation counters, global step,
#  where the uninterrupted trace continues, events Lightning skips on resume)
RESUMES = [
    ("on_train_batch_end mid-epoch", "epoch 1 batch 0", (2, 2, 1, 1), (1, 1, 1, 0), False, (0, 0, 0, 0), 5,
     ("train", 1, 0), []),
    ("on_train_batch_end with a validation due", "epoch 1 batch 1", (2, 2, 1, 1), (2, 2, 2, 1), False, (0, 0, 0, 0), 6,
     ("train", 1, 1), [("val", 1, 6)]),
    ("on_validation_end mid-epoch", "epoch 1 batch 1", (2, 2, 1, 1), (2, 2, 2, 2), False, (1, 1, 1, 1), 6,
     ("val", 1, 6), []),
    ("on_train_batch_end of the epoch's last batch", "end of epoch 0", (1, 1, 0, 0), (4, 4, 4, 3), True, (1, 1, 1, 1),
     4, ("epoch_end", 0), []),
    ("on_validation_end after the last batch", "end of epoch 0", (1, 1, 0, 0), (4, 4, 4, 4), True, (2, 2, 2, 2), 4,
     ("epoch_end", 0), []),
    ("on_train_epoch_end", "end of epoch 0", (1, 1, 1, 0), (4, 4, 4, 4), True, (2, 2, 2, 2), 4, ("epoch_end", 0), []),
]


@pytest.mark.parametrize(("written_in", "snapshot", "epochs", "batches", "last", "validations", "step", "continues",
                          "skipped"), RESUMES, ids=[case[0] for case in RESUMES])
def test_a_lightning_checkpoint_resumes_to_the_uninterrupted_weights_without_extra_scheduler_steps(
    tmp_path, uninterrupted, written_in, snapshot, epochs, batches, last, validations, step, continues, skipped
):
    reference, snapshots = uninterrupted
    fit_loop = lightning_fit_loop(epochs, batches, last, validations, steps=step)
    path = tmp_path / "lightning.ckpt"
    torch.save(lightning_checkpoint(snapshots.states[snapshot], fit_loop, epochs[3], step), path)

    resumed = _fit(EPOCHS, ckpt_path=path)

    rest = reference.trace[_after(reference.trace, continues):]
    expected = [event for event in rest if event not in skipped]
    assert resumed.trace == expected  # epoch, batch, global step and learning rate of every step
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), f"{name} differs from the uninterrupted run"
    assert resumed.trainer_state["scheduler"] == reference.trainer_state["scheduler"]


def test_a_checkpoint_written_after_fit_continues_with_the_next_epoch(tmp_path, uninterrupted):
    reference, _ = uninterrupted
    state = {"weights": reference.state_dict(), **reference.trainer_state}
    fit_loop = lightning_fit_loop((3, 3, 3, 3), (4, 4, 4, 4), True, (2, 2, 2, 2), steps=12)
    torch.save(lightning_checkpoint(state, fit_loop, 3, 12), tmp_path / "after_fit.ckpt")

    resumed = _fit(EPOCHS + 1, ckpt_path=tmp_path / "after_fit.ckpt")
    longer = _fit(EPOCHS + 1)

    assert resumed.trace == longer.trace[_after(longer.trace, ("epoch_end", EPOCHS - 1)):]
    assert resumed.trace[0] == ("train", 3, 0, 12, 0.1 * 0.5**3)
    for name, value in longer.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value)
