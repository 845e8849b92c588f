"""ThroughputMonitor: log batches, samples, items and FLOPs per second of training, validation, test and predict."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from trellis.callbacks.base import Callback
from trellis.callbacks.throughput import Throughput
from trellis.stages import RunningStage, TrainerFn
from trellis.utilities.rank_zero import rank_zero_warn


class ThroughputMonitor(Callback):
    """Logs Throughput's metrics prefixed with the stage (`train/device/samples_per_sec`, `validate/time`, ...),
    on global rank zero, at the steps the loggers log at (training: once per optimizer step, so that the step's
    time is in).

    `batch_size_fn(batch)` gives a batch's samples, `length_fn(batch)` its items (tokens, say). FLOPs come from a
    `flops_per_batch` attribute of the module (trellis.utilities.measure_flops computes it). Other keywords go to
    Throughput (window_size, separator, ...). Assumes batches of one size. Validation time is left out of the
    training rates.
    """

    def __init__(self, batch_size_fn: Callable[[Any], int], length_fn: Callable[[Any], int] | None = None,
                 **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.batch_size_fn = batch_size_fn
        self.length_fn = length_fn
        #: peak FLOPs per second of one device, for `device/mfu`: set it before fit (Trellis keeps no table of
        #: devices' peak FLOPs, so MFU is left out by default).
        self.available_flops: float | None = None
        self._throughputs: dict[RunningStage, Throughput] = {}
        self._t0s: dict[RunningStage, float] = {}
        self._lengths: dict[RunningStage, int] = {}
        self._samples: dict[RunningStage, int] = {}
        self._batches: dict[RunningStage, int] = {}
        self._iterations: dict[RunningStage, int] = {}
        self._module_has_flops: bool | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == TrainerFn.FITTING and trainer.limit_val_batches != 0:  # fit validates too
            self._throughputs[RunningStage.VALIDATING] = self._throughput(trainer)
        self._throughputs[trainer.state.stage] = self._throughput(trainer)
        self._iterations = {}

    def _throughput(self, trainer: Any) -> Throughput:
        return Throughput(available_flops=self.available_flops, world_size=trainer.world_size, **self.kwargs)

    def _start(self, trainer: Any) -> None:
        stage = trainer.state.stage
        if trainer.state.fn == TrainerFn.FITTING or stage not in self._samples:
            self._throughputs[stage].reset()
            self._lengths[stage] = self._samples[stage] = self._batches[stage] = 0
        self._t0s[stage] = time.perf_counter()

    @torch.inference_mode()
    def _update(self, trainer: Any, pl_module: Any, batch: Any) -> None:
        stage = trainer.state.stage
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # else the clock runs ahead of the device
        elapsed = time.perf_counter() - self._t0s[stage]
        if self.length_fn is not None:
            self._lengths[stage] += self.length_fn(batch)
        if self._module_has_flops is None:
            self._module_has_flops = hasattr(pl_module, "flops_per_batch")
            if not self._module_has_flops:
                rank_zero_warn("When using the `ThroughputMonitor`, you need to define a `flops_per_batch` attribute "
                               f"or property in {type(pl_module).__name__} to compute the FLOPs.")
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        self._iterations[stage] = self._iterations.get(stage, 0) + 1
        self._throughputs[stage].update(
            time=elapsed, batches=self._batches[stage], samples=self._samples[stage],
            lengths=None if self.length_fn is None else self._lengths[stage],
            flops=pl_module.flops_per_batch if self._module_has_flops else None)

    def _compute(self, trainer: Any, step: int | None = None) -> None:
        loop = trainer.fit_loop
        if not trainer.settings.logs_step_metrics(loop.batches_that_stepped, trainer.should_stop):
            return
        stage = trainer.state.stage
        throughput = self._throughputs[stage]
        metrics = {f"{stage.value}{throughput.separator}{name}": value for name, value in throughput.compute().items()}
        run = trainer._run
        if step is None:  # training: at the loggers' step, with the epoch, as self.log's rows
            run.log_metrics(metrics)
            return
        run.log_sink.logged_metrics.update(metrics)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def on_train_start(self, trainer: Any, *_: Any) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *_: Any) -> None:
        if trainer.is_global_zero:
            self._update(trainer, pl_module, batch)
            if trainer.fit_loop.stepped:  # the accumulation window is over: the optimizer step's time is in
                self._compute(trainer)

    def on_validation_start(self, trainer: Any, *_: Any) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._start(trainer)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *_: Any,
                                **__: Any) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._update(trainer, pl_module, batch)
            self._compute(trainer, self._iterations[trainer.state.stage])

    def on_validation_end(self, trainer: Any, *_: Any) -> None:
        """Shift the training clock by the time validation took, so that it does not count as training."""
        if not trainer.is_global_zero or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        train_times = self._throughputs[RunningStage.TRAINING]._time
        validation_times = self._throughputs[RunningStage.VALIDATING]._time
        train_elapsed = train_times[-1] if train_times else 0.0
        validation_elapsed = validation_times[-1] if validation_times else 0.0
        training_finished = self._t0s[RunningStage.TRAINING] + train_elapsed
        gap = self._t0s[RunningStage.VALIDATING] - training_finished
        self._t0s[RunningStage.TRAINING] += gap + validation_elapsed

    def on_test_start(self, trainer: Any, *_: Any) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *_: Any, **__: Any) -> None:
        if trainer.is_global_zero:
            self._update(trainer, pl_module, batch)
            self._compute(trainer, self._iterations[trainer.state.stage])

    def on_predict_start(self, trainer: Any, *_: Any) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *_: Any,
                             **__: Any) -> None:
        if trainer.is_global_zero:
            self._update(trainer, pl_module, batch)
            self._compute(trainer, self._iterations[trainer.state.stage])
