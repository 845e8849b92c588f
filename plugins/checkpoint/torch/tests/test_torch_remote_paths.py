"""fsspec URLs: memory:// and file:// checkpoints, written by rename, usable as ModelCheckpoint's dirpath."""

from __future__ import annotations

import collections
import uuid
from typing import ClassVar

import fsspec
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.callbacks import ModelCheckpoint
from trellis.errors import CheckpointError
from trellis_torch import TorchCheckpointIO


@pytest.fixture
def memory_root():
    root = f"memory://trellis-{uuid.uuid4().hex}"
    yield root
    filesystem = fsspec.filesystem("memory")
    if filesystem.exists(root):
        filesystem.rm(root, recursive=True)


def listing(url: str) -> list[str]:
    filesystem, path = fsspec.core.url_to_fs(url)
    return sorted(name.rsplit("/", 1)[-1] for name in filesystem.ls(path, detail=False))


class PeekAtTarget:
    """Pickled in the middle of a write: records what a reader of the target path sees at that moment."""

    seen: ClassVar[list[int]] = []

    def __init__(self, url: str) -> None:
        self.url = url

    def __reduce__(self):
        PeekAtTarget.seen.append(TorchCheckpointIO().load_checkpoint(self.url)["step"])
        return (collections.OrderedDict, ())  # an allowlisted type, so the file still loads weights-only


def test_a_memory_url_round_trips_and_a_reader_mid_write_sees_the_previous_file(memory_root):
    io = TorchCheckpointIO()
    url = f"{memory_root}/run/model.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.arange(5.0)}, url)
    io.save_checkpoint({"step": 2, "peek": PeekAtTarget(url)}, url)
    assert PeekAtTarget.seen == [1]
    assert io.load_checkpoint(url)["step"] == 2
    assert listing(f"{memory_root}/run") == ["model.ckpt"]  # the temporary was renamed away
    assert io.exists(url)
    io.remove_checkpoint(url)
    assert not io.exists(url)


def test_a_failed_remote_write_keeps_the_previous_file_and_leaves_no_temporary(memory_root):
    io = TorchCheckpointIO()
    url = f"{memory_root}/model.ckpt"
    io.save_checkpoint({"step": 1}, url)
    with pytest.raises(Exception, match="pickle"):
        io.save_checkpoint({"step": 2, "unpicklable": lambda: None}, url)
    assert io.load_checkpoint(url) == {"step": 1}
    assert listing(memory_root) == ["model.ckpt"]


class Arbitrary:
    """A type no allowlist knows: loading it would need arbitrary code."""


def test_remote_files_get_the_same_safety_and_errors_as_local_ones(memory_root):
    io = TorchCheckpointIO()
    with pytest.raises(CheckpointError, match="no checkpoint file at 'memory://.*absent.ckpt'"):
        io.load_checkpoint(f"{memory_root}/absent.ckpt")
    io.save_checkpoint({"object": Arbitrary()}, f"{memory_root}/code.ckpt")
    with pytest.raises(CheckpointError, match="weights_only=False"):
        io.load_checkpoint(f"{memory_root}/code.ckpt")
    url = f"{memory_root}/truncated.ckpt"
    io.save_checkpoint({"weights": torch.randn(1000)}, url)
    filesystem, path = fsspec.core.url_to_fs(url)
    filesystem.pipe_file(path, filesystem.cat_file(path)[:2000])
    with pytest.raises(CheckpointError, match="is truncated"):
        io.load_checkpoint(url)


def test_a_file_url_is_the_local_file(tmp_path):
    io = TorchCheckpointIO()
    io.save_checkpoint({"weights": torch.ones(3)}, f"file://{tmp_path}/model.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "model.ckpt")["weights"], torch.ones(3))
    assert torch.equal(io.load_checkpoint(f"file://{tmp_path}/model.ckpt")["weights"], torch.ones(3))


def test_an_unknown_protocol_says_what_to_install_or_fix():
    with pytest.raises(CheckpointError, match="cannot open the filesystem of 'nosuchstore://.*Install the fsspec"):
        TorchCheckpointIO().save_checkpoint({}, "nosuchstore://bucket/model.ckpt")


class Regressor(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(16, 16)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.net(inputs), targets)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(root_dir, dirpath: str, async_save: bool, max_steps: int, ckpt_path: str | None = None) -> trellis.Trainer:
    torch.manual_seed(0)
    inputs = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    trainer = trellis.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root_dir, plugins=[TorchCheckpointIO(async_save=async_save)],
        callbacks=[ModelCheckpoint(dirpath=dirpath, every_n_train_steps=2)],
    )
    trainer.fit(Regressor(), DataLoader(TensorDataset(inputs, inputs * 2), batch_size=8), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_model_checkpoint_writes_keeps_and_resumes_from_a_memory_url(tmp_path, memory_root, async_save):
    dirpath = f"{memory_root}/checkpoints"
    trainer = fit(tmp_path, dirpath, async_save, max_steps=6)
    assert trainer.checkpoint_callback.best_model_path == f"{dirpath}/epoch=0-step=6.ckpt"
    assert listing(dirpath) == ["epoch=0-step=6.ckpt"]  # top-1: older ones removed, no temporaries
    resumed = fit(tmp_path, dirpath, async_save, max_steps=8, ckpt_path=trainer.checkpoint_callback.best_model_path)
    uninterrupted = fit(tmp_path, f"{memory_root}/other", async_save, max_steps=8)
    assert resumed.global_step == 8
    for key, tensor in uninterrupted.module.state_dict().items():
        assert torch.equal(resumed.module.state_dict()[key], tensor)


def test_model_checkpoint_accepts_a_file_url(tmp_path):
    trainer = fit(tmp_path, f"file://{tmp_path}/checkpoints", async_save=False, max_steps=4)
    assert (tmp_path / "checkpoints" / "epoch=0-step=4.ckpt").is_file()
    assert trainer.checkpoint_callback.best_model_path == f"file://{tmp_path}/checkpoints/epoch=0-step=4.ckpt"
