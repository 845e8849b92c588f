"""Training epochs with validation at the scheduled points, in Lightning's order, resumable anywhere.

The order of one epoch: the training loader's iterator (epoch 0: before on_train_start, as Lightning's
setup does), on_train_epoch_start, then per batch: forward/backward/step, step-interval schedulers
(epoch-interval ones after the epoch's last batch), on_train_batch_end, the step's metrics to the loggers,
validation when due, ReduceLROnPlateau step schedulers; after the last batch: on_train_epoch_end, the
epoch's metrics, ReduceLROnPlateau epoch schedulers. Validation draws from the global RNG like any loop
does; only the sanity check is isolated.

A checkpoint can be taken at any of these moments; the progress it holds (`FitLoop.state_dict`) says which
work is left, so a resumed run does exactly that work, with the RNG as it was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from trellis.data import SkipFirstBatches, sampling_generators, skip_batches
from trellis.errors import TrainingError
from trellis.loops.batches import batch_transfer
from trellis.loops.evaluation import run_evaluation
from trellis.loops.optimization import Optimization, step_schedulers
from trellis.loops.validation_schedule import ValidationSchedule
from trellis.roles import Accelerator
from trellis.settings import TrainerSettings
from trellis.stages import VALIDATION, RunningStage
from trellis.utils.rank_zero import warn_once
from trellis.utils.rng import capture_rng, isolated_rng, restore_rng

if TYPE_CHECKING:
    from trellis.fit_data import FitData
    from trellis.run import Run

#: epoch phases after the batches: on_train_epoch_end is running or next, it ran, the epoch's metrics are logged.
EPOCH_END, TRAINED, LOGGED = "epoch_end", "trained", "logged"
#: work left at a batch boundary: on_train_batch_end ran (metrics, validation next), validation is logged.
AFTER_BATCH, VALIDATED = "after_batch", "validated"


class FitLoop:
    """The progress of fit (part of every checkpoint) and its stop rules, which may be raised between fits."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.max_epochs: int = settings.max_epochs
        self.max_steps: int = settings.max_steps
        self.min_epochs, self.min_steps = settings.min_epochs, settings.min_steps
        #: may change between epochs (GradientAccumulationScheduler).
        self.accumulate_grad_batches = settings.accumulate_grad_batches
        #: set by callbacks (EarlyStopping, Timer) to end training once the minimum epochs/steps are done.
        self.should_stop = False
        #: training steps run forward only (StochasticWeightAveraging's batch-norm epoch), as Lightning's flag.
        self._skip_backward = False
        self.epoch = 0
        #: optimizer steps (manual optimization: every optimizer's step counts).
        self.global_step = 0
        #: batches that ended with an optimizer step: the step loggers see.
        self.batches_that_stepped = 0
        #: training batches finished in the current epoch, and in all epochs.
        self.batches_done = 0
        self.total_batches_done = 0
        #: "running" (batches), or the epoch-end phase reached (EPOCH_END, TRAINED, LOGGED).
        self.phase = "running"
        #: work left after the last batch: AFTER_BATCH, VALIDATED, or "" when none.
        self.boundary = ""
        #: the epoch's batches all ran (its epoch-interval schedulers stepped).
        self.epoch_complete = False
        #: the last batch ended with an optimizer step (its metrics go to the loggers, its schedulers step).
        self.stepped = False
        #: the batch being trained on is the epoch's last (trainer.is_last_batch).
        self.is_last_batch = False
        #: RNG state (and explicit generators') just before this epoch's loader iterator was made.
        self.epoch_start_rng: dict[str, Any] | None = None
        #: RNG state of a checkpoint, applied where its run resumes.
        self.resume_rng: dict[str, Any] | None = None
        #: the training loader's own generators (loader and sampler), read when a checkpoint is taken.
        self.train_generators: list[torch.Generator] = []
        #: their states in the checkpoint a run resumes from.
        self.loader_generators: list[torch.Tensor] = []
        self.resumed = False
        self._pending_loss: torch.Tensor | None = None
        #: (epoch, batch, global step) of the pending loss, formatted only if it is not finite.
        self._pending_where: tuple[int, int, int] = (0, 0, 0)
        #: when this fit validates; None before the first fit.
        self.schedule: ValidationSchedule | None = None
        #: the index of the epoch's current (or last fetched) batch, -1 before the first: Lightning's
        #: fit_loop.batch_idx (a batch whose on_train_batch_start returned -1 counts, as it was fetched).
        self.batch_idx = -1

    @property
    def epoch_completed(self) -> bool:
        """Whether the epoch's batches are over (its end phases are running)."""
        return self.phase != "running"

    # -- progress state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batches_that_stepped": self.batches_that_stepped,
            "batches_done": self.batches_done,
            "total_batches_done": self.total_batches_done,
            "phase": self.phase,
            "boundary": self.boundary,
            "epoch_complete": self.epoch_complete,
            "stepped": self.stepped,
            "epoch_start_rng": self.epoch_start_rng,
            "loader_generators": [generator.get_state() for generator in self.train_generators],
        }

    def load_state_dict(self, state: dict[str, Any], rng_states: dict[str, Any] | None = None) -> None:
        """Restore progress; the RNG state is applied where the resumed run continues."""
        for key in ("epoch", "global_step", "batches_that_stepped", "batches_done", "total_batches_done", "phase",
                    "boundary", "epoch_complete", "stepped", "epoch_start_rng"):
            setattr(self, key, state[key])
        self.loader_generators = list(state.get("loader_generators", []))
        self.resume_rng, self.resumed = rng_states, True

    # -- stopping -----------------------------------------------------------------------------
    def can_stop_early(self) -> bool:
        """The minimum epochs and steps are done (should_stop takes effect)."""
        return self.epoch >= self.min_epochs and self.global_step >= self.min_steps

    def max_steps_reached(self) -> bool:
        return 0 <= self.max_steps <= self.global_step

    def done(self) -> bool:
        if self.max_steps_reached() or 0 <= self.max_epochs <= self.epoch:
            return True
        return self.should_stop and self.can_stop_early()

    # -- running ------------------------------------------------------------------------------
    def run(self, run: Run) -> None:
        if run.data is None:
            raise RuntimeError("FitLoop.run needs the fit's data (run.data)")
        self.schedule = ValidationSchedule(run.settings, run.data)
        optimization = run.optimization = Optimization(run)
        try:
            _Epochs(self, run, run.data, self.schedule, optimization).train()
        finally:
            optimization.close()
            self.resumed = False

    def check_finite_loss(self) -> None:
        """Raise if the last step's loss was not finite: called one step late, and before any checkpoint."""
        loss, self._pending_loss = self._pending_loss, None
        if loss is None:
            return
        value = loss.item() if loss.ndim == 0 else float(loss.sum())
        if value - value != 0:  # nan or inf, without a call per step
            epoch, batch, step = self._pending_where
            raise TrainingError(
                f"the training loss became {value} at epoch {epoch}, batch {batch}, global step {step}. Lower the "
                "learning rate, clip gradients (gradient_clip_val=1.0), use a numerically safer loss, or check the "
                "inputs for NaN/inf. No checkpoint holds this step; those saved before it are untouched."
            )


