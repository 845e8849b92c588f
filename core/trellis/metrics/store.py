"""What self.log records, and what callback_metrics, logged_metrics and progress_bar_metrics show: Lightning's
rules, for one Trainer.

Each loop keeps its logged values: training (values of the fit's epochs), validation and test. A loop is in
its batches (values show per step) or past them (values show as epoch reductions). Reading the three
dictionaries merges what the running loop shows now into what they held, as Lightning's do:

- the loggers and progress bar get `name` (or `name_step` and `name_epoch` when a value is logged both on
  step and on epoch), with `/dataloader_idx_N` appended for each of several evaluation loaders;
- callback_metrics gets the same keys and the bare `name`: training values while training runs (per step,
  then the epoch's), evaluation values once their epoch is reduced;
- all three start empty at each fit, validate, test and predict, and after the sanity check.

The loops say which hook runs (`fx`), when batches start and when an epoch's batches are over; logging a
value costs a few attribute reads when it is logged again as it was before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from trellis.errors import ConfigurationError
from trellis.metrics.hook_rules import resolve_levels
from trellis.metrics.logged_value import LoggedValue
from trellis.metrics.metric_states import find_metric, load_module_metric_states, module_metric_states
from trellis.metrics.values import (
    as_scalar_tensor,
    batch_size_of,
    check_loggable,
    default_float_dtype,
    is_metric,
    metric_types,
    reduction_name,
)
from trellis.utils.rank_zero import warn_once

if TYPE_CHECKING:
    from trellis.run import Run

_Tensor = torch.Tensor
_FLOAT32, _FLOAT64 = torch.float32, torch.float64
_Key = tuple[str | None, str, int | None]
STATE_VERSION = 2


class _Loop:
    """The values one loop logged."""

    def __init__(self, training: bool) -> None:
        self.training = training
        self.values: dict[_Key, LoggedValue] = {}
        #: some value is logged per step (evaluation then sends step rows to the loggers).
        self.has_step_values = False

    def reset(self) -> None:
        for value in self.values.values():
            if value.updated:
                value.reset()


class MetricStore:
    """Collects the self.log calls of one Trainer; see the module docstring for what shows where."""

    def __init__(self, reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> None:
        self._reduce = reduce
        #: the hook (or step method) running now, as Lightning names it; None outside the loops.
        self.fx: str | None = None
        #: the running loop is in its batches (values show per step), else before or past them.
        self.in_batches = False
        #: the loader of the running evaluation batch when there are several, else None.
        self.dataloader_idx: int | None = None
        #: the batch being processed: its size weighs epoch means; None between batches (weight 1).
        self.current_batch: Any = None
        self._sized_batch: Any = None
        self._batch_size = 1
        self._loops = {"train": _Loop(True), "validation": _Loop(False), "test": _Loop(False)}
        self._loop: _Loop | None = self._loops["train"]
        self._values: dict[_Key, LoggedValue] = self._loop.values
        #: the interrupted loops while an evaluation runs inside fit: (loop, in_batches, dataloader_idx).
        self._suspended: list[tuple[_Loop | None, bool, int | None]] = []
        self._callback: dict[str, torch.Tensor] = {}
        self._logged: dict[str, torch.Tensor] = {}
        self._progress_bar: dict[str, float] = {}
        #: evaluation batches logged per (stage, loader) since the loaders were made: the step of their rows.
        self._evaluation_steps: dict[tuple[str, int], int] = {}
        self._evaluation_loaders: dict[str, tuple[int, ...] | None] = {}
        self._module: Any = None
        self._distributed = False
        self._has_loggers = True
        self._metric_attributes: dict[int, str] | None = None

    # -- the loops' side ------------------------------------------------------------------------
    def start(self, run: Run) -> None:
        """A fit, validate, test or predict starts: nothing logged before shows any more."""
        self._module, self._has_loggers = run.module, bool(run.loggers)
        self._distributed = run.strategy.world_size > 1
        self._metric_attributes = None
        self._evaluation_steps.clear()
        self._evaluation_loaders.clear()
        self._suspended.clear()
        self.reset()
        self.fx = None
        self._activate(self._loops.get(run.entry.loop.name))

    def reset(self) -> None:
        """Forget every value and what the three dictionaries hold (also around the sanity check)."""
        for loop in self._loops.values():
            loop.reset()
        self._callback, self._logged, self._progress_bar = {}, {}, {}
        self.in_batches, self.dataloader_idx, self.current_batch = False, None, None

    def epoch_end_reached(self) -> None:
        """The running loop's batches are over: its values show as epoch reductions from now on."""
        if self.in_batches:
            self._merge(on_step=True)
        self.in_batches = False
        self.current_batch = None

    def logged_step_values(self) -> dict[str, torch.Tensor]:
        """The values the loggers get at a step (the latest of each value logged per step)."""
        return self._view(on_step=True)[1] if self._loop is not None else {}

    def end_train_epoch(self) -> dict[str, torch.Tensor]:
        """After on_train_epoch_end: the epoch's values for the loggers; the training values start over."""
        self.epoch_end_reached()
        logged = self._merge(on_step=False)
        self._loops["train"].reset()
        return logged

    def begin_evaluation(self, stage: str, loaders: Iterable[Any]) -> None:
        """An evaluation loop starts (inside fit, training resumes where it was after `end_evaluation`)."""
        if self.in_batches:
            self._merge(on_step=True)
        self._suspended.append((self._loop, self.in_batches, self.dataloader_idx))
        identities = tuple(id(loader) for loader in loaders)
        known = self._evaluation_loaders.get(stage, identities)
        if known is not None and known != identities:  # reloaded: Lightning counts steps anew
            self._evaluation_steps = {key: count for key, count in self._evaluation_steps.items() if key[0] != stage}
        self._evaluation_loaders[stage] = identities
        self._activate(self._loops[stage])
        self._loop.reset()  # type: ignore[union-attr]
        self.in_batches, self.dataloader_idx, self.current_batch = False, None, None

    def batch_started(self, batch: Any, dataloader_idx: int | None) -> None:
        """An evaluation batch (`dataloader_idx` None unless there are several loaders)."""
        self.current_batch, self.dataloader_idx, self.in_batches = batch, dataloader_idx, True

    def evaluation_step_row(self, stage: str, loader_index: int) -> tuple[dict[str, torch.Tensor], int]:
        """What the loggers get after an evaluation batch, and its step (the batches logged of that loader)."""
        key = (stage, loader_index)
        step = self._evaluation_steps.get(key, 0)
        self._evaluation_steps[key] = step + 1
        loop = self._loop
        wanted = self._has_loggers and loop is not None and loop.has_step_values
        return (self._view(on_step=True)[1] if wanted else {}), step

    def end_loader(self, sanity: bool) -> dict[str, torch.Tensor]:
        """One evaluation loader's batches are over: its epoch values (for the loggers), nothing in a sanity check."""
        self.epoch_end_reached()
        return {} if sanity else self._merge(on_step=False)

    def end_evaluation_epoch(self, sanity: bool) -> dict[str, torch.Tensor]:
        """After on_{stage}_epoch_end: the values not tied to one loader (hooks', or the only loader's)."""
        logged = self._merge(on_step=False)
        return {} if sanity else logged

    def end_evaluation(self) -> None:
        """The evaluation is over: its values start over; the interrupted loop (if any) shows again."""
        if self._loop is not None:
            self._merge(on_step=self.in_batches)
            self._loop.reset()
        loop, self.in_batches, self.dataloader_idx = self._suspended.pop()
        self._activate(loop)
        self.current_batch = None

    def begin_prediction(self) -> None:
        """Prediction logs nothing."""
        self._activate(None)

    def _activate(self, loop: _Loop | None) -> None:
        self._loop = loop
        self._values = loop.values if loop is not None else {}

    # -- self.log ---------------------------------------------------------------------------------
    def log(self, module: Any, name: str, value: Any, prog_bar: bool, logger: bool | None, on_step: bool | None,
            on_epoch: bool | None, reduce_fx: Any, enable_graph: bool, sync_dist: bool, sync_dist_group: Any,
            add_dataloader_idx: bool, batch_size: int | None, metric_attribute: str | None,
            rank_zero_only: bool) -> None:
        """Module.log: record one value (see Module.log for the arguments)."""
        dataloader_idx = self.dataloader_idx
        key = (self.fx, name, dataloader_idx if add_dataloader_idx else None)
        arguments = (prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist, sync_dist_group,
                     add_dataloader_idx, metric_attribute, rank_zero_only, dataloader_idx)
        try:
            logged: LoggedValue | None = self._values[key]
        except KeyError:
            logged = None
        kind = value.__class__
        if logged is None or logged.arguments != arguments:
            logged, value = self._register(module, key, arguments, value)
        elif logged.metric is not None:
            if value is not logged.metric:
                logged, value = self._register(module, key, arguments, value)
        elif kind is _Tensor and value.ndim == 0 and (value.dtype is _FLOAT32 or value.dtype is _FLOAT64):
            if value.requires_grad:
                value = value.detach()
        elif kind is float or kind is int:
            value = torch.tensor(value, dtype=logged.number_dtype, device=logged.device)
        else:
            logged, value = self._register(module, key, arguments, value)

        if logged.metric is not None:
            logged.step_value = value._forward_cache
            logged.computed = None
            logged.updated = True
            return
        if logged.on_step:
            logged.step_value = self._reduce(value, logged.reduce) if logged.sync else value
            if not logged.on_epoch:
                logged.updated = True
                return
        reduce = logged.reduce
        if reduce == "mean":
            if batch_size is None:
                batch = self.current_batch
                if batch is self._sized_batch:
                    batch_size = self._batch_size
                elif batch is None:
                    batch_size = 1
                else:
                    batch_size = self._batch_size = batch_size_of(batch)
                    self._sized_batch = batch
            logged.total = logged.total + value * batch_size
            logged.count += batch_size
        elif reduce == "sum":
            logged.total = logged.total + value
        elif reduce == "max":
            assert logged.total is not None  # None only for a torchmetrics.Metric, returned above
            logged.total = torch.maximum(logged.total, value)
        else:
            assert logged.total is not None
            logged.total = torch.minimum(logged.total, value)
        logged.computed = None
        logged.updated = True

    def _register(self, module: Any, key: _Key, arguments: tuple, value: Any) -> tuple[LoggedValue, Any]:
        """The checks and defaults of a self.log call seen for the first time (or with other arguments)."""
        (prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist, sync_dist_group,
         add_dataloader_idx, metric_attribute, rank_zero_only, dataloader_idx) = arguments
        fx, name = key[0], key[1]
        check_loggable(name, value)
        if fx is None:
            raise ConfigurationError(
                f"self.log({name!r}) was called where the Trainer does not log: outside the step methods and "
                "hooks of fit, validate and test (in configure_optimizers, a data hook, or code the Trainer does "
                "not call). Log from training_step, validation_step, test_step or an epoch or batch hook"
            )
        on_step, on_epoch = resolve_levels(fx, name, on_step, on_epoch)
        if self._loop is None:
            raise ConfigurationError(f"self.log({name!r}) was called in {fx}, but prediction does not log")
        if add_dataloader_idx and "/dataloader_idx_" in name:
            raise ConfigurationError(
                f"self.log({name!r}): the name must not contain '/dataloader_idx_' while add_dataloader_idx=True "
                "(the loader's index is appended for you); pass add_dataloader_idx=False to name loaders yourself"
            )
        metric = value if is_metric(value) else None
        device = _module_device(module)
        if metric is None:
            value = as_scalar_tensor(name, value, device)
            device = value.device
        elif metric_attribute is None:
            metric_attribute = self._metric_attribute(module, metric, name)
        if logger is None:
            logger = True
        elif logger and not self._has_loggers:
            warn_once(f"self.log({name!r}, ..., logger=True) was called, but the Trainer has no logger: pass "
                      "logger=True (the default logger) or a logger to the Trainer")
        sync = bool(sync_dist) and self._distributed and not rank_zero_only
        if sync and sync_dist_group is not None:
            raise ConfigurationError(
                f"self.log({name!r}, sync_dist_group=...): Trellis reduces logged values over all processes; "
                "leave sync_dist_group unset, or reduce over your group yourself and log the result"
            )
        logged = LoggedValue(
            fx, name, on_step=on_step, on_epoch=on_epoch, logger=logger, prog_bar=prog_bar,
            reduce=reduction_name(name, reduce_fx), sync=sync, add_dataloader_idx=add_dataloader_idx,
            dataloader_idx=dataloader_idx, metric_attribute=metric_attribute, rank_zero_only=rank_zero_only,
            enable_graph=enable_graph, metric=metric, number_dtype=default_float_dtype(), device=device,
        )
        existing = self._values.get(key)
        if existing is None:
            self._values[key] = logged
            if on_step:
                self._loop.has_step_values = True
        elif existing.meta != logged.meta:
            raise ConfigurationError(
                f"self.log({name!r}, ...) was called twice in {fx} with different arguments "
                f"({existing.differences(logged)}): log it the same way each time, or under another name"
            )
        else:
            logged = existing
            logged.metric = metric
        logged.arguments = arguments
        return logged, value

    def _metric_attribute(self, module: Any, metric: Any, name: str) -> str:
        """Where the module holds a logged torchmetrics.Metric (Lightning requires it to be an attribute)."""
        if self._metric_attributes is None:
            metric_class = metric_types()[0]  # type: ignore[index]
            self._metric_attributes = {id(child): path for path, child in module.named_modules()
                                       if isinstance(child, metric_class)}
        attribute = self._metric_attributes.get(id(metric))
        if attribute is None:
            held = sorted(self._metric_attributes.values())
            raise ConfigurationError(
                f"self.log({name!r}, <{type(metric).__name__}>): the metric is not an attribute of "
                f"{type(module).__name__}. Assign it in __init__ (self.{name.replace('/', '_')} = ...), or pass "
                f"metric_attribute= naming where it is held" + (f" (one of {held})" if held else "")
            )
        return attribute

    # -- what shows ---------------------------------------------------------------------------------
    def _epoch_value(self, logged: LoggedValue) -> Any:
        value = logged.computed
        if value is None:
            if logged.metric is not None:
                value = logged.metric.compute()
            elif logged.sync:
                assert logged.total is not None  # None only for a torchmetrics.Metric
                total = self._reduce(logged.total, logged.reduce)
                value = total / self._reduce(torch.tensor(float(logged.count), device=total.device), "mean") \
                    if logged.reduce == "mean" else total
            else:
                assert logged.total is not None
                value = logged.total / logged.count if logged.reduce == "mean" else logged.total
                if self._distributed and not logged.rank_zero_only:
                    warn_once(f"self.log({logged.name!r}) reduces its epoch value on each process alone: pass "
                              "sync_dist=True to reduce it over all processes")
            logged.computed = value
        return value

    def _view(self, on_step: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """What the running loop shows now: (callback, logger, progress bar) values."""
        callback: dict[str, Any] = {}
        logger: dict[str, Any] = {}
        progress_bar: dict[str, Any] = {}
        loop = self._loop
        if loop is None:
            return callback, logger, progress_bar
        dataloader_idx, to_callbacks = self.dataloader_idx, loop.training or not on_step
        for logged in list(loop.values.values()):
            if not logged.updated or logged.dataloader_idx != dataloader_idx:
                continue
            if on_step:
                if not logged.on_step or logged.step_value is None:
                    continue
                value, name = logged.step_value, logged.step_name
            else:
                if not logged.on_epoch:
                    continue
                value, name = self._epoch_value(logged), logged.epoch_name
            if not isinstance(value, _Tensor):
                raise ValueError(
                    f"the value of the metric logged as {logged.name!r} must be a tensor (its compute() or forward "
                    f"returned {type(value).__name__}): log each of its tensors under its own name"
                )
            value = value.detach()
            if logged.logger:
                logger[name] = value
            if to_callbacks:
                callback[logged.callback_name] = value
                callback[name] = value
            if logged.prog_bar:
                progress_bar[name] = value
        return callback, logger, progress_bar

    def _merge(self, on_step: bool) -> dict[str, Any]:
        """Keep what the running loop shows now in the three dictionaries; returns the loggers' share."""
        callback, logger, progress_bar = self._view(on_step)
        self._callback.update(callback)
        self._logged.update(logger)
        self._progress_bar.update({name: float(value) for name, value in progress_bar.items()})
        return logger

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        """What callbacks monitor (ModelCheckpoint, EarlyStopping, ReduceLROnPlateau): see the module docstring."""
        self._callback.update(self._view(self.in_batches)[0])
        return self._callback

    @callback_metrics.setter
    def callback_metrics(self, metrics: Mapping[str, torch.Tensor]) -> None:
        self._callback = dict(metrics)

    @property
    def logged_metrics(self) -> dict[str, torch.Tensor]:
        """Everything sent (or due) to the loggers, by name, latest value; no "epoch" or "step" of its own."""
        self._logged.update(self._view(self.in_batches)[1])
        return self._logged

    def progress_bar_metrics(self) -> dict[str, float]:
        self._progress_bar.update({name: float(value) for name, value in self._view(self.in_batches)[2].items()})
        return self._progress_bar

    def record(self, values: Mapping[str, torch.Tensor]) -> None:
        """Values a callback adds to callback_metrics without logging them (LearningRateMonitor's rates)."""
        self._callback.update(values)

    def record_logged(self, metrics: Mapping[str, Any]) -> None:
        """Metrics handed to the loggers by the loops (Lightning's log_metrics keeps them in logged_metrics)."""
        self._logged.update(metrics)

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The training values of the unfinished epoch, the three dictionaries, the evaluation step counts and
        the state of the module's torchmetrics: a resumed run logs what an uninterrupted one would."""
        train = self._loops["train"]
        in_batches = self._suspended[0][1] if self._suspended else self.in_batches
        return {
            "version": STATE_VERSION,
            "train": [logged.state_dict() for logged in train.values.values()],
            "train_in_batches": in_batches,
            "callback": dict(self._callback),
            "logged": dict(self._logged),
            "progress_bar": dict(self._progress_bar),
            "evaluation_steps": [[stage, index, count] for (stage, index), count in self._evaluation_steps.items()],
            "torchmetrics": module_metric_states(self._module),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:  # a checkpoint of an earlier Trellis: its monitored values
            self._callback = dict(state.get("callback_metrics", {}))
            return
        load_module_metric_states(self._module, state["torchmetrics"])
        train = self._loops["train"]
        train.values.clear()
        for saved in state["train"]:
            metric = find_metric(self._module, saved["metric_attribute"]) if saved["is_metric"] else None
            if saved["is_metric"] and metric is None:  # not a submodule: it starts over, as in Lightning
                continue
            logged = LoggedValue.from_state_dict(saved, metric)
            train.values[(logged.fx, logged.name, logged.dataloader_idx if logged.add_dataloader_idx else None)] = \
                logged
            train.has_step_values |= logged.on_step
        self.in_batches = state["train_in_batches"]
        self._callback, self._logged = dict(state["callback"]), dict(state["logged"])
        self._progress_bar = dict(state["progress_bar"])
        self._evaluation_steps = {(stage, index): count for stage, index, count in state["evaluation_steps"]}
        self._evaluation_loaders = dict.fromkeys({stage for stage, _, _ in state["evaluation_steps"]})


def _module_device(module: Any) -> torch.device:
    parameter = next(module.parameters(), None) if isinstance(module, torch.nn.Module) else None
    return parameter.device if parameter is not None else torch.device("cpu")
