"""The learning-rate range test: raise the rate step by step and watch the loss."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError
from trellis.utils.rank_zero import rank_zero_info, warn_once

MODES = ("exponential", "linear")


@dataclass
class LRFinderResult:
    """The curve of one range test: `results` holds the lists "lr" and "loss" (smoothed), step by step."""

    min_lr: float
    max_lr: float
    num_training: int
    mode: str
    results: dict[str, list[float]] = field(default_factory=lambda: {"lr": [], "loss": []})

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The rate where the loss falls fastest (steepest negative slope), ignoring the curve's ends.

        None (with a warning) when too few finite points remain; run more steps (num_training).
        """
        end = len(self.results["loss"]) - skip_end
        losses = torch.tensor(self.results["loss"][skip_begin:end], dtype=torch.float64)
        rates = self.results["lr"][skip_begin:end]
        finite = torch.isfinite(losses)
        if int(finite.sum()) < 2:
            warn_once(
                f"the learning-rate finder recorded too few finite losses ({int(finite.sum())}) after skipping "
                f"{skip_begin} at the start and {skip_end} at the end to suggest a rate: raise num_training or "
                "lower skip_begin"
            )
            return None
        indices = torch.nonzero(finite).flatten()
        slopes = torch.gradient(losses[indices])[0]
        return rates[int(indices[int(torch.argmin(slopes))])]

    def plot(self, path: str | os.PathLike, suggest: bool = True) -> Path:
        """Save the loss-over-rate curve: a picture with matplotlib, else the points as CSV (path.csv).

        Returns the file written.
        """
        suggestion = self.suggestion() if suggest and len(self.results["lr"]) >= 13 else None
        try:
            from matplotlib.figure import Figure
        except ImportError:
            target = Path(path).with_suffix(".csv")
            self._write_csv(target)
            rank_zero_info(f"matplotlib is not installed: wrote the learning-rate curve as CSV to {target} "
                           "(pip install matplotlib for a picture)")
            return target
        figure = Figure()
        axes = figure.subplots()
        axes.plot(self.results["lr"], self.results["loss"])
        if self.mode == "exponential":
            axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss (smoothed)")
        if suggestion is not None:
            index = self.results["lr"].index(suggestion)
            axes.plot(suggestion, self.results["loss"][index], marker="o", color="red",
                      label=f"suggested {suggestion:.3g}")
            axes.legend()
        target = Path(path)
        figure.savefig(target)
        return target

    def _write_csv(self, target: Path) -> None:
        with open(target, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["lr", "loss"])
            writer.writerows(zip(self.results["lr"], self.results["loss"]))

    def rate_at(self, step: int) -> float:
        """The learning rate of a step: geometric (exponential) or even (linear) spacing from min to max."""
        fraction = step / max(1, self.num_training - 1)
        if self.mode == "exponential":
            return self.min_lr * (self.max_lr / self.min_lr) ** fraction
        return self.min_lr + (self.max_lr - self.min_lr) * fraction


class LearningRateSweep(Callback):
    """Sets each step's rate on every param group and records the smoothed loss; stops on divergence."""

    def __init__(self, result: LRFinderResult, early_stop_threshold: float | None, beta: float = 0.98) -> None:
        self.result = result
        self.early_stop_threshold = early_stop_threshold
        self.beta = beta
        self._average = 0.0
        self._best = math.inf
        self._window: list[float] = []
        self._step_before = 0

    def on_train_start(self, trainer: Any) -> None:
        trainer.lr_scheduler_configs = []  # the sweep owns the rate; the user's schedulers would fight it

    def on_train_batch_start(self, trainer: Any) -> None:
        self._step_before = trainer.global_step
        rate = self.result.rate_at(len(self.result.results["lr"]))
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate

    def on_train_batch_end(self, trainer: Any, outputs: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            raise ConfigurationError(
                "lr_find needs the loss: make training_step return it (a tensor or a dict with 'loss'), also "
                "under manual optimization"
            )
        self._window.append(float(loss.detach().float().mean()))
        if trainer.global_step == self._step_before:  # inside an accumulation window: no step taken yet
            return
        self._record(trainer, sum(self._window) / len(self._window))
        self._window = []

    def _record(self, trainer: Any, loss: float) -> None:
        results = self.result.results
        step = len(results["lr"])
        self._average = self.beta * self._average + (1 - self.beta) * loss
        smoothed = self._average / (1 - self.beta ** (step + 1))
        results["lr"].append(self.result.rate_at(step))
        results["loss"].append(smoothed)
        diverged = (self.early_stop_threshold is not None and step > 1
                    and (not math.isfinite(smoothed) or smoothed > self.early_stop_threshold * self._best))
        self._best = min(self._best, smoothed)
        if diverged or len(results["lr"]) >= self.result.num_training:
            trainer.should_stop = True


def check_range(min_lr: float, max_lr: float, num_training: int, mode: str) -> None:
    if mode not in MODES:
        raise ConfigurationError(f"lr_find(mode={mode!r}): use 'exponential' or 'linear'")
    if not 0 < min_lr < max_lr:
        raise ConfigurationError(f"lr_find(min_lr={min_lr}, max_lr={max_lr}): need 0 < min_lr < max_lr")
    if num_training < 2:
        raise ConfigurationError(f"lr_find(num_training={num_training}): run at least 2 steps")
