"""Training epochs with validation at the scheduled points: the loop a user would write by hand."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from trellis.data import sampling_generators, skip_batches
from trellis.errors import TrainingError
from trellis.loops.evaluation import run_evaluation
from trellis.loops.optimization import Optimization, step_schedulers
from trellis.loops.validation_schedule import ValidationSchedule
from trellis.settings import TrainerSettings
from trellis.stages import VALIDATION, RunningStage
from trellis.utils.rng import capture_rng, isolated_rng, restore_rng

if TYPE_CHECKING:
    from trellis.fit_data import FitData
    from trellis.run import Run


class FitLoop:
    """Epochs of training steps; its progress is part of every checkpoint.

    An epoch moves through phases so that a checkpoint taken anywhere resumes the remaining work exactly:
    "running" (batches), "validating" (epoch-end validation), "validated" (its metrics are logged),
    "trained" (on_train_epoch_end hooks), "logged" (epoch metrics logged; schedulers, then the next epoch).
    The stop rules start from the Trainer's flags and may be raised between fits (`fit_loop.max_epochs`).
    """

    def __init__(self, settings: TrainerSettings) -> None:
        self.max_epochs: int = settings.max_epochs
        self.max_steps: int = settings.max_steps
        self.min_epochs, self.min_steps = settings.min_epochs, settings.min_steps
        self.max_time = settings.max_time
        #: set by callbacks (EarlyStopping, Timer) to end training at the next boundary.
        self.should_stop = False
        self.epoch = 0
        #: training batches finished in the current epoch.
        self.batches_done = 0
        self.phase = "running"
        self.global_step = 0
        #: a mid-epoch validation was due at this batch boundary and has not logged yet.
        self.validation_pending = False
        #: RNG state (and explicit generators') just before this epoch's loader iterator was made.
        self.epoch_start_rng: dict[str, Any] | None = None
        self._resume_rng: dict[str, Any] | None = None
        self._pending_loss: torch.Tensor | None = None
        #: (epoch, batch, global step) of the pending loss, formatted only if it is not finite.
        self._pending_where: tuple[int, int, int] = (0, 0, 0)
        self._started_at = 0.0
        #: when this fit validates; None before the first fit.
        self.schedule: ValidationSchedule | None = None

    @property
    def epoch_completed(self) -> bool:
        return self.phase != "running"

    # -- progress state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "phase": self.phase,
            "global_step": self.global_step,
            "validation_pending": self.validation_pending,
            "epoch_start_rng": self.epoch_start_rng,
        }

    def load_state_dict(self, state: dict[str, Any], rng_states: dict[str, Any] | None = None) -> None:
        """Restore progress; RNG is restored now, or after the resumed epoch's loader has drawn its order."""
        self.epoch, self.batches_done, self.phase = state["epoch"], state["batches_done"], state["phase"]
        self.global_step, self.validation_pending = state["global_step"], state["validation_pending"]
        self.epoch_start_rng = state["epoch_start_rng"]
        if rng_states is None:
            return
        if self.phase == "running" and self.batches_done and self.epoch_start_rng is not None:
            self._resume_rng = rng_states
        else:
            restore_rng(rng_states)

    # -- stopping -----------------------------------------------------------------------------
    def _minimum_reached(self) -> bool:
        return self.epoch >= self.min_epochs and self.global_step >= self.min_steps

    def _max_steps_reached(self) -> bool:
        return 0 <= self.max_steps <= self.global_step

    def done(self) -> bool:
        if self._max_steps_reached():
            return True
        if 0 <= self.max_epochs <= self.epoch:
            return True
        if self.max_time is not None and time.monotonic() - self._started_at >= self.max_time:
            return True
        return self.should_stop and self._minimum_reached()

    # -- running ------------------------------------------------------------------------------
    def run(self, run: Run) -> None:
        if run.data is None:
            raise RuntimeError("FitLoop.run needs the fit's data connected (run.data)")
        self._started_at = time.monotonic()
        self.should_stop = False
        self.schedule = ValidationSchedule(run.settings, run.data)
        optimization = run.optimization = Optimization(run)
        try:
            _Epochs(self, run, run.data, self.schedule, optimization).train()
        finally:
            optimization.close()

    def check_finite_loss(self) -> None:
        """Raise before anything is saved from a step whose loss was not finite."""
        self._check_pending_loss()

    def _check_pending_loss(self) -> None:
        """Raise if the previous step's loss was not finite (checked one step late: no sync per step)."""
        loss, self._pending_loss = self._pending_loss, None
        if loss is None:
            return
        value = loss.item() if loss.numel() == 1 else float(loss.sum())
        if not math.isfinite(value):
            epoch, batch, step = self._pending_where
            raise TrainingError(
                f"the training loss became {value} at epoch {epoch}, batch {batch}, global step {step}. Lower the "
                "learning rate, clip gradients (gradient_clip_val=1.0), use a numerically safer loss, or check the "
                "inputs for NaN/inf. Checkpoints saved before this step are untouched."
            )


