"""Per-step logging overhead of each logger plugin against no logger, in one run.

A tiny MLP trains on CPU with self.log every step and log_every_n_steps=1; the time between on_train_start
and on_train_end (so run start-up and finalize are not counted) is divided by the steps. Each logger writes
to a temporary directory: CSV and TensorBoard files, MLflow to a local sqlite store (or MLFLOW_TRACKING_URI
when set), wandb in offline mode. Loggers whose distribution is not installed are reported as such.

    python bench/logger_overhead.py [--steps 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis

LOGGERS = {"csv": "trellis_csv", "tensorboard": "trellis_tensorboard", "mlflow": "trellis_mlflow", "wandb": "trellis_wandb"}


class TinyMLP(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.net(inputs), targets)
        self.log("loss", loss)
        self.log("lr", 0.01)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StepClock(trellis.Callback):
    """Seconds per training step, start-up and finalize excluded."""

    def on_train_start(self, trainer: Any) -> None:
        self.started, self.first_step = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer: Any) -> None:
        self.per_step = (time.perf_counter() - self.started) / (trainer.global_step - self.first_step)


def seconds_per_step(logger: str | bool, steps: int, root: str) -> float:
    torch.manual_seed(0)
    inputs = torch.randn(steps * 8, 32)
    loader = DataLoader(TensorDataset(inputs, inputs.sum(1, keepdim=True)), batch_size=8)
    clock = StepClock()
    trainer = trellis.Trainer(
        logger=logger, max_epochs=1, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=root, callbacks=[clock],
    )
    trainer.fit(TinyMLP(), loader)
    return clock.per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs per logger")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        candidates: list[str | bool] = [False, *(name for name, package in LOGGERS.items()
                                                 if importlib.util.find_spec(package) is not None)]
        timings = {
            candidate: statistics.median(seconds_per_step(candidate, arguments.steps, root)
                                         for _ in range(arguments.repeats))
            for candidate in candidates
        }
    baseline = timings[False]
    print(f"{arguments.steps} steps, median of {arguments.repeats}, tiny MLP on CPU, self.log x2 every step")
    print(f"{'logger':<12} {'us/step':>9} {'overhead us':>12} {'ratio':>7}")
    for candidate, per_step in timings.items():
        label = candidate or "none"
        print(f"{label:<12} {per_step * 1e6:>9.1f} {(per_step - baseline) * 1e6:>12.1f} {per_step / baseline:>7.2f}")
    for name in LOGGERS:
        if name not in timings:
            print(f"{name:<12} not installed (pip install trellis-{name})")


if __name__ == "__main__":
    main()
