"""trellis.DataModule: its state travels in checkpoints as Lightning's does, and its batch hooks have defaults."""

from __future__ import annotations

import torch

import trellis
from support import TinyRegressor, loader, quiet_trainer


class Counting(trellis.DataModule):
    """Counts the epochs it served (the docs' example of DataModule state)."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs_served = 0
        self.restored: list[dict] = []

    def train_dataloader(self):
        self.epochs_served += 1
        return loader(64)

    def test_dataloader(self):
        return loader(64)

    def state_dict(self):
        return {"epochs_served": self.epochs_served}

    def load_state_dict(self, state):
        self.restored.append(dict(state))
        self.epochs_served = state["epochs_served"]


class EvaluatedRegressor(TinyRegressor):
    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))


def test_the_state_is_saved_under_the_class_name_and_restored_on_resume_and_for_test(tmp_path):
    data = Counting()
    trainer = quiet_trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1)
    trainer.fit(EvaluatedRegressor(), datamodule=data)
    trainer.save_checkpoint(tmp_path / "three.ckpt")
    assert torch.load(tmp_path / "three.ckpt", weights_only=True)["Counting"] == {"epochs_served": 3}

    resumed = Counting()
    quiet_trainer(max_epochs=4, reload_dataloaders_every_n_epochs=1).fit(
        EvaluatedRegressor(), datamodule=resumed, ckpt_path=tmp_path / "three.ckpt")
    assert resumed.restored == [{"epochs_served": 3}] and resumed.epochs_served == 4

    tested = Counting()
    quiet_trainer().test(EvaluatedRegressor(), datamodule=tested, ckpt_path=tmp_path / "three.ckpt", verbose=False)
    assert tested.restored == [{"epochs_served": 3}]


def test_an_empty_state_is_left_out_of_checkpoints(tmp_path):
    class Stateless(trellis.DataModule):
        def train_dataloader(self):
            return loader(64)

    trainer = quiet_trainer(max_steps=1)
    trainer.fit(TinyRegressor(), datamodule=Stateless())
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    checkpoint = torch.load(tmp_path / "one.ckpt", weights_only=True)
    assert "Stateless" not in checkpoint and "datamodule_hyper_parameters" not in checkpoint


def test_the_batch_hooks_default_to_passing_the_batch_through_and_moving_it():
    data = trellis.DataModule()
    batch = {"x": torch.ones(2), "names": ["a", "b"]}
    assert data.on_before_batch_transfer(batch, 0) is batch and data.on_after_batch_transfer(batch, 0) is batch
    moved = data.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert torch.equal(moved["x"], batch["x"]) and moved["names"] == ["a", "b"]
