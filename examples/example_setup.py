"""What every example shares: its command-line flags and the seeded train/validation split."""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import Dataset, random_split

from digits_data import load_digits_splits

SPLIT_SEED = 42


def example_parser(description: str | None, max_epochs: int, batch_size: int) -> argparse.ArgumentParser:
    """--data-dir, --max-epochs, --limit-train-batches, --batch-size and --root-dir, as every example takes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="directory with the four MNIST .gz files (default: TRELLIS_MNIST_DIR, "
                                           "else the bundled scikit-learn digits)")
    parser.add_argument("--max-epochs", type=int, default=max_epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--limit-train-batches", type=batch_limit, default=1.0,
                        help="a fraction of the training batches (0.1) or a count (20)")
    parser.add_argument("--limit-val-batches", type=batch_limit, default=1.0)
    parser.add_argument("--root-dir", default=None, help="where logs and checkpoints go (default: trellis_runs/NAME)")
    return parser


def batch_limit(text: str) -> int | float:
    """'0.25' (with a point) is a fraction of the batches, '20' a count."""
    return float(text) if "." in text else int(text)


def digit_splits(data_dir: str | None) -> tuple[Dataset, Dataset, Dataset, str]:
    """(train, validation, test, description): a seeded split holding out 1/12 of the training set.

    On MNIST that is the usual 55000/5000 split of the 60000 training images.
    """
    train_set, test_set, description = load_digits_splits(data_dir)
    validation_size = len(train_set) // 12
    train_set, validation_set = random_split(
        train_set, [len(train_set) - validation_size, validation_size],
        generator=torch.Generator().manual_seed(SPLIT_SEED),
    )
    return train_set, validation_set, test_set, description
