"""Validation, test and prediction: one pass over each loader without gradients, in Lightning's order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Sampler

from trellis.data import rebuild_dataloader
from trellis.hookspecs import is_overridden
from trellis.loops.batches import ModuleMode, batch_transfer
from trellis.loops.optimization import log_classic_result, takes_batch_index
from trellis.stages import PREDICT, TEST, LoopStage
from trellis.utils.collections import move_to_device
from trellis.utils.rank_zero import warn_once

if TYPE_CHECKING:
    from trellis.run import Run


def step_arguments(with_index: bool, batch: Any, batch_index: int, dataloader_index: int | None) -> tuple[Any, ...]:
    """The positional arguments Lightning passes a step method (see takes_batch_index)."""
    arguments: tuple[Any, ...] = (batch, batch_index) if with_index else (batch,)
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
    run: Run, stage: LoopStage, loaders: list[Iterable[Any]], limits: list[float], sanity: bool = False,
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
    assert strategy.accelerator is not None
    step_boundary = strategy.accelerator.step_boundary
    per_loader: list[dict[str, torch.Tensor]] = []
    with _no_grad_context(run)():
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


def _no_grad_context(run: Run) -> Callable[[], Any]:
    """inference_mode where the Trainer asks for it and the device supports it, else no_grad."""
    assert run.strategy.accelerator is not None
    if run.settings.inference_mode and run.strategy.accelerator.supports_inference_mode:
        return torch.inference_mode
    return torch.no_grad


class PredictLoop:
    """What trainer.predict leaves to read (`trainer.predict_loop`): the predictions, moved to the CPU, and for
    prediction writers the dataset indices of each batch's samples, as Lightning's predict loop keeps them."""

    def __init__(self) -> None:
        #: whether trainer.predict returns (and so keeps) the predictions; set by each call.
        self.return_predictions = True
        self._predictions: list[list[Any]] = []
        #: loaders x batches x sample indices, kept while an epoch-interval writer runs.
        self.epoch_batch_indices: list[list[list[int]]] = []
        #: the sample indices of the batch being predicted (for batch-interval writers).
        self.current_batch_indices: list[int] = []

    @property
    def predictions(self) -> list[Any]:
        """Each batch's prediction; a list per loader when there are several."""
        if not self._predictions:
            return self._predictions
        return self._predictions[0] if len(self._predictions) == 1 else self._predictions


def run_prediction(run: Run, loaders: list[Iterable[Any]], limits: list[float], loop: PredictLoop) -> list[Any] | None:
    """Run predict_step over every loader; returns the predictions (a list per loader when several), or None
    when `loop.return_predictions` is off."""
    from trellis.callbacks.prediction_writer import BasePredictionWriter

    strategy, hooks = run.strategy, run.hooks
    several = len(loaders) > 1
    writers = [callback for callback in run.callbacks if isinstance(callback, BasePredictionWriter)]
    on_epoch = any(writer.interval.on_epoch for writer in writers)
    on_batch = any(writer.interval.on_batch for writer in writers)
    keeps = loop.return_predictions or on_epoch
    recorders = [_record_batch_indices(loader) if writers else None for loader in loaders]
    loop._predictions = [[] for _ in loaders]
    loop.epoch_batch_indices = [[] for _ in loaders]
    loop.current_batch_indices = []
    evaluation = _Evaluation(run, PREDICT)
    mode = evaluation.to_eval_mode()
    run.metrics.begin_prediction()
    hooks.fire(PREDICT.hook("start"))
    hooks.fire(PREDICT.hook("epoch_start"))
    step = strategy.step_function(PREDICT.step_method)
    with_index = takes_batch_index(getattr(run.module, PREDICT.step_method))
    cpu = torch.device("cpu")
    assert strategy.accelerator is not None
    with _no_grad_context(run)():
        for loader_index, (loader, recorder) in enumerate(zip(loaders, recorders)):
            move = batch_transfer(run, loader_index)
            source = recorder.loader if recorder is not None else loader
            for batch_index, batch in enumerate(strategy.process_dataloader(source)):
                if batch_index >= limits[loader_index]:
                    break
                batch = move(batch)
                if recorder is not None and recorder.seen:
                    indices = recorder.seen[batch_index]
                    if on_epoch:
                        loop.epoch_batch_indices[loader_index].append(indices)
                    if on_batch:
                        loop.current_batch_indices = indices
                hooks.fire(PREDICT.hook("batch_start"), batch=batch, batch_idx=batch_index,
                           dataloader_idx=loader_index)
                outer_hook, run.metrics.fx = run.metrics.fx, PREDICT.step_method
                try:
                    output = step(*step_arguments(with_index, batch, batch_index, loader_index if several else None))
                finally:
                    run.metrics.fx = outer_hook
                hooks.fire(PREDICT.hook("batch_end"), outputs=output, batch=batch, batch_idx=batch_index,
                           dataloader_idx=loader_index)
                if keeps:
                    loop._predictions[loader_index].append(move_to_device(output, cpu))
                strategy.accelerator.step_boundary()
    hooks.fire(PREDICT.hook("epoch_end"))
    result = loop.predictions if loop.return_predictions else None
    if not loop.return_predictions:
        loop._predictions = []
    loop.epoch_batch_indices = []
    hooks.fire(PREDICT.hook("end"))
    evaluation.restore_mode(mode)
    return result


class _IndexRecorder(Sampler[list[int]]):
    """A batch sampler that remembers the indices of every batch it yields (in this pass over the loader)."""

    def __init__(self, batch_sampler: Iterable[list[int]]) -> None:
        self.batch_sampler = batch_sampler
        self.seen: list[list[int]] = []
        self.loader: Iterable[Any] = ()

    def __iter__(self) -> Iterator[list[int]]:
        self.seen = []
        for indices in self.batch_sampler:
            self.seen.append(list(indices))
            yield indices

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]


def _record_batch_indices(loader: Iterable[Any]) -> _IndexRecorder | None:
    """The loader rebuilt over a recording batch sampler; None (with a warning) when it has no batch sampler."""
    if not isinstance(loader, DataLoader) or loader.batch_sampler is None:
        warn_once(f"Couldn't infer the batch indices fetched from your dataloader: `{type(loader).__name__}`")
        return None
    recorder = _IndexRecorder(loader.batch_sampler)
    recorder.loader = rebuild_dataloader(loader, recorder)
    return recorder
