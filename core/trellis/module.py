"""trellis.Module: a torch.nn.Module that knows how to train itself."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import torch

from trellis.errors import ConfigurationError
from trellis.hookspecs import default_hook
from trellis.module_hooks import LoopMethods, ModuleHooks
from trellis.module_loading import class_only_method
from trellis.utils.collections import apply_to_tensors
from trellis.utils.device_dtype import DeviceDtypeModuleMixin
from trellis.utils.hparams import HyperparametersMixin
from trellis.utils.rank_zero import warn_once

if TYPE_CHECKING:
    from trellis.trainer import Trainer


class Module(ModuleHooks, LoopMethods, HyperparametersMixin, DeviceDtypeModuleMixin):
    """Subclass it, define training_step and configure_optimizers, and hand it to a Trainer."""

    #: where checkpoints keep the hyperparameters, the __init__ argument they came as, and their kind.
    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    #: properties TorchScript must not compile (to_torchscript scripts the module).
    __jit_unused_properties__: list[str] = [
        "example_input_array", "on_gpu", "current_epoch", "global_step", "global_rank", "local_rank", "logger",
        "loggers", "automatic_optimization", "trainer", "strict_loading", "hparams", "hparams_initial",
        *DeviceDtypeModuleMixin.__jit_unused_properties__,
    ]
    #: True while to_torchscript compiles the module (`trainer` then reads as None instead of raising).
    _jit_is_scripting: bool = False
    #: (args, kwargs) of the manual_backward call in progress, for the default `backward`.
    _backward_arguments: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Trainer | None = None
        self._example_input_array: Any = None
        self._automatic_optimization: bool = True
        self._strict_loading: bool | None = None
        self._param_requires_grad_state: dict[torch.Tensor, bool] = {}

    # -- what users override ------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        raise ConfigurationError(
            f"{type(self).__name__} does not define training_step(self, batch, batch_idx), which fit needs"
        )

    def configure_optimizers(self) -> Any:
        """Default when not overridden: Adam(lr=1e-3) over all parameters, with a notice."""
        from trellis.utils.rank_zero import rank_zero_info

        rank_zero_info(f"{type(self).__name__} defines no configure_optimizers: using Adam(lr=1e-3).")
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def prepare_data(self) -> None:
        """Download or write data, once per node, before setup."""

    def configure_model(self) -> None:
        """Create layers here to have them initialised directly on the device or sharded (FSDP, DeepSpeed)."""

    def configure_callbacks(self) -> Sequence[Any]:
        """Callbacks this module always needs; they replace Trainer callbacks of the same type."""
        return []

    # -- trainer state ------------------------------------------------------------------------
    @property
    def trainer(self) -> Trainer:
        """The Trainer running this module; reading it before fit/validate/test/predict is an error."""
        if self._trainer is None and not Module._jit_is_scripting:
            raise RuntimeError(f"{type(self).__qualname__} is not attached to a Trainer: call trainer.fit(module) "
                               "(or validate/test/predict) first")
        return self._trainer  # type: ignore[return-value]  # None only while TorchScript compiles the module

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        for child in self.children():
            if isinstance(child, Module):
                child.trainer = trainer
        object.__setattr__(self, "_trainer", trainer)

    @property
    def example_input_array(self) -> Any:
        """An input for forward: a tensor (forward(x)), a tuple (forward(*x)) or a dict (forward(**x)); used
        by to_onnx, to_torchscript(method="trace") and the model summary."""
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, example: Any) -> None:
        self._example_input_array = example

    @property
    def current_epoch(self) -> int:
        """The Trainer's current epoch, 0 when not attached."""
        return self._trainer.current_epoch if self._trainer else 0

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far, 0 when not attached."""
        return self._trainer.global_step if self._trainer else 0

    @property
    def global_rank(self) -> int:
        """This process's index over all nodes and devices."""
        return self._trainer.global_rank if self._trainer else 0

    @property
    def local_rank(self) -> int:
        """This process's index on its node."""
        return self._trainer.local_rank if self._trainer else 0

    @property
    def on_gpu(self) -> bool:
        """Whether the module is on a CUDA device."""
        return self.device.type == "cuda"

    @property
    def automatic_optimization(self) -> bool:
        """False to drive the optimizers yourself in training_step (manual optimization)."""
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = value

    @property
    def strict_loading(self) -> bool:
        """Whether checkpoints must hold exactly this module's weights (load_from_checkpoint, ckpt_path=...)."""
        return self._strict_loading in (None, True)

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:
        self._strict_loading = value

    @property
    def logger(self) -> Any:
        """The Trainer's first logger, None when there is none or the module is not attached."""
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list[Any]:
        """The Trainer's loggers ([] when not attached)."""
        return self._trainer.loggers if self._trainer is not None else []

    # -- logging ------------------------------------------------------------------------------
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a value for the loggers, the progress bar and callbacks (trainer.callback_metrics).

        `value` is a number, a one-element tensor or a torchmetrics.Metric (computed and reset at the epoch's
        end; with on_step, its forward value each step). on_step/on_epoch default by where you log: per step in
        training_step and the training batch hooks, per epoch in validation/test steps and every epoch hook.
        Logged on both, the loggers get `name_step` and `name_epoch`, callbacks also `name`. Epoch values
        reduce with `reduce_fx` ("mean" weighted by `batch_size`, inferred from the batch when not given,
        "sum", "max", "min"), over all processes with `sync_dist`. With several evaluation loaders the name gets
        `/dataloader_idx_N` unless `add_dataloader_idx=False`.
        """
        trainer = self._trainer
        if trainer is None:
            warn_once(f"self.log({name!r}) was called, but {type(self).__name__} is not attached to a Trainer: "
                      "the value is dropped")
            return
        trainer._metrics.log(self, name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph,
                             sync_dist, sync_dist_group, add_dataloader_idx, batch_size, metric_attribute,
                             rank_zero_only)

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """self.log for each item of a dict or a torchmetrics.MetricCollection (each metric under its name)."""
        from trellis.metrics.values import is_metric_collection

        if is_metric_collection(dictionary):
            arguments = {"keep_base": False}
            if getattr(dictionary, "_enable_compute_groups", False):
                arguments["copy_state"] = False
            items = dictionary.items(**arguments)
        else:
            items = dictionary.items()
        for name, value in items:
            self.log(name, value, prog_bar=prog_bar, logger=logger, on_step=on_step, on_epoch=on_epoch,
                     reduce_fx=reduce_fx, enable_graph=enable_graph, sync_dist=sync_dist,
                     sync_dist_group=sync_dist_group, add_dataloader_idx=add_dataloader_idx, batch_size=batch_size,
                     rank_zero_only=rank_zero_only)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """print() from global rank zero only."""
        if self.global_rank != 0:
            return
        bar = self._trainer.progress_bar_callback if self._trainer is not None else None
        if bar is not None and getattr(bar, "is_enabled", True) and hasattr(bar, "print"):
            bar.print(*args, **kwargs)  # above the bar, without breaking it
        else:
            print(*args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """Default: the module's forward on the batch."""
        batch = kwargs.get("batch", args[0] if args else None)
        return self(batch)

    # -- optimization ---------------------------------------------------------------------------
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizers, whose step() goes through the strategy and precision (loss scaling, hooks).

        They are instances of the optimizers' own classes (isinstance checks hold); one optimizer comes alone.
        """
        run = self.trainer._run
        optimization = run.optimization if run is not None else None
        if use_pl_optimizer and optimization is not None:
            optimizers: list[Any] = list(optimization.wrapped)
        else:
            optimizers = list(self.trainer.optimizers)
        return optimizers[0] if len(optimizers) == 1 else optimizers

    @default_hook
    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Called before every optimizer step (automatic optimization) with the Trainer's clipping flags."""
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                            gradient_clip_algorithm=gradient_clip_algorithm)

    def clip_gradients(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                       gradient_clip_algorithm: str | None = None) -> None:
        """Clip an optimizer's gradients (after unscaling them) by norm or by value; no value: the Trainer's.

        For manual optimization call it between manual_backward and opt.step(); in automatic optimization
        override configure_gradient_clipping and call it there.
        """
        settings = self.trainer.settings
        if gradient_clip_val is None:
            gradient_clip_val = settings.gradient_clip_val or 0.0
        elif settings.gradient_clip_val is not None and settings.gradient_clip_val != gradient_clip_val:
            raise ConfigurationError(
                f"Trainer(gradient_clip_val={settings.gradient_clip_val!r}) and clip_gradients(gradient_clip_val="
                f"{gradient_clip_val!r}) disagree: set one of them"
            )
        if gradient_clip_algorithm is None:
            gradient_clip_algorithm = settings.gradient_clip_algorithm
        else:
            gradient_clip_algorithm = gradient_clip_algorithm.lower()
            if settings.gradient_clip_algorithm not in ("norm", gradient_clip_algorithm):
                raise ConfigurationError(
                    f"Trainer(gradient_clip_algorithm={settings.gradient_clip_algorithm!r}) and clip_gradients("
                    f"gradient_clip_algorithm={gradient_clip_algorithm!r}) disagree: set one of them"
                )
        if isinstance(gradient_clip_val, bool) or not isinstance(gradient_clip_val, (int, float)):
            raise TypeError(f"gradient_clip_val must be an int or a float, not {gradient_clip_val!r}")
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ConfigurationError(
                f"gradient_clip_algorithm={gradient_clip_algorithm!r} is unknown: use 'norm' or 'value'")
        if gradient_clip_val <= 0:
            return
        self.trainer.strategy.clip_gradients(getattr(optimizer, "optimizer", optimizer), float(gradient_clip_val),
                                             gradient_clip_algorithm)

    def lr_schedulers(self) -> Any:
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        if not schedulers:
            return None
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward through the strategy and precision (loss scaling, hooks): use it instead of loss.backward()
        in manual optimization. Extra arguments (retain_graph=True) go to `backward`."""
        if self.automatic_optimization:
            raise ConfigurationError(
                "manual_backward is for manual optimization: set self.automatic_optimization = False in __init__, "
                "or return the loss from training_step and let the Trainer call backward"
            )
        run = self.trainer._run
        if run is None or run.optimization is None:
            raise RuntimeError("manual_backward is for training_step, during trainer.fit")
        self._backward_arguments = (args, kwargs)
        try:
            run.optimization.backward(loss, None)
        finally:
            self._backward_arguments = None

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Gather a tensor, number or collection of them from every process: each tensor becomes
        (world_size, ...) stacked in rank order (as it is in one process, or without a Trainer). sync_grads=True
        lets gradients flow back through the gather."""
        if group is not None:
            raise ConfigurationError("all_gather(group=...) is not supported: Trellis gathers from every process")
        if self._trainer is None:
            return _as_tensors(data, self.device)
        strategy = self._trainer.strategy
        gather = strategy.all_gather
        if sync_grads:
            if "sync_grads" in inspect.signature(gather).parameters:
                gather = functools.partial(gather, sync_grads=True)
            elif strategy.world_size > 1:
                raise ConfigurationError(
                    f"{type(strategy).__name__}.all_gather cannot pass gradients back (no sync_grads argument): "
                    "gather without sync_grads, or use a strategy that supports it"
                )
        device = self.device
        return apply_to_tensors(_as_tensors(data, device), gather)

    # -- switching parameters ---------------------------------------------------------------------
    def toggle_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Compute gradients for this optimizer's parameters only: the parameters of the other optimizers stop
        requiring gradients until untoggle_optimizer (GANs: the discriminator's while the generator steps)."""
        previous: dict[torch.Tensor, bool] = {}
        for other in self.trainer.optimizers:
            for group in other.param_groups:
                for parameter in group["params"]:
                    if parameter not in previous:
                        previous[parameter] = parameter.requires_grad
                        parameter.requires_grad = False
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.requires_grad = previous.get(parameter, parameter.requires_grad)
        self._param_requires_grad_state = previous

    def untoggle_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Give the other optimizers' parameters back the requires_grad they had before toggle_optimizer."""
        toggled = getattr(optimizer, "optimizer", optimizer)
        previous = self._param_requires_grad_state
        for other in self.trainer.optimizers:
            if other is toggled:
                continue
            for group in other.param_groups:
                for parameter in group["params"]:
                    if parameter in previous:
                        parameter.requires_grad = previous[parameter]
        self._param_requires_grad_state = {}

    @contextlib.contextmanager
    def toggled_optimizer(self, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """toggle_optimizer on entry, untoggle_optimizer on exit (also when the block raises)."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def freeze(self) -> Module:
        """No parameter requires gradients, and the module is in eval mode (for inference)."""
        for parameter in self.parameters():
            parameter.requires_grad = False
        return torch.nn.Module.train(self, False)

    def unfreeze(self) -> Module:
        """Every parameter requires gradients again, and the module is in training mode."""
        for parameter in self.parameters():
            parameter.requires_grad = True
        return torch.nn.Module.train(self, True)

    # -- exporting ------------------------------------------------------------------------------
    def to_torchscript(self, file_path: str | os.PathLike | None = None, method: str | None = "script",
                       example_inputs: Any = None, **kwargs: Any) -> Any:
        """The module compiled by torch.jit.script (or traced with method="trace" on `example_inputs`, else
        example_input_array), in eval mode; saved to `file_path` when given. kwargs go to script/trace."""
        from trellis.module_export import to_torchscript

        return to_torchscript(self, file_path, method, example_inputs, **kwargs)

    def to_onnx(self, file_path: str | os.PathLike | IO[bytes] | None = None, input_sample: Any = None,
                **kwargs: Any) -> Any:
        """Export to ONNX with torch.onnx.export on `input_sample` (else example_input_array); kwargs go to
        torch.onnx.export. Needs the onnx package (pip install onnx)."""
        from trellis.module_export import to_onnx

        return to_onnx(self, file_path, input_sample, **kwargs)

    # -- loading ------------------------------------------------------------------------------
    @class_only_method
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike | IO[bytes],
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Module:
        """Rebuild the module with the hyperparameters its checkpoint saved and load its weights.

        kwargs override saved hyperparameters (or give __init__ arguments that were not saved); `hparams_file`
        (.yaml or .csv) replaces the saved hyperparameters. map_location as for torch.load (default: the
        saved devices, or the CPU where a device is not available here), and the module ends on the device
        its weights were loaded to. strict (default: the module's strict_loading) requires exactly the
        checkpoint's weights. weights_only=False also loads checkpoints that hold arbitrary Python objects:
        only for files you trust (default: True, False for http(s) URLs, as torch and Lightning do).
        """
        from trellis.module_loading import load_from_checkpoint

        return load_from_checkpoint(cls, checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (deepcopy, spawn) without its Trainer."""
        state = dict(self.__dict__)
        state["_trainer"] = None
        return state


def _as_tensors(data: Any, device: torch.device) -> Any:
    """Numbers as tensors, and every tensor on `device`, in a nesting of lists, tuples and mappings."""
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if isinstance(data, (int, float)):
        return torch.tensor(data, device=device)
    if isinstance(data, Mapping):
        mapping_type: Callable[..., Any] = type(data)  # a concrete mapping, built from a dict
        return mapping_type({key: _as_tensors(value, device) for key, value in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(_as_tensors(value, device) for value in data))
    if isinstance(data, (list, tuple)):
        return type(data)(_as_tensors(value, device) for value in data)
    return data
