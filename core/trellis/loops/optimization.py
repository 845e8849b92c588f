"""What one training batch does, as Lightning's automatic and manual optimization do it.

Automatic optimization builds a closure (training_step, zero_grad at the start of an accumulation window,
backward) and hands it to the optimizer step, so optimizers that re-evaluate the loss (LBFGS) and modules
that override `optimizer_step` work. Every service a module, strategy or precision can override is looked up
once per fit: what nobody overrides is called directly, so it costs nothing on the per-step path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from trellis.errors import ConfigurationError
from trellis.hookspecs import is_overridden
from trellis.optim import StrategyOptimizer
from trellis.roles import Precision, Strategy

if TYPE_CHECKING:
    from trellis.metrics import MetricStore
    from trellis.module import Module
    from trellis.run import Run

_Tensor = torch.Tensor
#: torch's optimizers whose step(closure) only calls the closure first: the loop calls it itself, then step()
#: (the same computation, without enable_grad's context on every step). LBFGS re-evaluates, so it gets the closure.
_CLOSURE_FIRST = frozenset({
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad, torch.optim.Adadelta,
    torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam, torch.optim.RMSprop, torch.optim.Rprop,
    torch.optim.ASGD,
})


def loss_from(outputs: Any, module: Module) -> torch.Tensor | None:
    """The loss in what training_step returned: a tensor, a dict with "loss", or None."""
    if outputs is None or isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        log_classic_result(outputs, module)
        if "loss" in outputs:
            loss: torch.Tensor = outputs["loss"]
            return loss
    raise ConfigurationError(
        f"training_step returned a {type(outputs).__name__} without a loss: return the loss tensor, "
        "a dict with a 'loss' key, or None to skip the step"
    )


def log_classic_result(result: Any, module: Module) -> None:
    """Classic dict results: their "log" and "progress_bar" sub-dicts are logged."""
    if not isinstance(result, dict):
        return
    for key, prog_bar, logger in (("log", False, None), ("progress_bar", True, False)):
        for name, value in (result.get(key) or {}).items():
            module.log(name, value, prog_bar=prog_bar, logger=logger)


def takes_batch_index(step: Callable[..., Any]) -> bool:
    """Whether a step method takes batch_idx: by that name, *args, or a second positional argument
    (`training_step(self, batch)` gets the batch alone, as in Lightning)."""
    try:
        spec = inspect.getfullargspec(step)
    except TypeError:
        return True
    arguments = spec.args[1:] if inspect.ismethod(step) else spec.args
    return "batch_idx" in arguments or spec.varargs is not None or len(arguments) >= 2


def takes_optimizer_index(module: Module) -> bool:
    """Classic form: training_step(self, batch, batch_idx, optimizer_idx) with several optimizers."""
    return "optimizer_idx" in inspect.signature(module.training_step).parameters


def check_optimizers(module: torch.nn.Module, optimizers: list[torch.optim.Optimizer], classic: bool) -> None:
    if module.automatic_optimization and len(optimizers) > 1 and not classic:
        raise ConfigurationError(
            f"{type(module).__name__} returns {len(optimizers)} optimizers with automatic optimization: set "
            "self.automatic_optimization = False and step them in training_step, or add an optimizer_idx argument "
            "to training_step (classic alternating form)"
        )


def step_schedulers(run: Run, interval: str, count: int, plateau: bool) -> None:
    """Step the schedulers of an interval (non-plateau ones, or ReduceLROnPlateau ones, which read a metric)
    whose frequency divides `count`: the batch of the epoch (1-based) or the epoch (1-based)."""
    metrics: MetricStore = run.metrics
    for config in run.scheduler_configs:
        if config.interval != interval or config.needs_metric != plateau or count % config.frequency:
            continue
        value = None
        if plateau:
            available = metrics.callback_metrics
            value = available.get(config.monitor or "")
            if value is None:
                if config.strict:
                    raise ConfigurationError(
                        f"ReduceLROnPlateau monitors {config.monitor!r}, which was not logged; available: "
                        f"{sorted(available)}. Log it with self.log or set strict=False"
                    )
                continue
        run.module.lr_scheduler_step(config.scheduler, value)


class Optimization:
    """The per-step services of one fit: the optimizer steps, zero_grad and backward with their hooks, in the
    automatic or manual form of a training batch."""

    def __init__(self, run: Run) -> None:
        self.run = run
        module, strategy = run.module, run.strategy
        precision = strategy.precision
        self.automatic = bool(module.automatic_optimization)
        self.classic_optimizer_idx = takes_optimizer_index(module)
        check_optimizers(module, run.optimizers, self.classic_optimizer_idx)
        #: what Module.optimizers() hands out: optimizers whose step goes through the strategy.
        self.wrapped = [StrategyOptimizer.wrap(optimizer, self, index)
                        for index, optimizer in enumerate(run.optimizers)]
        self._step_counters = [] if self.automatic else [
            optimizer.register_step_post_hook(self._count_manual_step) for optimizer in run.optimizers]
        hooks = run.hooks
        self._before_zero_grad = hooks.get("on_before_zero_grad")
        self._before_backward = hooks.get("on_before_backward")
        self._after_backward = hooks.get("on_after_backward")
        self._before_optimizer_step = hooks.get("on_before_optimizer_step")
        self._module_step = is_overridden(module, "optimizer_step")
        self._module_zero_grad = is_overridden(module, "optimizer_zero_grad")
        self._module_clipping = is_overridden(module, "configure_gradient_clipping")
        self._plain_zero_grad = (self._before_zero_grad is None and not self._module_zero_grad
                                 and _inherited(strategy, "zero_grad"))
        self._plain_backward = (self._before_backward is None and self._after_backward is None
                                and not is_overridden(module, "backward") and _inherited(strategy, "backward")
                                and type(precision).backward is Precision.backward)
        self._plain_step = (not self._module_step and _inherited(strategy, "optimizer_step")
                            and type(precision).optimizer_step is Precision.optimizer_step)
        clips = self.automatic and (self._module_clipping or bool(run.settings.gradient_clip_val))
        #: on_before_optimizer_step or gradient clipping run between the closure and the step.
        self._prepares_step = self._before_optimizer_step is not None or clips
        self._step_function = strategy.step_function("training_step")
        #: training_step(self, batch) without batch_idx is called with the batch alone, as Lightning does.
        self._with_index = takes_batch_index(module.training_step)
        #: the loss of the last backward (the fit loop checks it for NaN/inf), None after a step without one.
        self.last_loss: torch.Tensor | None = None
        self.last_outputs: Any = None

    # -- services (also what manual optimization and Module methods call) ----------------------------
    def zero_grad(self, optimizer: torch.optim.Optimizer, batch_index: int) -> None:
        if self._before_zero_grad is not None:
            self._before_zero_grad(optimizer=optimizer)
        if self._module_zero_grad:
            self.run.module.optimizer_zero_grad(self.run.fit_loop.epoch, batch_index, optimizer)
        else:
            self.run.strategy.zero_grad(optimizer)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        if self._before_backward is not None:
            self._before_backward(loss=loss)
        self.run.strategy.backward(loss, optimizer)
        if self._after_backward is not None:
            self._after_backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None,
                       optimizer_index: int = 0) -> Any:
        """Step through the strategy and precision; the closure runs first, then the hooks and clipping."""
        if self._prepares_step:
            closure = self._with_after_closure(optimizer, optimizer_index, closure)
        return self.run.strategy.optimizer_step(optimizer, closure)

    def _with_after_closure(self, optimizer: torch.optim.Optimizer, optimizer_index: int,
                            closure: Callable[[], Any] | None) -> Callable[[], Any]:
        """The closure followed by on_before_optimizer_step and gradient clipping (Lightning's order)."""

        def closure_then_prepare_step() -> Any:
            result = closure() if closure is not None else None
            if self._before_optimizer_step is not None:
                self._before_optimizer_step(optimizer=optimizer, optimizer_idx=optimizer_index)
            if self.automatic:
                settings = self.run.settings
                self.run.module.configure_gradient_clipping(
                    optimizer, gradient_clip_val=settings.gradient_clip_val,
                    gradient_clip_algorithm=settings.gradient_clip_algorithm)
            return result

        return closure_then_prepare_step

    # -- one training batch ---------------------------------------------------------------------------
    def run_batch(self, batch: Any, batch_index: int, steps_now: bool) -> Any:
        """Run one batch; `steps_now` is False inside an accumulation window. Returns training_step's output."""
        metrics = self.run.metrics
        outer_hook, metrics.fx = metrics.fx, "training_step"
        self.last_loss = self.last_outputs = None
        try:
            if not self.automatic:
                return self._step_function(batch, batch_index) if self._with_index else self._step_function(batch)
            for optimizer_index, optimizer in enumerate(self.run.optimizers):
                self._automatic_step(batch, batch_index, optimizer_index, optimizer, steps_now)
            if steps_now:  # one global step per batch, whatever the number of optimizers (classic form)
                self.run.fit_loop.global_step += 1
            return self.last_outputs
        finally:
            metrics.fx = outer_hook

    def _automatic_step(self, batch: Any, batch_index: int, optimizer_index: int, optimizer: torch.optim.Optimizer,
                        steps_now: bool) -> None:
        run = self.run
        accumulate = run.fit_loop.accumulate_grad_batches
        step_function, module = self._step_function, run.module
        if self.classic_optimizer_idx:
            arguments: tuple[Any, ...] = (batch, batch_index, optimizer_index)
        else:
            arguments = (batch, batch_index) if self._with_index else (batch,)
        zero_grad_now = batch_index % accumulate == 0 or optimizer_index > 0
        skip_backward = run.fit_loop._skip_backward

        def closure() -> torch.Tensor | None:
            outputs = step_function(*arguments)
            loss = outputs if outputs.__class__ is _Tensor else loss_from(outputs, module)
            self.last_outputs = outputs
            if zero_grad_now:
                if self._plain_zero_grad:
                    optimizer.zero_grad()
                else:
                    self.zero_grad(optimizer, batch_index)
            if loss is None:
                return None
            if accumulate > 1:
                loss = loss / accumulate
            if skip_backward:
                return loss
            if self._plain_backward:
                loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            else:
                self.backward(loss, optimizer)
            self.last_loss = loss
            return loss

        if not steps_now:
            with run.strategy.no_backward_sync(True):
                closure()
            return
        if accumulate == 1:
            self._step(optimizer, optimizer_index, batch_index, closure)
        else:
            with run.strategy.no_backward_sync(False):
                self._step(optimizer, optimizer_index, batch_index, closure)

    def _step(self, optimizer: torch.optim.Optimizer, optimizer_index: int, batch_index: int,
              closure: Callable[[], Any]) -> None:
        if self._module_step:
            self.run.module.optimizer_step(self.run.fit_loop.epoch, batch_index, self.wrapped[optimizer_index],
                                           closure)
        elif self._plain_step and not self._prepares_step:
            if type(optimizer) in _CLOSURE_FIRST:
                closure()
                optimizer.step()
            else:
                optimizer.step(closure)
        else:
            self.optimizer_step(optimizer, closure, optimizer_index)

    def _count_manual_step(self, *_: Any) -> None:
        """Optimizer step post-hook in manual optimization: each optimizer step is a global step."""
        self.run.fit_loop.global_step += 1

    def close(self) -> None:
        """Detach from the optimizers (they may be reused by a later fit)."""
        for handle in self._step_counters:
            handle.remove()


def _inherited(strategy: Strategy, method: str) -> bool:
    """Whether the strategy uses the role's own implementation of a method."""
    return getattr(type(strategy), method) is getattr(Strategy, method)
