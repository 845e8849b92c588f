"""Every example trains on a small slice of real MNIST and shows the behaviour it is there to teach."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLES = REPOSITORY / "examples"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


def mnist_directory() -> Path | None:
    chosen = os.environ.get("TRELLIS_MNIST_DIR") or REPOSITORY.parent / "shared" / "data" / "mnist"
    path = Path(chosen)
    return path if all((path / name).is_file() for name in MNIST_FILES) else None


MNIST = mnist_directory()
pytestmark = pytest.mark.skipif(
    MNIST is None, reason="real MNIST not found: set TRELLIS_MNIST_DIR to a directory with the four .gz files"
)


def run_example(name: str, tmp_path: Path, *flags: str) -> dict[str, float]:
    """Import examples/<name>.py (its sibling modules on sys.path) and run its main() on a slice of MNIST."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"trellis_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--data-dir", str(MNIST), "--root-dir", str(tmp_path), *flags])


def test_mnist_classifier(tmp_path):
    results = run_example("mnist_classifier", tmp_path, "--max-epochs", "1", "--limit-train-batches", "30")
    assert results["test_acc"] > 0.7


def test_residual_mlp_learns_with_plain_sgd(tmp_path):
    results = run_example("residual_mlp", tmp_path, "--max-epochs", "1", "--limit-train-batches", "100",
                          "--limit-val-batches", "4")
    assert results["val_acc"] > 0.6


def test_autoencoder_beats_answering_the_mean_image(tmp_path):
    results = run_example("autoencoder", tmp_path, "--max-epochs", "1", "--limit-train-batches", "30",
                          "--limit-val-batches", "2")
    assert results["val_loss"] < 0.9 * results["val_baseline_loss"]


def test_gan_steps_both_optimizers_each_batch(tmp_path):
    results = run_example("gan", tmp_path, "--max-epochs", "1", "--limit-train-batches", "10",
                          "--limit-val-batches", "1")
    assert results["global_step"] == 2 * 10
    assert math.isfinite(results["d_loss"]) and math.isfinite(results["g_loss"])
    assert results["val_d_real"] > results["val_d_fake"]


def test_transfer_learning_keeps_the_child_frozen_then_fine_tunes_it(tmp_path):
    results = run_example("transfer_learning", tmp_path, "--max-epochs", "2", "--limit-train-batches", "15",
                          "--limit-val-batches", "2")
    assert results["pretrain_val_acc"] > 0.5  # chance is 0.2
    assert results["shift_while_frozen"] == 0.0
    assert results["shift_after_fine_tuning"] > 0.0
    assert results["val_acc"] > 0.4