class _Epochs:
    """One fit's execution of the loop: sanity check, epochs, validation, epoch ends."""

    def __init__(self, loop: FitLoop, run: Run, data: FitData, schedule: ValidationSchedule,
                 optimization: Optimization) -> None:
        self.loop, self.run, self.data, self.schedule, self.optimization = loop, run, data, schedule, optimization

    def train(self) -> None:
        loop, run = self.loop, self.run
        if self.schedule.enabled and run.settings.num_sanity_val_steps != 0 and not loop.global_step:
            self._sanity_check()
        run.hooks.fire("on_train_start")
        if loop.phase != "running":  # resumed inside an epoch's end
            self._finish_epoch()
        while not loop.done():
            self._run_epoch()
            if loop.should_stop and not loop._minimum_reached():
                loop.should_stop = False
        loop._check_pending_loss()
        run.hooks.fire("on_train_end")

    def _sanity_check(self) -> None:
        """A few validation batches before training; leaves RNG, metrics and loggers untouched."""
        run, data = self.run, self.data
        steps = run.settings.num_sanity_val_steps
        limits = [min(limit, steps if steps >= 0 else math.inf) for limit in data.val_batch_limits]
        saved_metrics = dict(run.metrics.callback_metrics)
        run.state.stage = RunningStage.SANITY_CHECKING
        run.hooks.fire("on_sanity_check_start")
        with isolated_rng():
            run_evaluation(run, VALIDATION, data.val_loaders, limits, sanity=True)
        run.hooks.fire("on_sanity_check_end")
        run.state.stage = RunningStage.TRAINING
        run.metrics.callback_metrics = saved_metrics

    def _validate(self, then_phase: str | None = None) -> None:
        """Validation without touching training's RNG; marks progress as soon as its metrics are logged."""
        loop, run, data = self.loop, self.run, self.data

        def logged() -> None:
            loop.validation_pending = False
            if then_phase is not None:
                loop.phase = then_phase

        if data.val_loaders:
            with isolated_rng():
                run_evaluation(run, VALIDATION, data.val_loaders, data.val_batch_limits, after_logging=logged)
            run.metrics.stage = "train"
        logged()

    def _epoch_batches(self) -> Iterator[tuple[int, Any]]:
        """(index, batch) of the epoch from batches_done on, in the order an uninterrupted epoch has."""
        loop, data = self.loop, self.data
        loader, discard = skip_batches(data.train_loader, loop.batches_done)
        generators = sampling_generators(data.train_loader)
        resume_rng, epoch_start = loop._resume_rng, loop.epoch_start_rng
        if resume_rng is not None and epoch_start is not None:
            restore_rng(epoch_start["global"])
            for generator, state in zip(generators, epoch_start["generators"]):
                generator.set_state(state)
        else:
            loop.epoch_start_rng = {"global": capture_rng(), "generators": [g.get_state() for g in generators]}
        iterator = iter(self.run.strategy.process_dataloader(loader))
        for _ in range(discard):
            next(iterator, None)
        index = loop.batches_done
        for batch in iterator:
            if loop._resume_rng is not None:  # the loader has drawn its order: continue the saved RNG
                restore_rng(loop._resume_rng)
                loop._resume_rng = None
            yield index, batch
            index += 1

    def _run_epoch(self) -> None:
        loop, run, data, optimization = self.loop, self.run, self.data, self.optimization
        strategy, hooks, metrics = run.strategy, run.hooks, run.metrics
        data.prepare_epoch(loop.epoch, resuming_inside=bool(loop.batches_done))
        limit = data.num_training_batches
        metrics.stage = "train"
        if loop.validation_pending:
            self._validate()
        if not loop.batches_done:
            hooks.fire("on_train_epoch_start")
        on_batch_start = hooks.get("on_train_batch_start")
        on_batch_end = hooks.get("on_train_batch_end")
        accelerator = strategy.accelerator
        step_boundary = accelerator.step_boundary
        run_batch = optimization.run_batch
        validate_every = self.schedule.interval_batches
        check_loss_each_step = not accelerator.defers_execution
        watch_loss = not strategy.precision.skips_nonfinite_steps
        loggers, log_every = run.loggers, run.settings.log_every_n_steps
        preemption = run.preemption
        stopped_early = False
        for batch_index, batch in self._epoch_batches():
            if batch_index >= limit:
                break
            if check_loss_each_step:
                loop._check_pending_loss()
            batch = strategy.batch_to_device(batch)
            if on_batch_start is not None and -1 in on_batch_start(batch=batch, batch_idx=batch_index):
                break
            step = loop.global_step
            outputs = run_batch(batch, batch_index, limit)
            if watch_loss:
                loop._pending_loss = optimization.last_loss
                loop._pending_where = (loop.epoch, batch_index, step)
            loop.batches_done = batch_index + 1
            loop.validation_pending = bool(validate_every) and loop.batches_done % validate_every == 0 \
                and loop.batches_done < limit
            log_now = loggers and loop.global_step % log_every == 0
            if log_now:  # before the batch-end callbacks: a checkpoint they write already holds this step's row
                run.log_metrics(metrics.pop_step_metrics())
            if on_batch_end is not None:
                on_batch_end(outputs=outputs, batch=batch, batch_idx=batch_index)
                if log_now:  # what the batch-end hooks logged
                    run.log_metrics(metrics.pop_step_metrics())
            step_boundary()
            if loop.validation_pending:
                self._validate()
            if preemption is not None:
                preemption.check(loop.global_step)
            if loop._max_steps_reached() and loop.batches_done < limit:
                stopped_early = True  # the epoch stays unfinished: a longer run resumes it exactly
                break
            if loop.should_stop and loop._minimum_reached():
                break
        loop._check_pending_loss()
        if stopped_early:
            return
        loop.phase = "validating"
        self._finish_epoch()

    def _finish_epoch(self) -> None:
        """Epoch-end work in Lightning's order, from whatever phase a resumed run is in."""
        loop, run = self.loop, self.run
        metrics = run.metrics
        if loop.phase == "validating":
            if self.schedule.due_at_epoch_end(loop.epoch):
                self._validate(then_phase="validated")
            loop.phase = "validated"
        if loop.phase == "validated":
            loop.phase = "trained"
            run.hooks.fire("on_train_epoch_end")
        if loop.phase == "trained":
            to_loggers = bool(run.loggers)  # without loggers nothing is read back from the device
            logged = {**metrics.pop_step_metrics(as_floats=to_loggers), **metrics.reduce_epoch("train", to_loggers)}
            loop.phase = "logged"
            run.log_metrics(logged)
        if run.scheduler_configs:
            step_schedulers(run.scheduler_configs, "epoch", loop.epoch + 1, metrics)
        loop.epoch += 1
        loop.batches_done = 0
        loop.phase = "running"
