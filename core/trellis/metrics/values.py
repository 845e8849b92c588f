"""What self.log accepts: scalar values, torchmetrics objects, reductions, and the batch size that weighs means.

torchmetrics stays optional: it is looked up in `sys.modules`, so it is only ever used when the user's code
imported it (a torchmetrics.Metric cannot exist otherwise).
"""

from __future__ import annotations

import builtins
import dataclasses
import numbers
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from trellis.errors import ConfigurationError
from trellis.utils.rank_zero import warn_once

REDUCTIONS = ("mean", "sum", "max", "min")
_REDUCTION_FUNCTIONS: dict[Any, str] = {
    torch.mean: "mean", torch.sum: "sum", builtins.sum: "sum", torch.max: "max", builtins.max: "max",
    torch.min: "min", builtins.min: "min",
}


def reduction_name(name: str, reduce_fx: str | Callable[..., Any]) -> str:
    """"mean", "sum", "max" or "min" for a reduce_fx as Lightning accepts it (a name, "avg", or torch's or
    Python's function of that name)."""
    if isinstance(reduce_fx, str):
        lowered = reduce_fx.lower()
        lowered = "mean" if lowered == "avg" else lowered
        if lowered in REDUCTIONS:
            return lowered
    else:
        found = _REDUCTION_FUNCTIONS.get(reduce_fx)
        if found is not None:
            return found
    raise ConfigurationError(
        f"self.log({name!r}, reduce_fx={reduce_fx!r}): only reduce_fx in {{min, max, mean, sum}} is supported "
        "(as names or torch's functions). For another reduction, log a torchmetrics.Metric instance instead."
    )


def metric_types() -> tuple[type[Any], type[Any]] | None:
    """(torchmetrics.Metric, torchmetrics.MetricCollection) when the user's code imported torchmetrics."""
    module = sys.modules.get("torchmetrics")
    if module is None:
        return None
    return module.Metric, module.MetricCollection


def is_metric(value: Any) -> bool:
    types = metric_types()
    return types is not None and isinstance(value, types[0])


def is_metric_collection(value: Any) -> bool:
    types = metric_types()
    return types is not None and isinstance(value, types[1])


def default_float_dtype() -> torch.dtype:
    """Where logged values are kept: torch's default float dtype, at least float32."""
    dtype = torch.get_default_dtype()
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def check_loggable(name: str, value: Any) -> None:
    """Refuse what self.log cannot record: anything but a number, a tensor or a torchmetrics.Metric."""
    if isinstance(value, (torch.Tensor, numbers.Number)) or is_metric(value):
        return
    if isinstance(value, Mapping):
        raise ValueError(
            f"self.log({name!r}, {value!r}) was called with a dict: log each value under its own name, "
            "or pass the dict to self.log_dict"
        )
    raise ValueError(
        f"self.log({name!r}, {value!r}) was called, but {type(value).__name__} values cannot be logged: log a "
        "number, a one-element tensor or a torchmetrics.Metric"
    )


def as_scalar_tensor(name: str, value: Any, device: torch.device) -> torch.Tensor:
    """A number or one-element tensor as a detached 0-dim float tensor, as the epoch reductions need it."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.numel() != 1:
            raise ValueError(
                f"self.log({name!r}) got a tensor of shape {tuple(tensor.shape)}, but logged tensors must have a "
                f"single element: log a reduction of it, such as self.log({name!r}, value.mean())"
            )
        tensor = tensor.squeeze()
    else:
        tensor = torch.tensor(value, device=device, dtype=default_float_dtype())
    if tensor.dtype not in (torch.float32, torch.float64):
        if not tensor.is_floating_point():
            warn_once(
                f"self.log({name!r}, ...) got a {tensor.dtype} value, which must be a float to be reduced over "
                f"an epoch: it is converted to {default_float_dtype()}. Convert it yourself to silence this "
                "warning, or use self.logger.log_metrics for values that need no reduction (the epoch, a step)."
            )
        tensor = tensor.to(default_float_dtype())
    return tensor


def batch_size_of(batch: Any) -> int:
    """The batch size that weighs epoch means: the first dimension of the first tensor found in the batch.

    Warns when the batch holds tensors of different first dimensions (the first one is used); raises when it
    holds none.
    """
    size: int | None = None
    try:
        for found in _first_dimensions(batch):
            if size is None:
                size = found
            elif found != size:
                warn_once(
                    f"The batch size inferred from the batch is {size}, but the batch holds other sizes too: pass "
                    "self.log(..., batch_size=...) to weigh epoch means by the right one."
                )
                break
    except RecursionError:
        size = None
    if size is None:
        raise ConfigurationError(
            "self.log could not infer the batch size from the batch, needed to weigh the epoch mean: pass it as "
            "self.log(..., batch_size=...), or give the batch a simpler structure (tensors in tuples, lists, "
            "dicts or dataclasses)."
        )
    return size


def _first_dimensions(batch: Any) -> Iterator[int | None]:
    """The first dimension of each tensor in the batch, in order; None for each leaf that is not a tensor."""
    if isinstance(batch, torch.Tensor):
        yield batch.shape[0] if batch.ndim else 1
    elif isinstance(batch, (Iterable, Mapping)) and not isinstance(batch, str):
        for item in (batch.values() if isinstance(batch, Mapping) else batch):
            yield from _first_dimensions(item)
    elif dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        for field in dataclasses.fields(batch):
            yield from _first_dimensions(getattr(batch, field.name))
    else:
        yield None
