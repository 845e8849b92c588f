"""LearningRateMonitor: log each optimizer param group's learning rate (and momentum, weight decay) as training
goes, under Lightning's names, straight to the loggers."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import torch

from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError
from trellis.utilities.rank_zero import rank_zero_warn


class LearningRateMonitor(Callback):
    """Logs `lr-<Optimizer>` for every optimizer (`lr-<Optimizer>-1` for a second one of a type, the scheduler's
    `name` when it has one), `/pg<N>` (or the group's "name") per param group when there are several, and
    `-momentum`, `-weight_decay` when asked.

    logging_interval "step" logs before the batches the loggers log at (every `log_every_n_steps`), "epoch" at
    each epoch start, None at each scheduler's interval (optimizers without a scheduler at both). Rows go to the
    loggers at the step they log at (`fit_loop.batches_that_stepped`); the values also land in
    `trainer.callback_metrics`, `lrs` (name -> values) and `last_momentum_values`/`last_weight_decay_values`.
    """

    def __init__(self, logging_interval: Literal["step", "epoch"] | None = None, log_momentum: bool = False,
                 log_weight_decay: bool = False, log_key_prefix: str | None = None) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise ConfigurationError(
                f"LearningRateMonitor(logging_interval={logging_interval!r}): logging_interval should be `step` or "
                "`epoch` or `None`."
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.log_key_prefix = log_key_prefix or ""
        self.lrs: dict[str, list[float]] = {}
        self.last_momentum_values: dict[str, float | None] = {}
        self.last_weight_decay_values: dict[str, float | None] = {}

    def on_train_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if not trainer.loggers:
            raise ConfigurationError(
                "Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger: pass logger=True (or "
                "another logger) to the Trainer, or remove the callback"
            )
        if self.log_momentum and _lacks(trainer, "momentum") and _lacks(trainer, "betas"):
            rank_zero_warn("You have set log_momentum=True, but some optimizers do not have momentum. This will log a "
                           "value 0 for the momentum.", category=RuntimeWarning)
        names = [name for _, group_names, _ in self._named_optimizers(trainer) for name in group_names]
        self.lrs = {name: [] for name in names}
        self.last_momentum_values = {f"{name}-momentum": None for name in names}
        self.last_weight_decay_values = {f"{name}-weight_decay": None for name in names}

    def on_train_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        loop = trainer.fit_loop
        if self.logging_interval == "epoch" or not (
                trainer.settings.logs_step_metrics(loop.batches_that_stepped, trainer.should_stop)):
            return
        self._log(trainer, "step" if self.logging_interval is None else "any")

    def on_train_epoch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.logging_interval != "step":
            self._log(trainer, "epoch" if self.logging_interval is None else "any")

    def _log(self, trainer: Any, interval: str) -> None:
        stats = self._extract_stats(trainer, interval)
        if stats and trainer.is_global_zero:
            step = trainer.fit_loop.batches_that_stepped
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=step)

    def _extract_stats(self, trainer: Any, interval: str) -> dict[str, float]:
        """The current values of the optimizers due at `interval` ("step", "epoch" or "any")."""
        named = self._named_optimizers(trainer)
        self._follow_new_groups([names for _, names, _ in named])
        stats: dict[str, float] = {}
        for optimizer, names, scheduled in named:
            if scheduled is None or interval in (scheduled, "any"):
                stats.update(self._optimizer_stats(optimizer, names))
        device = trainer.strategy.root_device
        trainer._metrics.record({name: torch.tensor(float(value), device=device) for name, value in stats.items()})
        return stats

    def _optimizer_stats(self, optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        use_betas = "betas" in optimizer.defaults
        for group, name in zip(optimizer.param_groups, names):
            stats[name] = group["lr"]
            self.lrs[name].append(group["lr"])
            if self.log_momentum:
                momentum = group["betas"][0] if use_betas else group.get("momentum", 0)
                stats[f"{name}-momentum"] = self.last_momentum_values[f"{name}-momentum"] = momentum
            if self.log_weight_decay:
                decay = group.get("weight_decay", 0)
                stats[f"{name}-weight_decay"] = self.last_weight_decay_values[f"{name}-weight_decay"] = decay
        return stats

    def _follow_new_groups(self, names: list[list[str]]) -> None:
        """An optimizer that gained param groups (finetuning) logs `/pg1` for what was logged without suffix."""
        for group_names in names:
            for name in group_names:
                unsuffixed = name.replace("/pg1", "")
                if "/pg1" in name and unsuffixed in self.lrs:
                    self.lrs[name] = self.lrs.pop(unsuffixed)
                elif name not in self.lrs:
                    self.lrs[name] = []

    def _named_optimizers(self, trainer: Any) -> list[tuple[torch.optim.Optimizer, list[str], str | None]]:
        """(optimizer, a name per param group, its scheduler's interval or None): scheduled optimizers first, in
        scheduler order, then the others."""
        seen: list[torch.optim.Optimizer] = []
        types_seen: Counter[type] = Counter()
        named = []
        for config in trainer.lr_scheduler_configs:
            optimizer = config.scheduler.optimizer
            base = config.name if config.name is not None else f"lr-{type(optimizer).__name__}"
            named.append((optimizer, self._group_names(optimizer, base, seen, types_seen, config.name is None),
                          config.interval))
        for optimizer in trainer.optimizers:
            optimizer = getattr(optimizer, "optimizer", optimizer)
            if any(optimizer is other for other in seen):
                continue
            base = f"lr-{type(optimizer).__name__}"
            named.append((optimizer, self._group_names(optimizer, base, seen, types_seen, True), None))
        return named

    def _group_names(self, optimizer: torch.optim.Optimizer, base: str, seen: list[torch.optim.Optimizer],
                     types_seen: Counter[type], counted: bool) -> list[str]:
        seen.append(optimizer)
        kind = type(optimizer)
        if counted:
            types_seen[kind] += 1
        groups = optimizer.param_groups
        given = [group.get("name", f"pg{index}") for index, group in enumerate(groups, start=1)]
        duplicates = {name for name in given if given.count(name) > 1}
        if duplicates:
            raise ConfigurationError(
                "A single `Optimizer` cannot have multiple parameter groups with identical `name` values. "
                f"{base} has duplicated parameter group names {duplicates}"
            )
        if kind in types_seen and types_seen[kind] > 1:
            base = f"{base}-{types_seen[kind] - 1}"
        if len(groups) > 1:
            names = [f"{base}/{name}" for name in given]
        else:
            names = [f"{base}/{groups[0]['name']}" if groups[0].get("name") else base]
        return [f"{self.log_key_prefix}{name}" for name in names]


def _lacks(trainer: Any, key: str) -> bool:
    """Whether some optimizer (of a scheduler, when there are schedulers) has no default for `key`."""
    if trainer.lr_scheduler_configs:
        return any(key not in config.scheduler.optimizer.defaults for config in trainer.lr_scheduler_configs)
    return any(key not in getattr(optimizer, "optimizer", optimizer).defaults for optimizer in trainer.optimizers)
