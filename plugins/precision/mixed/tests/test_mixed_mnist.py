"""bf16-mixed learns MNIST as well as 32-true: accuracy within half a point on a fixed slice of real MNIST."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis

REPO_ROOT = Path(__file__).resolve().parents[4]
MNIST_DIR = Path(os.environ.get("TRELLIS_MNIST_DIR", REPO_ROOT / ".." / "shared" / "data" / "mnist"))
TRAIN_COUNT, TEST_COUNT = 12000, 10000


def read_idx(path: Path, count: int) -> torch.Tensor:
    """The first `count` items of an IDX file of unsigned bytes (MNIST images or labels)."""
    with gzip.open(path) as stream:
        magic, total = struct.unpack(">II", stream.read(8))
        dimensions = magic & 0xFF
        shape = struct.unpack(f">{dimensions - 1}I", stream.read(4 * (dimensions - 1)))
        item_size = int(torch.tensor(shape).prod()) if shape else 1
        count = min(count, total)
        data = stream.read(count * item_size)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(count, *shape)


def mnist_split(prefix: str, count: int) -> TensorDataset:
    images = read_idx(MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz", count).flatten(1).float().div_(255.0)
    labels = read_idx(MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz", count).long()
    return TensorDataset((images - 0.1307) / 0.3081, labels)


class MnistMLP(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, 10),
        )

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return torch.nn.functional.cross_entropy(self.net(images), labels)

    def test_step(self, batch, batch_idx):
        images, labels = batch
        self.log("test_acc", (self.net(images).argmax(dim=1) == labels).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_accuracy(precision: str, tmp_path: Path) -> float:
    torch.manual_seed(0)
    model = MnistMLP()
    train = DataLoader(mnist_split("train", TRAIN_COUNT), batch_size=100, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    test = DataLoader(mnist_split("t10k", TEST_COUNT), batch_size=1000)
    trainer = trellis.Trainer(precision=precision, max_epochs=2, logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, train)
    return 100.0 * trainer.test(model, test, verbose=False)[0]["test_acc"]


test_accuracy.__test__ = False


@pytest.mark.slow
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST IDX files not found at {MNIST_DIR} (set TRELLIS_MNIST_DIR)")
def test_bf16_mixed_reaches_the_accuracy_of_32_true_on_mnist(tmp_path: Path) -> None:
    full = test_accuracy("32-true", tmp_path / "full")
    mixed = test_accuracy("bf16-mixed", tmp_path / "mixed")
    assert full > 90.0, f"32-true reached only {full:.2f}% on MNIST: the model or the data reader is broken"
    assert abs(mixed - full) <= 0.5, f"bf16-mixed reached {mixed:.2f}%, 32-true {full:.2f}%"
