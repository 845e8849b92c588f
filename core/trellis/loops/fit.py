"""Training epochs with validation at the scheduled points: the loop a user would write by hand."""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from trellis.data import infer_batch_size, sampling_generators, skip_batches
from trellis.errors import ConfigurationError, TrainingError
from trellis.loops.evaluation import run_evaluation
from trellis.utils.rng import capture_rng, isolated_rng, restore_rng

if TYPE_CHECKING:
    from trellis.trainer import Trainer


class FitLoop:
    """Epochs of training steps; its progress is part of every checkpoint.

    An epoch moves through phases so that a checkpoint taken anywhere resumes the remaining work exactly:
    "running" (batches), "validating" (epoch-end validation), "validated" (its metrics are logged),
    "trained" (on_train_epoch_end hooks), "logged" (epoch metrics logged; schedulers, then the next epoch).
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
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
        self._watch_loss = True
        self._started_at = 0.0

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
        trainer = self.trainer
        return self.epoch >= (trainer.min_epochs or 0) and self.global_step >= (trainer.min_steps or 0)

    def _max_steps_reached(self) -> bool:
        return 0 <= self.trainer.max_steps <= self.global_step

    def done(self) -> bool:
        trainer = self.trainer
        if self._max_steps_reached():
            return True
        if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= self.epoch:
            return True
        if trainer.max_time is not None and time.monotonic() - self._started_at >= trainer.max_time:
            return True
        return trainer.should_stop and self._minimum_reached()

    # -- running ------------------------------------------------------------------------------
    def run(self) -> None:
        trainer = self.trainer
        module = trainer.module
        self._started_at = time.monotonic()
        if trainer.val_loaders and trainer.num_sanity_val_steps != 0 and not self.global_step:
            self._sanity_check()
        trainer.hooks.call("on_train_start", trainer=trainer, pl_module=module)
        if self.phase != "running":  # resumed inside an epoch's end
            self._finish_epoch()
        while not self.done():
            self._run_epoch()
            if trainer.should_stop and not self._minimum_reached():
                trainer.should_stop = False
        self._check_pending_loss()
        trainer.hooks.call("on_train_end", trainer=trainer, pl_module=module)

    def _sanity_check(self) -> None:
        """A few validation batches before training; leaves RNG, metrics and loggers untouched."""
        trainer = self.trainer
        steps = trainer.num_sanity_val_steps
        limits = [min(limit, steps if steps >= 0 else math.inf) for limit in trainer.val_batch_limits]
        trainer.sanity_checking = True
        saved_metrics = dict(trainer.metrics.callback_metrics)
        trainer.hooks.call("on_sanity_check_start", trainer=trainer, pl_module=trainer.module)
        with isolated_rng():
            run_evaluation(trainer, "validation", trainer.val_loaders, limits, sanity=True)
        trainer.hooks.call("on_sanity_check_end", trainer=trainer, pl_module=trainer.module)
        trainer.metrics.callback_metrics = saved_metrics
        trainer.sanity_checking = False

    def _validate(self, then_phase: str | None = None) -> None:
        """Validation without touching training's RNG; marks progress as soon as its metrics are logged."""

        def logged() -> None:
            self.validation_pending = False
            if then_phase is not None:
                self.phase = then_phase

        self.trainer.run_validation(after_logging=logged)
        logged()

    def _epoch_batches(self) -> Iterator[tuple[int, Any]]:
        """(index, batch) of the epoch from batches_done on, in the order an uninterrupted epoch has."""
        trainer = self.trainer
        loader, discard = skip_batches(trainer.train_loader, self.batches_done)
        generators = sampling_generators(trainer.train_loader)
        if self._resume_rng is not None:
            restore_rng(self.epoch_start_rng["global"])
            for generator, state in zip(generators, self.epoch_start_rng["generators"]):
                generator.set_state(state)
        else:
            self.epoch_start_rng = {"global": capture_rng(), "generators": [g.get_state() for g in generators]}
        iterator = iter(trainer.strategy.process_dataloader(loader, training=True))
        for _ in range(discard):
            next(iterator, None)
        index = self.batches_done
        for batch in iterator:
            if self._resume_rng is not None:  # the loader has drawn its order: continue the saved RNG
                restore_rng(self._resume_rng)
                self._resume_rng = None
            yield index, batch
            index += 1

    def _run_epoch(self) -> None:
        trainer = self.trainer
        module, strategy, hooks, metrics = trainer.module, trainer.strategy, trainer.hooks, trainer.metrics
        trainer.prepare_epoch(self.epoch)
        limit = trainer.num_training_batches
        metrics.stage = "train"
        if self.validation_pending:
            self._validate()
        if not self.batches_done:
            hooks.call("on_train_epoch_start", trainer=trainer, pl_module=module)
        on_batch_start = hooks.callers.get("on_train_batch_start")
        on_batch_end = hooks.callers.get("on_train_batch_end")
        step_boundary = strategy.accelerator.step_boundary
        run_batch = self._automatic_batch if module.automatic_optimization else self._manual_batch
        validate_every = trainer.val_check_batches
        check_loss_each_step = not strategy.accelerator.defers_execution
        self._watch_loss = not strategy.precision.skips_nonfinite_steps
        preemption = trainer.preemption
        stopped_early = False
        for batch_index, batch in self._epoch_batches():
            if batch_index >= limit:
                break
            if check_loss_each_step:
                self._check_pending_loss()
            batch = strategy.batch_to_device(batch)
            if on_batch_start is not None and -1 in on_batch_start(
                trainer=trainer, pl_module=module, batch=batch, batch_idx=batch_index
            ):
                break
            outputs = run_batch(batch, batch_index, limit)
            self.batches_done = batch_index + 1
            self.validation_pending = bool(validate_every) and self.batches_done % validate_every == 0 \
                and self.batches_done < limit
            log_now = trainer.loggers and self.global_step % trainer.log_every_n_steps == 0
            if log_now:  # before the batch-end callbacks: a checkpoint they write already holds this step's row
                trainer.log_to_loggers(metrics.pop_step_metrics())
            if on_batch_end is not None:
                on_batch_end(trainer=trainer, pl_module=module, outputs=outputs, batch=batch, batch_idx=batch_index)
                if log_now:  # what the batch-end hooks logged
                    trainer.log_to_loggers(metrics.pop_step_metrics())
            step_boundary()
            if self.validation_pending:
                self._validate()
            if preemption is not None:
                preemption.check()
            if self._max_steps_reached() and self.batches_done < limit:
                stopped_early = True  # the epoch stays unfinished: a longer run resumes it exactly
                break
            if trainer.should_stop and self._minimum_reached():
                break
        self._check_pending_loss()
        if stopped_early:
            return
        self.phase = "validating"
        self._finish_epoch()

    def _finish_epoch(self) -> None:
        """Epoch-end work in Lightning's order, from whatever phase a resumed run is in."""
        trainer, metrics = self.trainer, self.trainer.metrics
        if self.phase == "validating":
            if trainer.validation_due_at_epoch_end(self.epoch):
                self._validate(then_phase="validated")
            self.phase = "validated"
        if self.phase == "validated":
            self.phase = "trained"
            trainer.hooks.call("on_train_epoch_end", trainer=trainer, pl_module=trainer.module)
        if self.phase == "trained":
            to_loggers = bool(trainer.loggers)  # without loggers nothing is read back from the device
            logged = {**metrics.pop_step_metrics(as_floats=to_loggers), **metrics.reduce_epoch("train", to_loggers)}
            self.phase = "logged"
            trainer.log_to_loggers(logged)
        trainer.step_schedulers("epoch")
        self.epoch += 1
        self.batches_done = 0
        self.phase = "running"

    def _automatic_batch(self, batch: Any, batch_index: int, limit: float) -> Any:
        """Forward, backward and (at the end of an accumulation window) the optimizer step."""
        trainer = self.trainer
        strategy = trainer.strategy
        optimizers = trainer.optimizers
        accumulate = trainer.accumulate_grad_batches
        steps_now = (batch_index + 1) % accumulate == 0 or batch_index + 1 >= limit
        trainer.metrics.in_training_step = True
        if trainer.metrics.logger_keys or trainer.metrics.prog_bar_keys or batch_index == 0:
            trainer.metrics.current_batch_size = infer_batch_size(batch)
        outputs = None
        stepped = False
        for optimizer_index, optimizer in enumerate(optimizers):
            arguments = (batch, batch_index, optimizer_index) if trainer.classic_optimizer_idx else (batch, batch_index)
            with strategy.no_backward_sync(not steps_now) if accumulate > 1 else contextlib.nullcontext():
                outputs = strategy.run_step("training_step", *arguments)
                loss = trainer.loss_from(outputs)
                if loss is None:  # training_step returned None: skip this step
                    continue
                if accumulate > 1:
                    loss = loss / accumulate
                if batch_index % accumulate == 0 or optimizer_index:  # the window's first micro-batch
                    trainer.zero_grad(optimizer)
                trainer.backward(loss, optimizer)
                if self._watch_loss:
                    self._pending_loss = loss.detach()
                self._pending_where = (self.epoch, batch_index, self.global_step)
            if steps_now:
                trainer.optimizer_step(optimizer, optimizer_index)
                stepped = True
        trainer.metrics.in_training_step = False
        if stepped:
            self.global_step += 1
            trainer.step_schedulers("step")
        return outputs

    def _manual_batch(self, batch: Any, batch_index: int, limit: float) -> Any:
        """The user drives backward and the optimizers inside training_step."""
        trainer = self.trainer
        trainer.metrics.in_training_step = True
        trainer.metrics.current_batch_size = infer_batch_size(batch)
        outputs = trainer.strategy.run_step("training_step", batch, batch_index)
        trainer.metrics.in_training_step = False
        return outputs

    def count_manual_step(self, *_: Any) -> None:
        """Optimizer step post-hook in manual optimization: each optimizer step is a global step."""
        self.global_step += 1

    def _check_pending_loss(self) -> None:
        """Raise if the previous step's loss was not finite (checked one step late: no sync per step)."""
        loss, self._pending_loss = self._pending_loss, None
        if loss is None:
            return
        value = loss.item() if loss.numel() == 1 else float(loss.sum())
        if not math.isfinite(value):
            epoch, batch, step = self._pending_where
            raise TrainingError(
                f"the training loss became {value} at epoch {epoch}, batch {batch}, global step {step}. Lower the learning rate, clip "
                "gradients (gradient_clip_val=1.0), use a numerically safer loss, or check the inputs for NaN/inf. "
                "Checkpoints saved before this step are untouched."
            )


def takes_optimizer_index(module: torch.nn.Module) -> bool:
    """Classic form: training_step(self, batch, batch_idx, optimizer_idx) with several optimizers."""
    parameters = inspect.signature(module.training_step).parameters
    return "optimizer_idx" in parameters


def check_optimizers(module: torch.nn.Module, optimizers: list[torch.optim.Optimizer], classic: bool) -> None:
    if module.automatic_optimization and len(optimizers) > 1 and not classic:
        raise ConfigurationError(
            f"{type(module).__name__} returns {len(optimizers)} optimizers with automatic optimization: set "
            "self.automatic_optimization = False and step them in training_step, or add an optimizer_idx argument "
            "to training_step (classic alternating form)"
        )
