"""trellis.Module: a torch.nn.Module that knows how to train itself."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from trellis.errors import ConfigurationError
from trellis.hookspecs import default_hook
from trellis.module_hooks import LoopMethods, ModuleHooks
from trellis.utils.hparams import HyperparametersMixin
from trellis.utils.rank_zero import warn_once

if TYPE_CHECKING:
    from trellis.trainer import Trainer


class Module(ModuleHooks, LoopMethods, HyperparametersMixin, torch.nn.Module):
    """Subclass it, define training_step and configure_optimizers, and hand it to a Trainer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Trainer | None = None
        #: False to drive optimizers yourself in training_step (manual optimization).
        self.automatic_optimization: bool = True

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
        if self._trainer is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a Trainer; call trainer.fit(module) first")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        object.__setattr__(self, "_trainer", trainer)

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer else 0

    @property
    def device(self) -> torch.device:
        parameter = next(self.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    @property
    def logger(self) -> Any:
        return self._trainer.logger if self._trainer else None

    @property
    def loggers(self) -> list[Any]:
        return self._trainer.loggers if self._trainer else []

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
        if self.global_rank == 0:
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
        """Clip an optimizer's gradients (after unscaling them) by norm or by value; no value: the Trainer's."""
        settings = self.trainer.settings
        value = settings.gradient_clip_val if gradient_clip_val is None else gradient_clip_val
        if not value:
            return
        algorithm = gradient_clip_algorithm or settings.gradient_clip_algorithm
        self.trainer.strategy.clip_gradients(getattr(optimizer, "optimizer", optimizer), float(value), algorithm)

    def lr_schedulers(self) -> Any:
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        if not schedulers:
            return None
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward through the strategy and precision (use instead of loss.backward())."""
        run = self.trainer._run
        if run is None or run.optimization is None:
            raise RuntimeError("manual_backward is for training_step in manual optimization, during fit")
        run.optimization.backward(loss, None)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.all_gather(tensor) if self._trainer else tensor

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: str, map_location: Any = "cpu", strict: bool = True, weights_only: bool = True, **overrides: Any
    ) -> Module:
        """Rebuild the module from a checkpoint's hyperparameters (with overrides) and load its weights."""
        from trellis.checkpointing import load_checkpoint_file

        checkpoint = load_checkpoint_file(checkpoint_path, map_location=map_location, weights_only=weights_only)
        arguments = {**checkpoint.get("hyper_parameters", {}), **overrides}
        accepted = inspect.signature(cls.__init__).parameters
        takes_any = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in accepted.values())
        module = cls(**{key: value for key, value in arguments.items() if takes_any or key in accepted})
        module.configure_model()
        module.load_state_dict(checkpoint["state_dict"], strict=strict)
        module.on_load_checkpoint(checkpoint)
        return module
