"""What one training batch does: forward, backward and optimizer steps with their hooks and schedulers."""

from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any

import torch

from trellis.data import infer_batch_size
from trellis.errors import ConfigurationError

if TYPE_CHECKING:
    from trellis.metrics import MetricStore
    from trellis.optim import SchedulerConfig
    from trellis.run import Run


def loss_from(outputs: Any, module: Any) -> torch.Tensor | None:
    """The loss in what training_step returned: a tensor, a dict with "loss", or None."""
    if outputs is None or isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        log_classic_result(outputs, module)
        if "loss" in outputs:
            return outputs["loss"]
    raise ConfigurationError(
        f"training_step returned a {type(outputs).__name__} without a loss: return the loss tensor, "
        "a dict with a 'loss' key, or None to skip the step"
    )


def log_classic_result(result: Any, module: Any) -> None:
    """Classic dict results: their "log" and "progress_bar" sub-dicts are logged."""
    if not isinstance(result, dict):
        return
    for key, prog_bar, logger in (("log", False, True), ("progress_bar", True, False)):
        for name, value in (result.get(key) or {}).items():
            module.log(name, value, prog_bar=prog_bar, logger=logger)


def takes_optimizer_index(module: Any) -> bool:
    """Classic form: training_step(self, batch, batch_idx, optimizer_idx) with several optimizers."""
    return "optimizer_idx" in inspect.signature(module.training_step).parameters


def check_optimizers(module: torch.nn.Module, optimizers: list[torch.optim.Optimizer], classic: bool) -> None:
    if module.automatic_optimization and len(optimizers) > 1 and not classic:
        raise ConfigurationError(
            f"{type(module).__name__} returns {len(optimizers)} optimizers with automatic optimization: set "
            "self.automatic_optimization = False and step them in training_step, or add an optimizer_idx argument "
            "to training_step (classic alternating form)"
        )


def step_schedulers(configs: list[SchedulerConfig], interval: str, count: int, metrics: MetricStore) -> None:
    """Step the schedulers of an interval whose frequency divides `count` (optimizer steps or epochs)."""
    for config in configs:
        if config.interval != interval or count % config.frequency:
            continue
        if config.needs_metric:
            available = metrics.callback_metrics
            value = available.get(config.monitor or "")
            if value is None:
                if config.strict:
                    raise ConfigurationError(
                        f"ReduceLROnPlateau monitors {config.monitor!r}, which was not logged; available: "
                        f"{sorted(available)}. Log it with self.log or set strict=False"
                    )
                continue
            config.scheduler.step(float(value))
        else:
            config.scheduler.step()


class Optimization:
    """The per-step services of one fit: zero_grad, backward and optimizer steps with their hooks, and the
    automatic or manual form of a training batch."""

    def __init__(self, run: Run) -> None:
        self.run = run
        module = run.module
        self.classic_optimizer_idx = takes_optimizer_index(module)
        check_optimizers(module, run.optimizers, self.classic_optimizer_idx)
        self.run_batch = self._automatic_batch if module.automatic_optimization else self._manual_batch
        self._step_counters = [] if module.automatic_optimization else [
            optimizer.register_step_post_hook(self._count_manual_step) for optimizer in run.optimizers]
        hooks = run.hooks
        self._before_zero_grad = hooks.get("on_before_zero_grad")
        self._before_backward = hooks.get("on_before_backward")
        self._after_backward = hooks.get("on_after_backward")
        self._before_optimizer_step = hooks.get("on_before_optimizer_step")
        #: the last loss backward ran on (checked for NaN/inf by the fit loop), None after a skipped step.
        self.last_loss: torch.Tensor | None = None

    # -- services (also what manual optimization calls) ------------------------------------------------
    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        if self._before_zero_grad is not None:
            self._before_zero_grad(optimizer=optimizer)
        self.run.strategy.zero_grad(optimizer)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        if self._before_backward is not None:
            self._before_backward(loss=loss)
        self.run.strategy.backward(loss, optimizer)
        if self._after_backward is not None:
            self._after_backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer, optimizer_index: int) -> None:
        """Clip the gradients of one optimizer and step it (automatic optimization)."""
        if self._before_optimizer_step is not None:
            self._before_optimizer_step(optimizer=optimizer, optimizer_idx=optimizer_index)
        settings = self.run.settings
        if settings.gradient_clip_val:
            self.run.strategy.clip_gradients(optimizer, settings.gradient_clip_val, settings.gradient_clip_algorithm)
        self.run.strategy.optimizer_step(optimizer)

    # -- one training batch ---------------------------------------------------------------------------
    def _automatic_batch(self, batch: Any, batch_index: int, limit: float) -> Any:
        """Forward, backward and (at the end of an accumulation window) the optimizer step."""
        run = self.run
        strategy, metrics, progress = run.strategy, run.metrics, run.fit_loop
        accumulate = run.settings.accumulate_grad_batches
        steps_now = (batch_index + 1) % accumulate == 0 or batch_index + 1 >= limit
        metrics.in_training_step = True
        if metrics.logger_keys or metrics.prog_bar_keys or batch_index == 0:
            metrics.current_batch_size = infer_batch_size(batch)
        outputs = self.last_loss = None
        stepped = False
        for optimizer_index, optimizer in enumerate(run.optimizers):
            arguments = (batch, batch_index, optimizer_index) if self.classic_optimizer_idx else (batch, batch_index)
            with strategy.no_backward_sync(not steps_now) if accumulate > 1 else contextlib.nullcontext():
                outputs = strategy.run_step("training_step", *arguments)
                loss = loss_from(outputs, run.module)
                if loss is None:  # training_step returned None: skip this step
                    continue
                if accumulate > 1:
                    loss = loss / accumulate
                if batch_index % accumulate == 0 or optimizer_index:  # the window's first micro-batch
                    self.zero_grad(optimizer)
                self.backward(loss, optimizer)
                self.last_loss = loss.detach()
            if steps_now:
                self.optimizer_step(optimizer, optimizer_index)
                stepped = True
        metrics.in_training_step = False
        if stepped:
            progress.global_step += 1
            if run.scheduler_configs:
                step_schedulers(run.scheduler_configs, "step", progress.global_step, metrics)
        return outputs

    def _manual_batch(self, batch: Any, batch_index: int, limit: float) -> Any:
        """The user drives backward and the optimizers inside training_step."""
        metrics = self.run.metrics
        metrics.in_training_step = True
        metrics.current_batch_size = infer_batch_size(batch)
        outputs = self.run.strategy.run_step("training_step", batch, batch_index)
        metrics.in_training_step = False
        return outputs

    def _count_manual_step(self, *_: Any) -> None:
        """Optimizer step post-hook in manual optimization: each optimizer step is a global step."""
        self.run.fit_loop.global_step += 1

    def close(self) -> None:
        """Detach from the optimizers (they may be reused by a later fit)."""
        for handle in self._step_counters:
            handle.remove()