class _Epochs:
    """One fit's execution of the loop: sanity check, epochs, validation, epoch ends."""

    def __init__(self, loop: FitLoop, run: Run, data: FitData, schedule: ValidationSchedule,
                 optimization: Optimization) -> None:
        self.loop, self.run, self.data, self.schedule, self.optimization = loop, run, data, schedule, optimization
        self._iterator: Iterator[Any] | None = None

    def train(self) -> None:
        loop, run, data = self.loop, self.run, self.data
        settings = run.settings
        if settings.limit_train_batches == 0:
            return
        if not loop.resumed and self.schedule.enabled and settings.num_sanity_val_steps != 0:
            self._sanity_check()
        if not data.train_requested:  # estimated_stepping_batches may have asked for it already
            data.request_train(loop.epoch)
        loop.train_generators = sampling_generators(data.train_loader)
        self.schedule.connect()
        if not loop.resumed:  # Lightning makes the first epoch's iterator when it sets up the data
            self._open_epoch()
        if self.schedule.epoch_due(loop.epoch) and not data.validation_requested:
            data.request_validation(loop.epoch)
        run.hooks.fire("on_train_start")
        if loop.resumed:
            self._resume()
        while not loop.done():
            self._run_epoch()
        loop.check_finite_loss()
        run.hooks.fire("on_train_end")

    def _sanity_check(self) -> None:
        """A few validation batches before training; leaves RNG and loggers untouched, and no metrics (as
        Lightning, which starts and ends it with empty callback, logged and progress bar metrics)."""
        run, data = self.run, self.data
        steps = run.settings.num_sanity_val_steps
        run.metrics.reset()
        run.state.stage = RunningStage.SANITY_CHECKING
        run.hooks.fire("on_sanity_check_start")
        with isolated_rng(run.strategy.accelerator):
            data.request_validation(self.loop.epoch)
            if data.val_loaders:
                limits = [min(limit, steps if steps >= 0 else math.inf) for limit in data.val_batch_limits]
                run_evaluation(run, VALIDATION, data.val_loaders, limits, sanity=True)
        run.hooks.fire("on_sanity_check_end")
        run.state.stage = RunningStage.TRAINING
        run.metrics.reset()

    # -- the training loader's iterator ---------------------------------------------------------
    def _open_epoch(self) -> None:
        """Make the epoch's iterator from the RNG as it is now (recorded for a resume inside the epoch)."""
        loader = self.data.train_loader
        generators = sampling_generators(loader)
        self.loop.epoch_start_rng = {"global": capture_rng(self.run.strategy.accelerator),
                                     "generators": [g.get_state() for g in generators]}
        self._iterator = iter(self.run.strategy.process_dataloader(loader, training=True))

    def _reopen_epoch(self) -> None:
        """Resume inside an epoch: the iterator as the epoch made it, past the batches done, then the RNG as it
        was when the checkpoint was taken (before the next batch is loaded, so augmentation draws match)."""
        loop, loader = self.loop, self.data.train_loader
        start = loop.epoch_start_rng
        if start is not None:  # a migrated Lightning checkpoint has none: its order is drawn anew
            restore_rng(start["global"], self.run.strategy.accelerator)
            for generator, state in zip(sampling_generators(loader), start["generators"]):
                generator.set_state(state)
        skipping, discard = skip_batches(loader, loop.batches_done)
        iterator = iter(self.run.strategy.process_dataloader(skipping, training=True))
        sampler = getattr(skipping, "batch_sampler", None)
        if isinstance(sampler, SkipFirstBatches) and getattr(skipping, "num_workers", 0) == 0:
            sampler.prime()  # draw the epoch's order now, from the epoch's RNG
        for _ in range(discard):
            next(iterator, None)
        self._iterator = iterator

    def _resume(self) -> None:
        """Continue a restored run where its checkpoint was taken, with the checkpoint's RNG."""
        loop = self.loop
        if loop.phase == "running" and loop.batches_done:
            self.data.set_epoch(loop.epoch)
            self._reopen_epoch()
        self._apply_resume_rng()
        if loop.phase == "running" and loop.boundary:
            self._finish_boundary(loop.epoch_complete, self.schedule.epoch_due(loop.epoch))
            if loop.epoch_complete or loop.max_steps_reached() or (loop.should_stop and loop.can_stop_early()):
                loop.phase = EPOCH_END
        if loop.phase != "running":
            self._iterator = None
            self._finish_epoch()

    def _apply_resume_rng(self) -> None:
        """The checkpoint's RNG, and the training loader's own generators as they were then."""
        loop = self.loop
        if loop.resume_rng is not None:
            restore_rng(loop.resume_rng, self.run.strategy.accelerator)
            loop.resume_rng = None
        for generator, state in zip(sampling_generators(self.data.train_loader), loop.loader_generators):
            generator.set_state(state)
        loop.loader_generators = []

    # -- an epoch -------------------------------------------------------------------------------
    def _start_epoch(self) -> None:
        loop, run, data = self.loop, self.run, self.data
        if loop.epoch and data.train_reload_due(loop.epoch):
            data.request_train(loop.epoch)
            loop.train_generators = sampling_generators(data.train_loader)
            self.schedule.connect()
            iter(data.train_loader)  # Lightning makes an iterator when it reloads, then the epoch's own
        data.set_epoch(loop.epoch)
        if self.schedule.epoch_due(loop.epoch) and data.validation_reload_due(loop.epoch):
            data.request_validation(loop.epoch)
        loop.epoch_complete = False
        run.hooks.fire("on_train_epoch_start")
        if self._iterator is None:
            self._open_epoch()

    def _run_epoch(self) -> None:
        loop, run, data, optimization = self.loop, self.run, self.data, self.optimization
        if loop.batches_done == 0 and not loop.boundary:
            self._start_epoch()
        iterator = self._iterator
        assert iterator is not None
        strategy, hooks = run.strategy, run.hooks
        limit = data.num_training_batches
        move = batch_transfer(run)
        on_batch_start, on_batch_end = hooks.get("on_train_batch_start"), hooks.get("on_train_batch_end")
        accelerator = strategy.accelerator
        assert accelerator is not None
        own_boundary = type(accelerator).step_boundary is not Accelerator.step_boundary
        step_boundary = accelerator.step_boundary if own_boundary else None
        check_loss_each_step = not accelerator.defers_execution
        watch_loss = not strategy.precision.skips_nonfinite_steps
        schedulers = run.scheduler_configs if optimization.automatic else []
        validates = self.schedule.epoch_due(loop.epoch)
        #: whether the work after on_train_batch_end goes beyond counting the step (else it is done inline).
        boundary_work = bool(run.loggers or validates or schedulers)
        preemption = run.preemption
        run_batch = optimization.run_batch
        unsized = math.isinf(limit)
        metrics = run.metrics
        batches: Iterable[Any] = _lookahead(iterator) if unsized else iterator
        is_last = False
        loop.batch_idx = loop.batches_done - 1
        for batch in batches:
            batch_index = loop.batch_idx = loop.batches_done
            pending = loop._pending_loss
            if check_loss_each_step and pending is not None:  # the previous step's loss, one step late
                value = pending.item() if pending.ndim == 0 else float(pending.sum())
                if value - value != 0:
                    loop.check_finite_loss()
                loop._pending_loss = None
            if unsized:
                batch, is_last = batch
            is_last = loop.is_last_batch = is_last or batch_index + 1 >= limit
            batch = move(batch)
            metrics.current_batch, metrics.in_batches = batch, True
            if on_batch_start is not None and -1 in on_batch_start(batch=batch, batch_idx=batch_index):
                loop.is_last_batch = True  # the epoch ends here, as Lightning marks it
                if schedulers:
                    step_schedulers(run, "epoch", loop.epoch + 1, plateau=False)
                loop.epoch_complete = True
                break
            loop.batches_done = done = batch_index + 1
            loop.total_batches_done += 1
            steps_now = done % loop.accumulate_grad_batches == 0 or is_last
            step = loop.global_step
            outputs = run_batch(batch, batch_index, steps_now)
            if watch_loss:
                loop._pending_loss = optimization.last_loss
                loop._pending_where = (loop.epoch, batch_index, step)
            if schedulers:
                if steps_now:
                    step_schedulers(run, "step", done, plateau=False)
                if is_last:
                    step_schedulers(run, "epoch", loop.epoch + 1, plateau=False)
            loop.epoch_complete, loop.stepped, loop.boundary = is_last, steps_now, AFTER_BATCH
            if on_batch_end is not None:
                on_batch_end(outputs=outputs, batch=batch, batch_idx=batch_index)
            metrics.current_batch = None
            if step_boundary is not None:
                step_boundary()
            if boundary_work or loop.should_stop:
                self._finish_boundary(is_last, validates)
            else:
                loop.batches_that_stepped += steps_now
                loop.boundary = ""
            if preemption is not None and (preemption.received is not None or (
                    preemption.sync_every and loop.global_step % preemption.sync_every == 0)):
                preemption.check(loop.global_step)
            if is_last or 0 <= loop.max_steps <= loop.global_step or (loop.should_stop and self._stopping()):
                break
        self._iterator = None
        loop.check_finite_loss()
        loop.phase = EPOCH_END
        self._finish_epoch()

    def _stopping(self) -> bool:
        """should_stop is set and may take effect now; otherwise say once why training goes on."""
        loop = self.loop
        if loop.can_stop_early():
            return True
        warn_once(f"Trainer was signaled to stop but the required min_epochs={loop.min_epochs} or "
                  f"min_steps={loop.min_steps} has not been met. Training will continue...")
        return False

    def _finish_boundary(self, is_last_batch: bool, validates: bool) -> None:
        """After on_train_batch_end: the step's metrics, validation when due (`validates`: in this epoch at
        all), plateau schedulers."""
        loop, run = self.loop, self.run
        if loop.boundary == AFTER_BATCH:
            if loop.stepped and run.log_sink.loggers and run.settings.logs_step_metrics(
                    loop.batches_that_stepped, loop.should_stop):
                run.log_metrics(run.metrics.logged_step_values())
            if validates and self.schedule.due_after_batch(
                    loop.epoch, loop.batches_done - 1, loop.total_batches_done - 1, is_last_batch,
                    loop.should_stop and loop.can_stop_early()):
                self._validate()
            loop.boundary = VALIDATED
        if loop.boundary == VALIDATED:
            if loop.stepped:
                if run.scheduler_configs and self.optimization.automatic:
                    step_schedulers(run, "step", loop.batches_done, plateau=True)
                loop.batches_that_stepped += 1
            loop.boundary = ""

    def _validate(self) -> None:
        """Validation during fit; the boundary is marked done as soon as its metrics are logged."""
        loop, run, data = self.loop, self.run, self.data
        if not data.validation_requested:
            data.request_validation(loop.epoch)
        if not data.val_loaders:
            return
        if loop.stepped:
            run.module.on_validation_model_zero_grad()

        def logged() -> None:
            loop.boundary = VALIDATED

        run_evaluation(run, VALIDATION, data.val_loaders, data.val_batch_limits, after_logging=logged)
        run.state.stage = RunningStage.TRAINING

    def _finish_epoch(self) -> None:
        """Epoch-end work in Lightning's order, from whatever phase a resumed run is in."""
        loop, run = self.loop, self.run
        metrics = run.metrics
        if loop.phase == EPOCH_END:
            metrics.epoch_end_reached()
            loop.phase = TRAINED
            run.hooks.fire("on_train_epoch_end")
        if loop.phase == TRAINED:
            logged = metrics.end_train_epoch()
            loop.phase = LOGGED
            run.log_epoch_end_metrics(logged)
        if loop.epoch_complete and run.scheduler_configs and self.optimization.automatic:
            step_schedulers(run, "epoch", loop.epoch + 1, plateau=True)
        loop.epoch += 1
        loop.batches_done = 0
        loop.phase, loop.boundary, loop.epoch_complete = "running", "", False


def _lookahead(iterator: Iterator[Any]) -> Iterator[tuple[Any, bool]]:
    """(batch, is_last) pairs: a loader of unknown length is read one batch ahead to know its last batch."""
    previous = next(iterator, _END)
    while previous is not _END:
        current = next(iterator, _END)
        yield previous, current is _END
        previous = current


_END = object()

