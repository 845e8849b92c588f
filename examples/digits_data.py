"""Handwritten digits for the examples: real MNIST from its IDX files, or a bundled default.

The default needs no download: scikit-learn ships the UCI optical-recognition digits (1,797 real
8x8 scans). Given a directory (argument or TRELLIS_MNIST_DIR) holding the four original MNIST .gz
files, the real 28x28 MNIST is read instead.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

MNIST_ENVIRONMENT_VARIABLE = "TRELLIS_MNIST_DIR"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read one gzipped IDX file (images: magic 2051, labels: magic 2049) into a uint8 tensor."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic == 2051:
        count, rows, columns = struct.unpack(">III", data[4:16])
        return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).reshape(count, rows, columns)
    if magic == 2049:
        (count,) = struct.unpack(">I", data[4:8])
        return torch.frombuffer(bytearray(data[8:]), dtype=torch.uint8).reshape(count)
    raise ValueError(f"{path} is not an IDX image or label file (magic number {magic})")


def mnist_directory(directory: str | os.PathLike | None = None) -> Path | None:
    """The MNIST directory given, or from TRELLIS_MNIST_DIR; None when neither is set."""
    chosen = directory or os.environ.get(MNIST_ENVIRONMENT_VARIABLE)
    if not chosen:
        return None
    path = Path(chosen)
    missing = [name for pair in _FILES.values() for name in pair if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} lacks the MNIST files {missing}: point to a directory holding all four .gz files")
    return path


def load_mnist(directory: str | os.PathLike, split: str = "train") -> TensorDataset:
    """Real MNIST: images scaled to [0, 1] and flattened to 784 features, labels as int64."""
    images_name, labels_name = _FILES[split]
    images = read_idx(Path(directory) / images_name).reshape(-1, 784).float() / 255.0
    labels = read_idx(Path(directory) / labels_name).long()
    return TensorDataset(images, labels)


def load_bundled_digits() -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 8x8 digits, scaled to [0, 1] and flattened to 64 features; a seeded 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def load_digits_splits(directory: str | os.PathLike | None = None) -> tuple[TensorDataset, TensorDataset, str]:
    """(train, test, description): real MNIST when a directory is known, else the bundled digits."""
    path = mnist_directory(directory)
    if path is None:
        train, test = load_bundled_digits()
        return train, test, "bundled 8x8 digits (scikit-learn)"
    return load_mnist(path, "train"), load_mnist(path, "test"), f"MNIST from {path}"
