"""One self.log key: how it was logged (hook, levels, reduction) and what it holds now."""

from __future__ import annotations

from typing import Any

import torch

#: the starting total of each epoch reduction.
_START = {"mean": 0.0, "sum": 0.0, "max": float("-inf"), "min": float("inf")}
#: what identifies how a key is logged; logging it again from the same hook must use the same.
_META_FIELDS = ("on_step", "on_epoch", "logger", "prog_bar", "reduce", "sync", "add_dataloader_idx",
                "dataloader_idx", "metric_attribute", "rank_zero_only", "enable_graph")
_STATE_FIELDS = ("fx", "name", *_META_FIELDS, "updated", "step_value", "total", "count")


class LoggedValue:
    """A name logged from one hook (and, in evaluation with several loaders, one loader).

    `step_value` is the last value logged (a torchmetrics.Metric's forward value); `total` and `count` its
    reduction over the epoch so far (tensor values only). `updated` is False until it is logged after the
    last reset: only updated values reach callback_metrics, the loggers and the progress bar.
    """

    __slots__ = ("fx", "name", *_META_FIELDS, "metric", "arguments", "number_dtype", "device", "callback_name",
                 "step_name", "epoch_name", "updated", "step_value", "total", "count", "computed")

    def __init__(self, fx: str, name: str, *, on_step: bool, on_epoch: bool, logger: bool, prog_bar: bool,
                 reduce: str, sync: bool, add_dataloader_idx: bool, dataloader_idx: int | None,
                 metric_attribute: str | None, rank_zero_only: bool, enable_graph: bool, metric: Any,
                 number_dtype: torch.dtype, device: torch.device) -> None:
        self.fx, self.name = fx, name
        self.on_step, self.on_epoch, self.logger, self.prog_bar = on_step, on_epoch, logger, prog_bar
        self.reduce, self.sync, self.add_dataloader_idx = reduce, sync, add_dataloader_idx
        self.dataloader_idx, self.metric_attribute = dataloader_idx, metric_attribute
        self.rank_zero_only, self.enable_graph = rank_zero_only, enable_graph
        #: the torchmetrics.Metric logged under this key, or None for tensor values.
        self.metric = metric
        #: the raw self.log arguments last seen: a call with the same ones skips every check.
        self.arguments: tuple | None = None
        self.number_dtype, self.device = number_dtype, device
        suffix = f"/dataloader_idx_{dataloader_idx}" if add_dataloader_idx and dataloader_idx is not None else ""
        forked = on_step and on_epoch
        self.callback_name = name + suffix
        self.step_name = f"{name}_step{suffix}" if forked else self.callback_name
        self.epoch_name = f"{name}_epoch{suffix}" if forked else self.callback_name
        self.updated = False
        self.step_value: Any = None
        self.computed: Any = None
        self._clear()

    @property
    def meta(self) -> tuple:
        return tuple(getattr(self, field) for field in _META_FIELDS) + (self.metric is not None,)

    def differences(self, other: LoggedValue) -> str:
        """What `other` logs differently, as "field: ours, then theirs"."""
        fields = [*_META_FIELDS, "metric"]
        mine = [*self.meta[:-1], type(self.metric).__name__ if self.metric is not None else "tensor"]
        theirs = [*other.meta[:-1], type(other.metric).__name__ if other.metric is not None else "tensor"]
        return "; ".join(f"{field}: {before!r}, then {after!r}" for field, before, after in zip(fields, mine, theirs)
                         if before != after)

    def reset(self) -> None:
        """Forget the values (a new epoch, or the end of an evaluation); a Metric is reset too."""
        self.updated = False
        self.step_value = self.computed = None
        if self.metric is not None:
            self.metric.reset()
        self._clear()

    def _clear(self) -> None:
        self.count = 0
        self.total = None if self.metric is not None else torch.tensor(
            _START[self.reduce], dtype=self.number_dtype, device=self.device)

    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensors (a checkpoint loads with weights_only=True)."""
        state = {field: getattr(self, field) for field in _STATE_FIELDS}
        state["number_dtype"] = str(self.number_dtype).removeprefix("torch.")
        state["is_metric"] = self.metric is not None
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], metric: Any) -> LoggedValue:
        total = state["total"]
        value = cls(
            state["fx"], state["name"], **{field: state[field] for field in _META_FIELDS}, metric=metric,
            number_dtype=getattr(torch, state["number_dtype"]),
            device=total.device if isinstance(total, torch.Tensor) else torch.device("cpu"),
        )
        if metric is None:
            value.total = total
        value.updated, value.step_value, value.count = state["updated"], state["step_value"], state["count"]
        return value
