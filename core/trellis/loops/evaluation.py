"""Validation and test: one pass over each loader without gradients."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from trellis.data import infer_batch_size

if TYPE_CHECKING:
    from trellis.trainer import Trainer


def run_evaluation(
    trainer: Trainer, stage: str, loaders: list[Iterable], limits: list[float], sanity: bool = False,
    after_logging: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """Run `{stage}_step` over every loader; returns the epoch metrics of each loader."""
    module, strategy, hooks, metrics = trainer.module, trainer.strategy, trainer.hooks, trainer.metrics
    step_method = f"{stage}_step"
    several = len(loaders) > 1
    classic_epoch_end = getattr(module, f"{stage}_epoch_end", None)
    collected: list[list[Any]] = [[] for _ in loaders]
    was_training = module.training
    previous_stage = metrics.stage
    module.eval()
    metrics.stage = stage
    hooks.call(f"on_{stage}_start", trainer=trainer, pl_module=module)
    hooks.call(f"on_{stage}_epoch_start", trainer=trainer, pl_module=module)
    on_batch_start = hooks.callers.get(f"on_{stage}_batch_start")
    on_batch_end = hooks.callers.get(f"on_{stage}_batch_end")
    grad_context = torch.inference_mode if trainer.inference_mode else torch.no_grad
    with grad_context():
        for loader_index, loader in enumerate(loaders):
            metrics.dataloader_suffix = f"/dataloader_idx_{loader_index}" if several else ""
            limit = limits[loader_index]
            for batch_index, batch in enumerate(strategy.process_dataloader(loader)):
                if batch_index >= limit:
                    break
                batch = strategy.batch_to_device(batch)
                metrics.current_batch_size = infer_batch_size(batch)
                if on_batch_start is not None:
                    on_batch_start(trainer=trainer, pl_module=module, batch=batch, batch_idx=batch_index,
                                   dataloader_idx=loader_index)
                arguments = (batch, batch_index, loader_index) if several else (batch, batch_index)
                output = strategy.run_step(step_method, *arguments)
                if on_batch_end is not None:
                    on_batch_end(trainer=trainer, pl_module=module, outputs=output, batch=batch,
                                 batch_idx=batch_index, dataloader_idx=loader_index)
                if classic_epoch_end is not None:
                    collected[loader_index].append(output)
                strategy.accelerator.step_boundary()
    metrics.dataloader_suffix = ""
    if classic_epoch_end is not None:
        trainer.log_classic_result(classic_epoch_end(collected if several else collected[0]))
    hooks.call(f"on_{stage}_epoch_end", trainer=trainer, pl_module=module)
    logged = metrics.reduce_epoch(stage)
    if not sanity:
        trainer.log_to_loggers(logged)
        if after_logging is not None:
            after_logging()
    hooks.call(f"on_{stage}_end", trainer=trainer, pl_module=module)
    metrics.stage = previous_stage
    module.train(was_training)
    return _split_by_loader(logged, len(loaders))


def _split_by_loader(logged: dict[str, float], count: int) -> list[dict[str, float]]:
    if count <= 1:
        return [logged]
    results: list[dict[str, float]] = [{} for _ in range(count)]
    for name, value in logged.items():
        base, _, index = name.rpartition("/dataloader_idx_")
        if base and index.isdigit():
            results[int(index)][name] = value
        else:
            for result in results:
                result[name] = value
    return results


def run_prediction(trainer: Trainer, loaders: list[Iterable], limits: list[float]) -> list[Any]:
    """Run predict_step over every loader; returns the predictions (a list per loader when several)."""
    module, strategy, hooks = trainer.module, trainer.strategy, trainer.hooks
    several = len(loaders) > 1
    predictions: list[list[Any]] = [[] for _ in loaders]
    module.eval()
    hooks.call("on_predict_start", trainer=trainer, pl_module=module)
    hooks.call("on_predict_epoch_start", trainer=trainer, pl_module=module)
    grad_context = torch.inference_mode if trainer.inference_mode else contextlib.nullcontext
    with grad_context():
        for loader_index, loader in enumerate(loaders):
            for batch_index, batch in enumerate(strategy.process_dataloader(loader)):
                if batch_index >= limits[loader_index]:
                    break
                batch = strategy.batch_to_device(batch)
                hooks.call("on_predict_batch_start", trainer=trainer, pl_module=module, batch=batch,
                           batch_idx=batch_index, dataloader_idx=loader_index)
                arguments = (batch, batch_index, loader_index) if several else (batch, batch_index)
                output = strategy.run_step("predict_step", *arguments)
                hooks.call("on_predict_batch_end", trainer=trainer, pl_module=module, outputs=output, batch=batch,
                           batch_idx=batch_index, dataloader_idx=loader_index)
                predictions[loader_index].append(output)
                strategy.accelerator.step_boundary()
    hooks.call("on_predict_epoch_end", trainer=trainer, pl_module=module)
    hooks.call("on_predict_end", trainer=trainer, pl_module=module)
    return predictions if several else predictions[0]
