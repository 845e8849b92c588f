"""MNIST for demos and Lightning's examples, read from the four original IDX files, with no torchvision needed.

The files (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-...`) are looked for in
`root`, in `root/MNIST/raw` (where torchvision keeps them) and in the directory named by TRELLIS_MNIST_DIR.
When they are in none of those, `download=True` hands over to torchvision's MNIST (which downloads) if it is
installed; otherwise the error says where to put the files.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, random_split

from trellis.datamodule import DataModule

MNIST_DIR_VARIABLE = "TRELLIS_MNIST_DIR"
_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


class MNISTFiles(Dataset):
    """MNIST from its IDX files: (image, label) pairs.

    Without a transform an image is a float tensor (1, 28, 28) scaled to [0, 1], then standardised with
    `normalize=(mean, std)` when given. With a transform (torchvision's `ToTensor()`, ...) the transform
    receives what torchvision's MNIST gives it: a PIL image when Pillow is installed, else the uint8 tensor.
    """

    def __init__(self, root: str | os.PathLike, train: bool = True, transform: Callable | None = None,
                 target_transform: Callable | None = None, normalize: tuple[float, float] | None = None,
                 directory: Path | None = None) -> None:
        self.root, self.train = root, train
        self.transform, self.target_transform, self.normalize = transform, target_transform, normalize
        directory = directory or find_mnist_directory(root, train)
        if directory is None:
            raise FileNotFoundError(_missing_message(root, train))
        images_name, labels_name = _FILES[train]
        self.data = _read_idx(directory, images_name, _IMAGES_MAGIC).view(-1, 28, 28)
        self.targets = _read_idx(directory, labels_name, _LABELS_MAGIC).long()
        if len(self.data) != len(self.targets):
            raise ValueError(
                f"MNIST files in {directory} disagree: {len(self.data)} images, {len(self.targets)} labels")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        target: Any = int(self.targets[index])
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.transform is not None:
            return self.transform(_as_image(self.data[index])), target
        image = self.data[index].float().div(255).unsqueeze(0)
        if self.normalize is not None:
            mean, std = self.normalize
            image = (image - mean) / std
        return image, target


def MNIST(root: str | os.PathLike = "./data", train: bool = True, transform: Callable | None = None,
          target_transform: Callable | None = None, download: bool = True, **kwargs: Any) -> Dataset:
    """The MNIST split from local IDX files, or torchvision's MNIST (downloading) when they are absent."""
    directory = find_mnist_directory(root, train)
    if directory is None and download:
        try:
            from torchvision.datasets import MNIST as TorchvisionMNIST
        except ImportError:
            raise FileNotFoundError(_missing_message(root, train)) from None
        return TorchvisionMNIST(os.fspath(root), train=train, transform=transform,
                                target_transform=target_transform, download=True)
    return MNISTFiles(root, train, transform, target_transform, directory=directory, **kwargs)


def find_mnist_directory(root: str | os.PathLike, train: bool = True) -> Path | None:
    """The first of root, root/MNIST/raw and $TRELLIS_MNIST_DIR that holds the split's two files."""
    candidates = [Path(root), Path(root) / "MNIST" / "raw"]
    if os.environ.get(MNIST_DIR_VARIABLE):
        candidates.append(Path(os.environ[MNIST_DIR_VARIABLE]))
    for candidate in candidates:
        if all(_idx_path(candidate, name) is not None for name in _FILES[train]):
            return candidate
    return None


class MNISTDataModule(DataModule):
    """MNIST with a seeded train/validation split of the training images and the test images for testing."""

    name = "mnist"

    def __init__(self, data_dir: str = "./data", val_split: int = 5000, num_workers: int = 0,
                 normalize: bool = False, seed: int = 42, batch_size: int = 32) -> None:
        super().__init__()
        self.data_dir, self.val_split, self.num_workers = data_dir, val_split, num_workers
        self.normalize, self.seed, self.batch_size = normalize, seed, batch_size

    @property
    def num_classes(self) -> int:
        return 10

    def prepare_data(self) -> None:
        MNIST(self.data_dir, train=True)
        MNIST(self.data_dir, train=False)

    def setup(self, stage: str) -> None:
        dataset = self._split(train=True)
        self.dataset_train, self.dataset_val = random_split(
            dataset, [len(dataset) - self.val_split, self.val_split],  # type: ignore[arg-type]  # a map-style dataset
            generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset_val)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._split(train=False))

    def _split(self, train: bool) -> Dataset:
        # [0, 1] pixels, or mapped to [-1, 1] with normalize=True (mean 0.5, std 0.5)
        return MNIST(self.data_dir, train=train, download=False, normalize=(0.5, 0.5) if self.normalize else None)

    def _loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=True, pin_memory=torch.cuda.is_available())


def _idx_path(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(directory: Path, name: str, magic: int) -> Tensor:
    path = _idx_path(directory, name)
    assert path is not None
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        content = file.read()
    found, count = struct.unpack(">II", content[:8])
    if found != magic:
        raise ValueError(f"{path} is not an MNIST IDX file (magic {found}, expected {magic})")
    header = 16 if magic == _IMAGES_MAGIC else 8
    values = count * (784 if magic == _IMAGES_MAGIC else 1)
    return torch.frombuffer(bytearray(content[header:]), dtype=torch.uint8)[:values]


def _as_image(pixels: Tensor) -> Any:
    try:
        from PIL import Image
    except ImportError:
        return pixels
    return Image.fromarray(pixels.numpy())  # 2-D uint8: greyscale ("L")


def _missing_message(root: str | os.PathLike, train: bool) -> str:
    names = " and ".join(f"{name}[.gz]" for name in _FILES[train])
    return (f"MNIST files not found: put {names} in {os.fspath(root)!r} "
            f"(or {os.fspath(Path(root) / 'MNIST' / 'raw')!r}), "
            f"set {MNIST_DIR_VARIABLE} to the directory holding them, or install torchvision to download them")
