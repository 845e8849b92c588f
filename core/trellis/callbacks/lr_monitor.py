"""LearningRateMonitor: log each optimizer param group's learning rate (and momentum) as training goes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError


class LearningRateMonitor(Callback):
    """Logs `lr-<Optimizer>` (`/pg<N>` per extra param group, `-momentum` with log_momentum) to the loggers.

    logging_interval "step" logs every `log_every_n_steps` optimizer steps, "epoch" at each epoch start,
    None follows each optimizer's scheduler interval (step when it has none). The values also stay in
    `self.lrs` (name -> list of values).
    """

    def __init__(self, logging_interval: str | None = None, log_momentum: bool = False,
                 log_weight_decay: bool = False) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise ConfigurationError(
                f"LearningRateMonitor(logging_interval={logging_interval!r}): use 'step', 'epoch' or None"
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}
        self._names: list[list[str]] = []
        self._intervals: list[str] = []
        self._last_logged_step = -1

    def on_train_start(self, trainer: Any) -> None:
        if not trainer.loggers:
            raise ConfigurationError(
                "LearningRateMonitor needs a logger to write to: pass logger=True (CSV) or another logger to the "
                "Trainer, or remove the callback"
            )
        self._names = _group_names(trainer.optimizers, trainer.lr_scheduler_configs)
        scheduled = {config.optimizer_index: config.interval for config in trainer.lr_scheduler_configs}
        self._intervals = [self.logging_interval or scheduled.get(index, "step")
                           for index in range(len(trainer.optimizers))]
        self.lrs = {name: [] for names in self._names for name in names}

    def on_train_batch_start(self, trainer: Any) -> None:
        step = trainer.global_step
        if step == self._last_logged_step or step % trainer.log_every_n_steps:
            return
        self._last_logged_step = step
        self._log(trainer, "step")

    def on_train_epoch_start(self, trainer: Any) -> None:
        self._log(trainer, "epoch")

    def _log(self, trainer: Any, interval: str) -> None:
        metrics: dict[str, float] = {}
        for optimizer, names, chosen in zip(trainer.optimizers, self._names, self._intervals):
            if chosen != interval:
                continue
            for group, name in zip(_unwrap(optimizer).param_groups, names):
                metrics[name] = float(group["lr"])
                self.lrs[name].append(metrics[name])
                if self.log_momentum:
                    metrics[f"{name}-momentum"] = _momentum(group)
                if self.log_weight_decay:
                    metrics[f"{name}-weight_decay"] = float(group.get("weight_decay", 0.0))
        trainer._run.log_metrics(metrics)


def _unwrap(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)


def _momentum(group: dict[str, Any]) -> float:
    """SGD-style momentum, or beta1 for Adam-style optimizers; 0 when the optimizer has neither."""
    if "betas" in group:
        return float(group["betas"][0])
    return float(group.get("momentum", 0.0))


def _group_names(optimizers: list[Any], scheduler_configs: list[Any]) -> list[list[str]]:
    """`lr-<scheduler name or optimizer class>`, `-<n>` on repeats, `/pg<n>` when there are several groups."""
    given = {config.optimizer_index: config.name for config in scheduler_configs if config.name}
    seen: Counter[str] = Counter()
    names = []
    for index, optimizer in enumerate(optimizers):
        base = given.get(index) or f"lr-{type(_unwrap(optimizer)).__name__}"
        repeat, seen[base] = seen[base], seen[base] + 1
        base = f"{base}-{repeat}" if repeat else base
        groups = _unwrap(optimizer).param_groups
        names.append([base if len(groups) == 1 else f"{base}/pg{number + 1}" for number in range(len(groups))])
    return names
