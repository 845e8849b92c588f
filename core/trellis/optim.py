"""Reading what configure_optimizers returns, in every form Lightning users write."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from trellis.errors import ConfigurationError
from trellis.utils.rank_zero import rank_zero_warn


@dataclass
class SchedulerConfig:
    """A learning-rate scheduler and when to step it."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None
    optimizer_index: int = 0

    @property
    def needs_metric(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


@dataclass
class OptimizerSetup:
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    schedulers: list[SchedulerConfig] = field(default_factory=list)


_SCHEDULER_KEYS = {"scheduler", "interval", "frequency", "monitor", "strict", "name"}


def parse_optimizers(result: Any, automatic: bool = True) -> OptimizerSetup:
    """Normalise an optimizer; a list; (optimizers, schedulers); a dict; a list of dicts; or None.

    automatic=False (manual optimization): the user steps the schedulers, so none needs a monitored metric.
    """
    if result is None:
        return OptimizerSetup()
    if isinstance(result, torch.optim.Optimizer):
        return OptimizerSetup([result])
    if isinstance(result, Mapping):
        return _from_dicts([result], automatic)
    if isinstance(result, Sequence):
        items = list(result)
        if len(items) == 2 and all(isinstance(item, Sequence) and not isinstance(item, Mapping) for item in items):
            optimizers, schedulers = list(items[0]), list(items[1])
            _check_optimizers(optimizers)
            return OptimizerSetup(optimizers, [_scheduler_config(item, 0, None, automatic) for item in schedulers])
        if items and all(isinstance(item, Mapping) for item in items):
            return _from_dicts(items, automatic)
        _check_optimizers(items)
        return OptimizerSetup(items)
    raise ConfigurationError(
        f"configure_optimizers returned a {type(result).__name__}; return an optimizer, a list of optimizers, "
        "(optimizers, schedulers), or a dict with 'optimizer' and optionally 'lr_scheduler'"
    )


def _from_dicts(items: Sequence[Mapping], automatic: bool) -> OptimizerSetup:
    setup = OptimizerSetup()
    for index, item in enumerate(items):
        if "optimizer" not in item:
            raise ConfigurationError(
                f"the dict returned by configure_optimizers has keys {sorted(item)} but no 'optimizer'; add it"
            )
        setup.optimizers.append(item["optimizer"])
        if item.get("lr_scheduler") is not None:
            setup.schedulers.append(_scheduler_config(item["lr_scheduler"], index, item.get("monitor"), automatic))
    _check_optimizers(setup.optimizers)
    return setup


def _scheduler_config(value: Any, optimizer_index: int, monitor: str | None, automatic: bool) -> SchedulerConfig:
    if isinstance(value, Mapping):
        unknown = set(value) - _SCHEDULER_KEYS
        if unknown or "scheduler" not in value:
            raise ConfigurationError(
                f"lr_scheduler dict keys {sorted(value)} are not understood: it takes 'scheduler' and optionally "
                f"{sorted(_SCHEDULER_KEYS - {'scheduler'})}"
            )
        config = SchedulerConfig(**value, optimizer_index=optimizer_index)
    else:
        config = SchedulerConfig(value, optimizer_index=optimizer_index)
    if config.interval not in ("step", "epoch"):
        raise ConfigurationError(f"lr_scheduler interval={config.interval!r}: use 'step' or 'epoch'")
    if not automatic:  # the user steps the scheduler: what says when and with which metric is not used
        ignored = [key for key in ("monitor", "strict") if isinstance(value, Mapping) and key in value]
        if ignored:
            rank_zero_warn(f"the lr scheduler dict holds {ignored}, but the keys will be ignored in manual "
                           "optimization: step the scheduler yourself (self.lr_schedulers().step(...))", RuntimeWarning)
        config.monitor = None
        return config
    config.monitor = config.monitor or monitor
    if config.needs_metric and config.monitor is None:
        raise ConfigurationError(
            "ReduceLROnPlateau needs a metric: return {'optimizer': ..., 'lr_scheduler': ..., 'monitor': 'val_loss'}"
        )
    return config


def _check_optimizers(optimizers: list[Any]) -> None:
    for optimizer in optimizers:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigurationError(
                f"configure_optimizers gave a {type(optimizer).__name__} where an optimizer belongs; return "
                "torch.optim.Optimizer objects"
            )


class StepsThrough(Protocol):
    """What a wrapped optimizer's step goes through: the fit's optimizer_step service."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None,
                       optimizer_index: int = 0) -> Any: ...


class StrategyOptimizer:
    """An optimizer as `Module.optimizers()` hands it out: `step()` goes through the strategy and precision
    (loss scaling, strategies that own the step, the before-step hooks).

    `wrap` makes an instance of a subclass of the optimizer's own class that shares its state and param
    groups, so `isinstance(opt, torch.optim.SGD)` holds in user code, as with Lightning's wrapper.
    """

    _optimizer: torch.optim.Optimizer
    _steps_through: StepsThrough
    _index: int

    @classmethod
    def wrap(cls, optimizer: torch.optim.Optimizer, steps_through: StepsThrough, index: int = 0) -> StrategyOptimizer:
        kind = type(f"Trellis{type(optimizer).__name__}", (cls, type(optimizer)), {})
        wrapper: StrategyOptimizer = object.__new__(kind)
        wrapper.__dict__ = {key: value for key, value in optimizer.__dict__.items() if key not in ("step", "__del__")}
        wrapper._optimizer, wrapper._steps_through, wrapper._index = optimizer, steps_through, index
        return wrapper

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer this wraps."""
        return self._optimizer

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return self._steps_through.optimizer_step(self._optimizer, closure, self._index)

    def __repr__(self) -> str:
        return f"StrategyOptimizer({self._optimizer!r})"
