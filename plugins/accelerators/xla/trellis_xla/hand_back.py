"""What rank 0 of a launched group sends back to the caller, and loading it into the caller's objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def collect(function: Callable[..., Any], args: tuple, result: Any) -> dict[str, Any]:
    """The return value, the module's weights (on the host) and the trainer's progress."""
    trainer = getattr(function, "__self__", None)
    module = _module_in(args)
    state: dict[str, Any] = {}
    if module is not None:
        state["module"] = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    if trainer is not None and hasattr(trainer, "fit_loop"):
        state["fit_loop"] = trainer.fit_loop.state_dict()
        state["callback_metrics"] = {key: value.detach().cpu() for key, value in trainer.callback_metrics.items()}
        state["logged_metrics"] = dict(trainer.logged_metrics)
        state["checkpoint_paths"] = [
            {name: getattr(callback, name) for name in ("best_model_path", "last_model_path", "best_model_score")
             if hasattr(callback, name)}
            for callback in trainer.checkpoint_callbacks
        ]
    return {"result": result, "state": state}


def restore(function: Callable[..., Any], args: tuple, state: dict[str, Any]) -> None:
    """Load what rank 0 sent into the caller's module and trainer."""
    module = _module_in(args)
    if module is not None and "module" in state:
        module.load_state_dict(state["module"])
    trainer = getattr(function, "__self__", None)
    if trainer is None or "fit_loop" not in state:
        return
    trainer.fit_loop.load_state_dict(state["fit_loop"])
    trainer.metrics.callback_metrics = state["callback_metrics"]
    trainer.logged_metrics.update(state["logged_metrics"])
    for callback, paths in zip(trainer.checkpoint_callbacks, state["checkpoint_paths"]):
        for name, value in paths.items():
            setattr(callback, name, value)
    if module is not None:
        trainer.module = module


def _module_in(args: tuple) -> torch.nn.Module | None:
    return next((arg for arg in args if isinstance(arg, torch.nn.Module)), None)
