"""Validation, test and prediction: one pass over each loader without gradients, in Lightning's order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from trellis.hookspecs import is_overridden
from trellis.loops.batches import ModuleMode, batch_transfer
from trellis.loops.optimization import log_classic_result, takes_batch_index
from trellis.stages import PREDICT, TEST, LoopStage

if TYPE_CHECKING:
    from trellis.run import Run


def step_arguments(with_index: bool, batch: Any, batch_index: int, dataloader_index: int | None) -> tuple:
    """The positional arguments Lightning passes a step method (see takes_batch_index)."""
    arguments: tuple = (batch, batch_index) if with_index else (batch,)
    return arguments if dataloader_index is None else (*arguments, dataloader_index)


class _Evaluation:
    """Mode switching and hooks around one evaluation pass (validation, test or predict)."""

    def __init__(self, run: Run, stage: LoopStage) -> None:
        self.run, self.stage = run, stage
        kind = "test" if stage is TEST else "predict" if stage is PREDICT else "validation"
        self._eval_hook, self._train_hook = f"on_{kind}_model_eval", f"on_{kind}_model_train"

    def to_eval_mode(self) -> ModuleMode:
        module = self.run.module
        mode = ModuleMode(module)
        if is_overridden(module, self._eval_hook):
            getattr(module, self._eval_hook)()
        else:
            ModuleMode.set(module, False)
        return mode

    def restore_mode(self, mode: ModuleMode) -> None:
        module = self.run.module
        if self.stage is not PREDICT and is_overridden(module, self._train_hook):
            getattr(module, self._train_hook)()
        else:
            mode.restore(module)


def run_evaluation(
    run: Run, stage: LoopStage, loaders: list[Iterable], limits: list[float], sanity: bool = False,
    after_logging: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """Run the stage's step method over every loader; returns the epoch metrics of each loader."""
    module, strategy, hooks, metrics = run.module, run.strategy, run.hooks, run.metrics
    several = len(loaders) > 1
    classic_epoch_end = getattr(module, f"{stage.name}_epoch_end", None)
    collected: list[list[Any]] = [[] for _ in loaders]
    evaluation = _Evaluation(run, stage)
    previous_stage, previous_running_stage = metrics.stage, run.state.stage
    mode = evaluation.to_eval_mode()
    metrics.stage = stage.name
    if not sanity:
        run.state.stage = stage.running_stage
    hooks.fire(stage.hook("start"))
    hooks.fire(stage.hook("epoch_start"))
    on_batch_start = hooks.get(stage.hook("batch_start"))
    on_batch_end = hooks.get(stage.hook("batch_end"))
    step = strategy.step_function(stage.step_method)
    with_index = takes_batch_index(getattr(module, stage.step_method))
    step_boundary = strategy.accelerator.step_boundary
    with _no_grad_context(run)():
        for loader_index, loader in enumerate(loaders):
            metrics.dataloader_suffix = f"/dataloader_idx_{loader_index}" if several else ""
            limit = limits[loader_index]
            move = batch_transfer(run, loader_index)
            for batch_index, batch in enumerate(strategy.process_dataloader(loader)):
                if batch_index >= limit:
                    break
                batch = move(batch)
                metrics.current_batch = batch
                if on_batch_start is not None:
                    on_batch_start(batch=batch, batch_idx=batch_index, dataloader_idx=loader_index)
                output = step(*step_arguments(with_index, batch, batch_index, loader_index if several else None))
                if on_batch_end is not None:
                    on_batch_end(outputs=output, batch=batch, batch_idx=batch_index, dataloader_idx=loader_index)
                if classic_epoch_end is not None:
                    collected[loader_index].append(output)
                step_boundary()
    metrics.dataloader_suffix = ""
    if classic_epoch_end is not None:
        log_classic_result(classic_epoch_end(collected if several else collected[0]), module)
    hooks.fire(stage.hook("epoch_end"))
    logged = metrics.reduce_epoch(stage.name)
    if not sanity:
        run.log_metrics(logged)
        if after_logging is not None:
            after_logging()
    hooks.fire(stage.hook("end"))
    evaluation.restore_mode(mode)
    metrics.stage, run.state.stage = previous_stage, previous_running_stage
    return _split_by_loader(logged, len(loaders))


def _no_grad_context(run: Run) -> Callable[[], Any]:
    """inference_mode where the Trainer asks for it and the device supports it, else no_grad."""
    if run.settings.inference_mode and run.strategy.accelerator.supports_inference_mode:
        return torch.inference_mode
    return torch.no_grad


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


def run_prediction(run: Run, loaders: list[Iterable], limits: list[float]) -> list[Any]:
    """Run predict_step over every loader; returns the predictions (a list per loader when several)."""
    strategy, hooks = run.strategy, run.hooks
    several = len(loaders) > 1
    predictions: list[list[Any]] = [[] for _ in loaders]
    evaluation = _Evaluation(run, PREDICT)
    mode = evaluation.to_eval_mode()
    hooks.fire(PREDICT.hook("start"))
    hooks.fire(PREDICT.hook("epoch_start"))
    step = strategy.step_function(PREDICT.step_method)
    with_index = takes_batch_index(getattr(run.module, PREDICT.step_method))
    with _no_grad_context(run)():
        for loader_index, loader in enumerate(loaders):
            move = batch_transfer(run, loader_index)
            for batch_index, batch in enumerate(strategy.process_dataloader(loader)):
                if batch_index >= limits[loader_index]:
                    break
                batch = move(batch)
                hooks.fire(PREDICT.hook("batch_start"), batch=batch, batch_idx=batch_index,
                           dataloader_idx=loader_index)
                output = step(*step_arguments(with_index, batch, batch_index, loader_index if several else None))
                hooks.fire(PREDICT.hook("batch_end"), outputs=output, batch=batch, batch_idx=batch_index,
                           dataloader_idx=loader_index)
                predictions[loader_index].append(output)
                strategy.accelerator.step_boundary()
    hooks.fire(PREDICT.hook("epoch_end"))
    hooks.fire(PREDICT.hook("end"))
    evaluation.restore_mode(mode)
    return predictions if several else predictions[0]
