"""What self.log records: latest step values and weighted epoch aggregates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trellis.data import infer_batch_size
from trellis.errors import ConfigurationError

_REDUCTIONS = ("mean", "sum", "max", "min")


@dataclass
class _EpochAggregate:
    total: torch.Tensor
    weight: float
    reduce_fx: str
    sync_dist: bool

    @classmethod
    def start(cls, value: torch.Tensor, reduce_fx: str, sync_dist: bool) -> _EpochAggregate:
        value = value.float() if not value.is_floating_point() else value
        total = torch.zeros_like(value) if reduce_fx in ("mean", "sum") else value
        return cls(total, 0.0, reduce_fx, sync_dist)

    def add(self, value: torch.Tensor, weight: float) -> None:
        if self.reduce_fx == "mean":
            self.total = self.total + value * weight
            self.weight += weight
        elif self.reduce_fx == "sum":
            self.total = self.total + value
        elif self.reduce_fx == "max":
            self.total = torch.maximum(self.total, value)
        else:
            self.total = torch.minimum(self.total, value)

    def result(self, reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> torch.Tensor:
        if self.reduce_fx == "mean":
            if self.sync_dist:
                total, weight = reduce(self.total, "sum"), reduce(torch.tensor(self.weight, device=self.total.device), "sum")
                return total / weight
            return self.total / self.weight
        return reduce(self.total, self.reduce_fx) if self.sync_dist else self.total


class MetricStore:
    """Collects self.log calls for one Trainer; `stage_defaults` says where logging happens now.

    Training steps default to on_step=True, on_epoch=False; everything else to on_epoch=True.
    """

    def __init__(self, reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> None:
        self._reduce = reduce
        #: whether the current hook is a training step (sets the on_step/on_epoch defaults).
        self.in_training_step = False
        #: dataloader index suffix while several evaluation loaders run.
        self.dataloader_suffix = ""
        #: the batch being processed: its size weighs epoch means, found only when a mean needs it.
        self.current_batch: Any = None
        self._sized: tuple[Any, int | None] = (None, None)
        #: loop that logs now ("train", "validation", "test"); each keeps its own epoch aggregates.
        self.stage = "train"
        self.step_values: dict[str, torch.Tensor] = {}
        self._epoch: dict[str, dict[str, _EpochAggregate]] = {}
        self.logger_keys: set[str] = set()
        self.prog_bar_keys: set[str] = set()
        #: finished values (step values, reduced epoch aggregates).
        self._finished: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        """Forget every metric: each of fit, validate, test and predict starts with none (as in Lightning)."""
        self.step_values.clear()
        self._epoch.clear()
        self._finished.clear()
        self.logger_keys.clear()
        self.prog_bar_keys.clear()
        self.stage = "train"
        self.dataloader_suffix = ""

    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool,
        logger: bool,
        on_step: bool | None,
        on_epoch: bool | None,
        reduce_fx: str,
        sync_dist: bool,
        batch_size: int | None,
    ) -> None:
        if reduce_fx not in _REDUCTIONS:
            raise ConfigurationError(f"self.log({name!r}, reduce_fx={reduce_fx!r}): use one of {_REDUCTIONS}")
        if on_step is None:
            on_step = self.in_training_step
        if on_epoch is None:
            on_epoch = not self.in_training_step
        if not on_step and not on_epoch:
            raise ConfigurationError(f"self.log({name!r}) with on_step=False and on_epoch=False records nothing")
        tensor = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        if tensor.numel() != 1:
            raise ConfigurationError(f"self.log({name!r}) got a tensor of shape {tuple(tensor.shape)}: log a scalar")
        name = name + self.dataloader_suffix
        step_name, epoch_name = (f"{name}_step", f"{name}_epoch") if on_step and on_epoch else (name, name)
        if on_step:
            if sync_dist:
                tensor = self._reduce(tensor, reduce_fx)
            self.step_values[step_name] = tensor
            self._finished[step_name] = tensor
            self._mark(step_name, logger, prog_bar)
        if on_epoch:
            weight = float(batch_size or self._batch_size() or 1)
            aggregates = self._epoch.setdefault(self.stage, {})
            aggregate = aggregates.get(epoch_name)
            if aggregate is None:
                aggregate = aggregates[epoch_name] = _EpochAggregate.start(tensor, reduce_fx, sync_dist)
            aggregate.add(tensor, weight)
            self._mark(epoch_name, logger, prog_bar)

    def _batch_size(self) -> int | None:
        batch, size = self._sized
        if batch is not self.current_batch:
            size = infer_batch_size(self.current_batch)
            self._sized = (self.current_batch, size)
        return size

    def _mark(self, name: str, logger: bool, prog_bar: bool) -> None:
        if logger:
            self.logger_keys.add(name)
        if prog_bar:
            self.prog_bar_keys.add(name)

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        """Latest value of every metric, with the running epoch aggregates of the current loop (as callbacks
        in an epoch-end hook expect); aggregates synchronised across processes appear once reduced."""
        live = {name: aggregate.result(self._reduce)
                for name, aggregate in self._epoch.get(self.stage, {}).items() if not aggregate.sync_dist}
        return {**self._finished, **live}

    @callback_metrics.setter
    def callback_metrics(self, metrics: dict[str, torch.Tensor]) -> None:
        self._finished = dict(metrics)

    def record(self, values: dict[str, torch.Tensor]) -> None:
        """Values a callback adds to callback_metrics without logging them (LearningRateMonitor's rates)."""
        self._finished.update(values)

    def state_dict(self) -> dict[str, Any]:
        """Unfinished epoch aggregates and latest values: a resumed epoch logs what the whole epoch would."""
        return {
            "epoch": {stage: {name: vars(aggregate).copy() for name, aggregate in aggregates.items()}
                      for stage, aggregates in self._epoch.items()},
            "callback_metrics": dict(self._finished),
            "step_values": dict(self.step_values),
            "logger_keys": sorted(self.logger_keys),
            "prog_bar_keys": sorted(self.prog_bar_keys),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._epoch = {stage: {name: _EpochAggregate(**fields) for name, fields in aggregates.items()}
                       for stage, aggregates in state["epoch"].items()}
        self._finished = dict(state["callback_metrics"])
        self.step_values = dict(state.get("step_values", {}))
        self.logger_keys, self.prog_bar_keys = set(state["logger_keys"]), set(state["prog_bar_keys"])

    def pop_step_metrics(self, as_floats: bool = True) -> dict[str, float]:
        """Step values destined for loggers, as floats (nothing when not asked for); forgets them."""
        metrics = {name: float(value) for name, value in self.step_values.items()
                   if as_floats and name in self.logger_keys}
        self.step_values.clear()
        return metrics

    def reduce_epoch(self, stage: str, as_floats: bool = True) -> dict[str, float]:
        """Finish a loop's epoch aggregates into callback_metrics; the logger's share as floats when asked."""
        logged = {}
        for name, aggregate in self._epoch.pop(stage, {}).items():
            value = aggregate.result(self._reduce)
            self._finished[name] = value
            if as_floats and name in self.logger_keys:
                logged[name] = float(value)
        return logged

    def progress_bar_metrics(self) -> dict[str, float]:
        metrics = self.callback_metrics
        return {name: float(metrics[name]) for name in self.prog_bar_keys if name in metrics}
