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
    previous_running_stage = run.state.stage
    mode = evaluation.to_eval_mode()
    metrics.begin_evaluation(stage.name, loaders)
    if not sanity:
        run.state.stage = stage.running_stage
    hooks.fire(stage.hook("start"))
    hooks.fire(stage.hook("epoch_start"))
    on_batch_start = hooks.get(stage.hook("batch_start"))
    on_batch_end = hooks.get(stage.hook("batch_end"))
    step = strategy.step_function(stage.step_method)
    with_index = takes_batch_index(getattr(module, stage.step_method))
    step_boundary = strategy.accelerator.step_boundary
    grad_context = torch.inference_mode if run.settings.inference_mode else torch.no_grad
    per_loader: list[dict[str, torch.Tensor]] = []
    with grad_context():
        for loader_index, loader in enumerate(loaders):
            limit = limits[loader_index]
            move = batch_transfer(run, loader_index)
            logged_index = loader_index if several else None
            for batch_index, batch in enumerate(strategy.process_dataloader(loader)):
                if batch_index >= limit:
                    break
                batch = move(batch)
                metrics.batch_started(batch, logged_index)
                if on_batch_start is not None:
                    on_batch_start(batch=batch, batch_idx=batch_index, dataloader_idx=loader_index)
                outer_hook, metrics.fx = metrics.fx, stage.step_method
                try:
                    output = step(*step_arguments(with_index, batch, batch_index, logged_index))
                finally:
                    metrics.fx = outer_hook
                if on_batch_end is not None:
                    on_batch_end(outputs=output, batch=batch, batch_idx=batch_index, dataloader_idx=loader_index)
                metrics.current_batch = None
                if classic_epoch_end is not None:
                    collected[loader_index].append(output)
                if not sanity:
                    row, row_step = metrics.evaluation_step_row(stage.name, loader_index)
                    run.log_metrics(row, step=row_step)
                step_boundary()
            per_loader.append(metrics.end_loader(sanity))
    metrics.dataloader_idx = None
    if classic_epoch_end is not None:
        outer_hook, metrics.fx = metrics.fx, stage.hook("epoch_end")
        try:
            log_classic_result(classic_epoch_end(collected if several else collected[0]), module)
        finally:
            metrics.fx = outer_hook
    hooks.fire(stage.hook("epoch_end"))
    not_per_loader = metrics.end_evaluation_epoch(sanity)
    for logged in per_loader:
        logged.update(not_per_loader)
    if not sanity:
        run.log_metrics({name: value for logged in per_loader for name, value in logged.items()})
        if after_logging is not None:
            after_logging()
    hooks.fire(stage.hook("end"))
    metrics.end_evaluation()
    evaluation.restore_mode(mode)
    run.state.stage = previous_running_stage
    return [{name: float(value) for name, value in logged.items()} for logged in per_loader]


def run_prediction(run: Run, loaders: list[Iterable], limits: list[float]) -> list[Any]:
    """Run predict_step over every loader; returns the predictions (a list per loader when several)."""
    strategy, hooks = run.strategy, run.hooks
    several = len(loaders) > 1
    predictions: list[list[Any]] = [[] for _ in loaders]
    evaluation = _Evaluation(run, PREDICT)
    mode = evaluation.to_eval_mode()
    run.metrics.begin_prediction()
    hooks.fire(PREDICT.hook("start"))
    hooks.fire(PREDICT.hook("epoch_start"))
    step = strategy.step_function(PREDICT.step_method)
    with_index = takes_batch_index(getattr(run.module, PREDICT.step_method))
    grad_context = torch.inference_mode if run.settings.inference_mode else torch.no_grad
    with grad_context():
        for loader_index, loader in enumerate(loaders):
            move = batch_transfer(run, loader_index)
            for batch_index, batch in enumerate(strategy.process_dataloader(loader)):
                if batch_index >= limits[loader_index]:
                    break
                batch = move(batch)
                hooks.fire(PREDICT.hook("batch_start"), batch=batch, batch_idx=batch_index,
                           dataloader_idx=loader_index)
                outer_hook, run.metrics.fx = run.metrics.fx, PREDICT.step_method
                try:
                    output = step(*step_arguments(with_index, batch, batch_index, loader_index if several else None))
                finally:
                    run.metrics.fx = outer_hook
                hooks.fire(PREDICT.hook("batch_end"), outputs=output, batch=batch, batch_idx=batch_index,
                           dataloader_idx=loader_index)
                predictions[loader_index].append(output)
                strategy.accelerator.step_boundary()
    hooks.fire(PREDICT.hook("epoch_end"))
    hooks.fire(PREDICT.hook("end"))
    evaluation.restore_mode(mode)
    return predictions if several else predictions[0]
