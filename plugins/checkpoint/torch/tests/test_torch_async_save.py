"""Asynchronous saving: the loop continues while a snapshot is written; failures surface in the training thread."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.callbacks import ModelCheckpoint
from trellis.errors import CheckpointError
from trellis_torch import TorchCheckpointIO
from trellis_torch.snapshot import snapshot


class Regressor(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Tanh(), torch.nn.Linear(512, 256))

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.net(inputs), targets)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def batches() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 256, generator=generator)
    return DataLoader(TensorDataset(inputs, inputs.flip(1)), batch_size=8)


def fit(dirpath, checkpoint_io: TorchCheckpointIO, max_steps: int, every: int) -> trellis.Trainer:
    torch.manual_seed(0)
    trainer = trellis.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=dirpath, plugins=[checkpoint_io],
        callbacks=[ModelCheckpoint(dirpath=dirpath, filename="{step}", save_top_k=-1, every_n_train_steps=every)],
    )
    trainer.fit(Regressor(), batches())
    return trainer


def test_every_async_checkpoint_holds_exactly_the_state_of_its_step(tmp_path):
    fit(tmp_path / "sync", TorchCheckpointIO(), max_steps=24, every=3)
    fit(tmp_path / "async", TorchCheckpointIO(async_save=True), max_steps=24, every=3)
    names = sorted(os.listdir(tmp_path / "sync"))
    assert names == [f"step={step}.ckpt" for step in (12, 15, 18, 21, 24, 3, 6, 9)]
    assert sorted(os.listdir(tmp_path / "async")) == names  # no temporaries left behind
    io = TorchCheckpointIO()
    for name in names:
        expected, written = io.load_checkpoint(tmp_path / "sync" / name), io.load_checkpoint(tmp_path / "async" / name)
        assert written["global_step"] == expected["global_step"]
        for key, tensor in expected["state_dict"].items():
            assert torch.equal(written["state_dict"][key], tensor), f"{name}: {key} differs"
        for slot, state in expected["optimizer_states"][0]["state"].items():
            for key, tensor in state.items():
                assert torch.equal(written["optimizer_states"][0]["state"][slot][key], tensor), f"{name}: {key}"


def test_a_failed_background_write_is_raised_at_the_next_save(tmp_path):
    occupied = tmp_path / "not-a-directory"
    occupied.write_text("a file where the checkpoint directory should be")
    refused = "asynchronous checkpoint write failed: .*not-a-directory.* is a file, not a directory.*intact"
    with pytest.raises(CheckpointError, match=refused) as caught:
        fit(occupied, TorchCheckpointIO(async_save=True), max_steps=8, every=2)
    assert isinstance(caught.value.__cause__.__cause__, OSError)
    assert "step=2.ckpt" in str(caught.value)  # the write of step 2 is reported, at the save of step 4


def test_a_failed_last_write_is_raised_at_teardown(tmp_path):
    occupied = tmp_path / "not-a-directory"
    occupied.write_text("")
    with pytest.raises(CheckpointError, match="asynchronous checkpoint write failed"):
        fit(occupied, TorchCheckpointIO(async_save=True), max_steps=2, every=2)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path):
    io = TorchCheckpointIO(async_save=True)
    path = tmp_path / "model.ckpt"
    io.save_checkpoint({"step": 1}, path)
    io.save_checkpoint({"step": 2, "unpicklable": lambda: None}, path)  # deep-copies, fails when pickled
    refused = r"model.ckpt' failed \(\w+: Can't pickle .*previously at that path.* intact"
    with pytest.raises(CheckpointError, match=refused):
        io.teardown()
    assert io.load_checkpoint(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_changes_after_save_returns_do_not_reach_the_file(tmp_path):
    io = TorchCheckpointIO(async_save=True)
    weights = torch.zeros(4_000_000)
    io.save_checkpoint({"weights": weights}, tmp_path / "model.ckpt")
    weights.add_(1)  # the next optimizer step, while the writer is still busy
    io.teardown()
    assert torch.count_nonzero(io.load_checkpoint(tmp_path / "model.ckpt")["weights"]) == 0


def test_loading_exists_and_remove_wait_for_a_pending_write_to_that_path(tmp_path):
    io = TorchCheckpointIO(async_save=True)
    path = tmp_path / "model.ckpt"
    io.save_checkpoint({"weights": torch.ones(2_000_000)}, path)
    assert io.exists(path)
    assert torch.equal(io.load_checkpoint(path)["weights"], torch.ones(2_000_000))
    io.save_checkpoint({"weights": torch.ones(2_000_000)}, path)
    io.remove_checkpoint(path)
    io.teardown()
    assert not path.exists()


def test_the_snapshot_is_a_cpu_copy_that_keeps_shared_storage_shared():
    weight = torch.randn(8, 4)
    state = {"encoder": weight, "decoder": weight.t(), "nested": [(weight[1],)], "lr": 0.1}
    copied = snapshot(state)
    weight.zero_()
    assert torch.count_nonzero(copied["encoder"]) == 32
    assert torch.equal(copied["decoder"], copied["encoder"].t())
    assert copied["encoder"].untyped_storage().data_ptr() == copied["decoder"].untyped_storage().data_ptr()
    assert torch.equal(copied["nested"][0][0], copied["encoder"][1])
    assert copied["lr"] == 0.1


def test_the_snapshot_keeps_a_state_dicts_type_and_metadata():
    state = torch.nn.BatchNorm1d(3).state_dict()
    copied = snapshot(state)
    assert type(copied) is type(state) and copied._metadata == state._metadata
    assert list(copied) == list(state)


def test_the_torch_async_entry_point_names_the_asynchronous_writer():
    from trellis.plugin import load_plugin

    assert load_plugin("checkpoint_io", "torch_async")().async_save is True
    assert load_plugin("checkpoint_io", "torch")().async_save is False
