"""StochasticWeightAveraging: average the weights of the last epochs, with the SWA learning-rate schedule."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.swa_utils import SWALR

from trellis.callbacks.base import Callback
from trellis.callbacks.messages import info
from trellis.data import loader_length
from trellis.errors import ConfigurationError
from trellis.optim import SchedulerConfig
from trellis.utilities.rank_zero import rank_zero_warn

AverageFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class StochasticWeightAveraging(Callback):
    """Stochastic Weight Averaging (Izmailov et al., 2018) as Lightning runs it.

    From epoch `swa_epoch_start` (an int, 1-based; a float: that fraction of max_epochs) the optimizer's
    scheduler is replaced by SWALR, annealing to `swa_lrs` over `annealing_epochs` ("cos" or "linear"), and at
    the start of each of those epochs the averaged copy of the module (kept on `device`) takes in the current
    weights. When training ends the module gets the averaged weights. A module with batch norm trains one more
    epoch, forward only, to recompute the running statistics for the averaged weights. The averaged weights,
    the count and the scheduler are saved in checkpoints.
    """

    def __init__(self, swa_lrs: float | list[float], swa_epoch_start: int | float = 0.8, annealing_epochs: int = 10,
                 annealing_strategy: Literal["cos", "linear"] = "cos", avg_fn: AverageFunction | None = None,
                 device: torch.device | str | None = torch.device("cpu")) -> None:
        message = "swa_epoch_start should be a >0 integer or a float between 0 and 1."
        if isinstance(swa_epoch_start, int) and swa_epoch_start < 1:
            raise ConfigurationError(message)
        if isinstance(swa_epoch_start, float) and not 0 <= swa_epoch_start <= 1:
            raise ConfigurationError(message)
        bad_float = isinstance(swa_lrs, float) and swa_lrs <= 0
        bad_list = isinstance(swa_lrs, list) and not all(isinstance(lr, float) and lr > 0 for lr in swa_lrs)
        if not isinstance(swa_lrs, (float, list)) or bad_float or bad_list:
            raise ConfigurationError("The `swa_lrs` should a positive float, or a list of positive floats")
        if avg_fn is not None and not callable(avg_fn):
            raise ConfigurationError("The `avg_fn` should be callable.")
        if device is not None and not isinstance(device, (torch.device, str)):
            raise ConfigurationError(f"device is expected to be a torch.device or a str. Found {device}")
        self.n_averaged: torch.Tensor | None = None
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = swa_lrs
        self._annealing_epochs = annealing_epochs
        self._annealing_strategy = annealing_strategy
        self._avg_fn = avg_fn or self.avg_fn
        self._device = device
        self._model_contains_batch_norm: bool | None = None
        self._average_model: nn.Module | None = None
        self._initialized = False
        self._swa_scheduler: Any = None
        self._scheduler_state: dict | None = None
        self._init_n_averaged = 0
        self._latest_update_epoch = -1
        self.momenta: dict[nn.modules.batchnorm._BatchNorm, float | None] = {}
        self._max_epochs = -1
        self._accumulate_grad_batches = 1
        self._extra_batches = 0

    @property
    def swa_start(self) -> int:
        """The first averaging epoch, zero-based."""
        assert isinstance(self._swa_epoch_start, int)
        return max(self._swa_epoch_start - 1, 0)

    @property
    def swa_end(self) -> int | float:
        """The last averaging epoch, zero-based (inf without max_epochs)."""
        return float("inf") if self._max_epochs == -1 else self._max_epochs - 1

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: nn.Module) -> bool:
        return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in pl_module.modules())

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # the copy is made before the strategy moves the module to its device; never a copy of the trainer
        self._average_model = copy.deepcopy(pl_module, memo={id(trainer): None})

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if len(trainer.optimizers) != 1:
            raise ConfigurationError("SWA currently works with 1 `optimizer`.")
        if len(trainer.lr_scheduler_configs) > 1:
            raise ConfigurationError("SWA currently not supported for more than 1 `lr_scheduler`.")
        if isinstance(self._swa_epoch_start, float):
            if trainer.max_epochs == -1:
                raise ConfigurationError(
                    "SWA with `swa_epoch_start` as a float is not supported when `max_epochs=-1`. Please provide "
                    "`swa_epoch_start` as an integer."
                )
            self._swa_epoch_start = int(trainer.max_epochs * self._swa_epoch_start)
        self._model_contains_batch_norm = self.pl_module_contains_batch_norm(pl_module)
        self._max_epochs = trainer.max_epochs
        if self._model_contains_batch_norm and trainer.max_epochs != -1:
            trainer.fit_loop.max_epochs += 1  # one more epoch, forward only, to update batch-norm statistics
        if self._scheduler_state is not None and trainer.lr_scheduler_configs:
            trainer.lr_scheduler_configs.clear()  # SWALR comes back (with its state) when its epoch starts

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        if not self._initialized and self.swa_start <= epoch <= self.swa_end:
            self._start_averaging(trainer, pl_module)
        if self.swa_start <= epoch <= self.swa_end and epoch > self._latest_update_epoch:
            assert self.n_averaged is not None and self._average_model is not None
            self.update_parameters(self._average_model, pl_module, self.n_averaged, self._avg_fn)
            self._latest_update_epoch = epoch
        if self._max_epochs != -1 and epoch == self.swa_end + 1:
            self._start_batch_norm_epoch(trainer, pl_module)

    def _start_averaging(self, trainer: Any, pl_module: Any) -> None:
        """Move the averaged copy to its device and put SWALR in place of the optimizer's scheduler."""
        self._initialized = True
        assert self._average_model is not None
        self._average_model = self._average_model.to(self._device or _device_of(pl_module))
        optimizer = trainer.optimizers[0]
        if isinstance(self._swa_lrs, float):
            self._swa_lrs = [self._swa_lrs] * len(optimizer.param_groups)
        for lr, group in zip(self._swa_lrs, optimizer.param_groups):
            group["initial_lr"] = lr
        # SWALR takes one learning rate per parameter group as well, which torch's annotation leaves out
        self._swa_scheduler = SWALR(optimizer, swa_lr=self._swa_lrs,  # type: ignore[arg-type]
                                    anneal_epochs=self._annealing_epochs,
                                    anneal_strategy=self._annealing_strategy,
                                    last_epoch=trainer.max_epochs if self._annealing_strategy == "cos" else -1)
        if self._scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._scheduler_state)
        elif trainer.current_epoch != self.swa_start:
            rank_zero_warn("SWA is initializing after swa_start without any checkpoint data. This may be caused by "
                           "loading a checkpoint from an older version of PyTorch Lightning.")
        config = SchedulerConfig(self._swa_scheduler)
        configs = trainer.lr_scheduler_configs
        if configs:
            if configs[0].interval != "epoch" or configs[0].frequency != 1:
                rank_zero_warn(f"SWA is currently only supported every epoch. Found {configs[0]}")
            info(f"Swapping scheduler `{type(configs[0].scheduler).__name__}` "
                 f"for `{type(self._swa_scheduler).__name__}`")
            configs[0] = config
        else:
            configs.append(config)
        if self.n_averaged is None:
            self.n_averaged = torch.tensor(self._init_n_averaged, dtype=torch.long, device=_device_of(pl_module))

    def _start_batch_norm_epoch(self, trainer: Any, pl_module: Any) -> None:
        """The extra epoch: averaged weights, fresh batch-norm statistics, forward only, no optimizer update
        (its one accumulation window ends without gradients), one batch more than the limit when the loader has
        it, as Lightning counts."""
        assert self._average_model is not None
        self.transfer_weights(self._average_model, pl_module)
        self.reset_batch_norm_and_save_state(pl_module)
        data = trainer._run.data
        batches = data.num_training_batches
        length = loader_length(data.train_loader)
        if length is None:
            raise ConfigurationError(
                "StochasticWeightAveraging updates batch-norm statistics over one more epoch, which needs a training "
                "loader with a length: use a map-style dataset, or a module without batch norm")
        self._extra_batches = 1 if length > batches else 0
        data.num_training_batches = batches + self._extra_batches
        trainer.fit_loop._skip_backward = True
        self._accumulate_grad_batches = trainer.accumulate_grad_batches
        trainer.accumulate_grad_batches = int(data.num_training_batches)

    def on_train_epoch_end(self, trainer: Any, *args: Any) -> None:
        trainer.fit_loop._skip_backward = False

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # the epoch counter has moved past the last epoch when this runs
        if self._model_contains_batch_norm and self._max_epochs != -1 and trainer.current_epoch - 1 == self.swa_end + 1:
            trainer.accumulate_grad_batches = self._accumulate_grad_batches
            trainer._run.data.num_training_batches -= self._extra_batches
            trainer.fit_loop.max_epochs -= 1
            self.reset_momenta()
        elif trainer.current_epoch - 1 == self.swa_end or self._max_epochs == -1:
            if self._average_model is not None:
                self.transfer_weights(self._average_model, pl_module)

    @staticmethod
    def transfer_weights(src_pl_module: nn.Module, dst_pl_module: nn.Module) -> None:
        for source, target in zip(src_pl_module.parameters(), dst_pl_module.parameters()):
            target.detach().copy_(source.to(target.device))

    def reset_batch_norm_and_save_state(self, pl_module: nn.Module) -> None:
        """Zero the running statistics and make them a cumulative average (momentum None) for one epoch."""
        self.momenta = {}
        device = _device_of(pl_module)
        for module in pl_module.modules():
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean = torch.zeros_like(module.running_mean, device=device, dtype=module.running_mean.dtype)
            module.running_var = torch.ones_like(module.running_var, device=device, dtype=module.running_var.dtype)
            self.momenta[module] = module.momentum
            module.momentum = None
            assert module.num_batches_tracked is not None
            module.num_batches_tracked *= 0

    def reset_momenta(self) -> None:
        for module, momentum in self.momenta.items():
            module.momentum = momentum

    @staticmethod
    def update_parameters(average_model: nn.Module, model: nn.Module, n_averaged: torch.Tensor,
                          avg_fn: AverageFunction) -> None:
        """Fold the model's weights into the average (the first time: copy them)."""
        for averaged, current in zip(average_model.parameters(), model.parameters()):
            device = averaged.device
            target, source = averaged.detach(), current.detach().to(device)
            target.copy_(source if n_averaged == 0 else avg_fn(target, source, n_averaged.to(device)))
        n_averaged += 1

    @staticmethod
    def avg_fn(averaged_model_parameter: torch.Tensor, model_parameter: torch.Tensor,
               num_averaged: torch.Tensor) -> torch.Tensor:
        """The running equal-weight mean."""
        return averaged_model_parameter + (model_parameter - averaged_model_parameter) / (num_averaged + 1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_averaged": 0 if self.n_averaged is None else self.n_averaged.item(),
            "latest_update_epoch": self._latest_update_epoch,
            "scheduler_state": None if self._swa_scheduler is None else self._swa_scheduler.state_dict(),
            "average_model_state": None if self._average_model is None else self._average_model.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._init_n_averaged = state_dict["n_averaged"]
        self._latest_update_epoch = state_dict["latest_update_epoch"]
        self._scheduler_state = state_dict["scheduler_state"]
        if self._average_model is not None and state_dict["average_model_state"] is not None:
            self._average_model.load_state_dict(state_dict["average_model_state"])


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
