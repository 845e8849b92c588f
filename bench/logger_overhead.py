"""Per-step logging overhead of each logger plugin against no logger, in one run: CPU time and Python calls.

A tiny MLP trains on CPU (one torch thread) with two self.log calls every step and log_every_n_steps=1.
Per logger, per training step:

- thread us: CPU time of the training thread from on_train_start to on_train_end: what the loop itself pays.
- process us: CPU time of the whole process (every thread: the loggers' background threads too) from
  on_train_start until fit returns, so work a logger moved off the training thread or left for finalize is
  counted. CPU time, not wall time: on a shared machine other jobs' load swamps wall time, while CPU time
  stays the code's own cost. (wandb's own service process, wandb-core, is not counted.)
- wall us: wall time on the training thread, for reference.
- calls: Python function calls on the training thread (sys.setprofile counting 'call' and 'c_call' events)
  as the slope between N and 2N steps, so start-up cancels out; deterministic.

Times are the best (minimum) of `--repeats` interleaved trials. "null" is a logger that drops what it gets:
the kernel's own share of the cost. Each logger writes to a temporary directory: CSV and TensorBoard files,
MLflow to a local sqlite store (or MLFLOW_TRACKING_URI when set), wandb in offline mode. Loggers whose
distribution is not installed are reported as such.

    python bench/logger_overhead.py [--steps 2000] [--repeats 5] [--call-steps 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.plugin import Logger

LOGGERS = {
    "csv": "trellis_csv", "tensorboard": "trellis_tensorboard", "mlflow": "trellis_mlflow", "wandb": "trellis_wandb",
}


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


class NullLogger(Logger):
    """Receives the rows and drops them: what the kernel itself spends on having a logger."""

    name = "null"

    def log_metrics(self, metrics: Any, step: int) -> None:
        pass


class TrainingWindow(trellis.Callback):
    """Clocks at on_train_start and on_train_end; optionally counts the training thread's calls in between."""

    def __init__(self, count_calls: bool) -> None:
        self.count_calls = count_calls
        self.calls = 0

    def _count(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            self.calls += 1

    @staticmethod
    def clocks() -> tuple[float, float, float]:
        return time.perf_counter(), time.thread_time(), time.process_time()

    def on_train_start(self, trainer: Any) -> None:
        self.started = self.clocks()
        if self.count_calls:
            sys.setprofile(self._count)

    def on_train_end(self, trainer: Any) -> None:
        if self.count_calls:
            sys.setprofile(None)
        self.trained = self.clocks()


def run(logger: str | bool, steps: int, root: str, count_calls: bool = False) -> TrainingWindow:
    if logger == "null":
        logger = NullLogger()
    torch.manual_seed(0)
    inputs = torch.randn(steps * 8, 32)
    loader = DataLoader(TensorDataset(inputs, inputs.sum(1, keepdim=True)), batch_size=8)
    window = TrainingWindow(count_calls)
    trainer = trellis.Trainer(
        logger=logger, max_epochs=1, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=root, callbacks=[window],
    )
    trainer.fit(TinyMLP(), loader)
    window.returned = window.clocks()
    return window


def per_step_seconds(logger: str | bool, steps: int, root: str) -> tuple[float, float, float]:
    """One trial, seconds per step: training-thread CPU, process CPU through finalize, training wall time."""
    window = run(logger, steps, root)
    (wall, thread, _), (wall_end, thread_end, _) = window.started, window.trained
    process, process_end = window.started[2], window.returned[2]
    return (thread_end - thread) / steps, (process_end - process) / steps, (wall_end - wall) / steps


def calls_per_step(logger: str | bool, steps: int, root: str) -> float:
    short, long = run(logger, steps, root, count_calls=True), run(logger, 2 * steps, root, count_calls=True)
    return (long.calls - short.calls) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many interleaved trials per logger")
    parser.add_argument("--call-steps", type=int, default=200, help="N for the call count (N and 2N steps)")
    arguments = parser.parse_args()
    torch.set_num_threads(1)  # as bench/overhead.py: idle intra-op threads spinning on a busy machine swamp the step
    with tempfile.TemporaryDirectory() as root:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        candidates: list[str | bool] = [False, "null", *(name for name, package in LOGGERS.items()
                                                 if importlib.util.find_spec(package) is not None)]
        for candidate in candidates:  # warm-up: imports, the sqlite store's schema, wandb's service
            run(candidate, 20, root)
        trials: dict[str | bool, list[tuple[float, float, float]]] = {candidate: [] for candidate in candidates}
        for _ in range(arguments.repeats):
            for candidate in candidates:
                trials[candidate].append(per_step_seconds(candidate, arguments.steps, root))
        timings = {candidate: tuple(min(trial[index] for trial in runs) for index in range(3))
                   for candidate, runs in trials.items()}
        calls = {candidate: calls_per_step(candidate, arguments.call_steps, root) for candidate in candidates}
    base = timings[False]
    print(f"{arguments.steps} steps, best of {arguments.repeats} interleaved trials (calls: slope between "
          f"{arguments.call_steps} and {2 * arguments.call_steps} steps), tiny MLP on CPU, self.log x2 every step")
    print("per step, and extra over no logger (+):")
    print(f"{'logger':<12} {'thread us':>10} {'+':>7} {'process us':>11} {'+':>7} {'wall us':>9} {'+':>7} "
          f"{'calls':>6} {'+':>5}")
    for candidate, figures in timings.items():
        cells = " ".join(f"{value * 1e6:>{width}.1f} {(value - base[index]) * 1e6:>+7.1f}"
                         for index, (value, width) in enumerate(zip(figures, (10, 11, 9))))
        print(f"{candidate or 'none':<12} {cells} {calls[candidate]:>6.1f} {calls[candidate] - calls[False]:>+5.1f}")
    for name in LOGGERS:
        if name not in timings:
            print(f"{name:<12} not installed (pip install trellis-{name})")


if __name__ == "__main__":
    main()
