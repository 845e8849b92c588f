"""The state of the torchmetrics a module holds, for checkpoints: a run resumed inside an epoch computes the
same epoch values. (Lightning keeps a metric's state only where it is persistent in the module's state_dict.)"""

from __future__ import annotations

import sys
from typing import Any

import torch

from trellis.metrics.values import is_metric, metric_types


def module_metric_states(module: Any) -> dict[str, Any]:
    """The state of each torchmetrics.Metric the module holds (whether self.log saw it or not)."""
    types = metric_types()
    if types is None or not isinstance(module, torch.nn.Module):
        return {}
    states = {}
    for path, child in module.named_modules():
        if isinstance(child, types[0]):
            states[path] = {"state": {name: _detached(value) for name, value in child.metric_state.items()},
                            "update_count": child._update_count}
    return states


def load_module_metric_states(module: Any, states: dict[str, Any]) -> None:
    """Put saved states back into the module's metrics (those it still holds at the same paths)."""
    for path, saved in states.items():
        metric = find_metric(module, path)
        if metric is None:
            continue
        for name, value in saved["state"].items():
            setattr(metric, name, _moved(value, metric.device))
        metric._update_count = saved["update_count"]
        metric._computed = None


def find_metric(module: Any, path: str) -> Any:
    """The torchmetrics.Metric the module holds at `path`, or None."""
    if "torchmetrics" not in sys.modules or not isinstance(module, torch.nn.Module):
        return None
    try:
        found = module.get_submodule(path)
    except AttributeError:
        return None
    return found if is_metric(found) else None


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list):
        return [_detached(item) for item in value]
    return value


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_moved(item, device) for item in value]
    return value
