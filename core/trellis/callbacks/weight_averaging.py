"""WeightAveraging and EMAWeightAveraging: keep an averaged copy of the model (torch.optim.swa_utils.AveragedModel)
updated during training; validate with it and end training with its weights."""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from trellis.callbacks.base import Callback
from trellis.callbacks.messages import info
from trellis.utilities.rank_zero import rank_zero_warn


class WeightAveraging(Callback):
    """An AveragedModel of the module (keywords such as `avg_fn` or `multi_avg_fn` go to it; default: the
    equal-weight average of SWA), updated after each optimizer step (or epoch) for which `should_update` says
    so. Validation runs with the averaged weights, and training ends with them in the module.

    With `use_buffers` (the default) buffers such as batch-norm statistics are averaged too. `device`: where the
    average lives (default: the module's device). Checkpoints hold the averaged weights under "state_dict" and
    the current ones under "current_model_state", so a checkpoint loads as the averaged model and a resume
    continues both.
    """

    def __init__(self, device: torch.device | str | int | None = None, use_buffers: bool = True, **kwargs: Any) -> None:
        self._device = torch.device(device) if isinstance(device, str) else device
        self._use_buffers = use_buffers
        self._kwargs = kwargs
        self._average_model: AveragedModel | None = None
        #: optimizer steps taken when the average was last updated (the first update follows the first step).
        self._latest_update_step = 0
        #: the epoch after which the average was last updated.
        self._latest_update_epoch = -1
        self._loaded: tuple[Any, dict[str, Any]] | None = None

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Whether to update the average after optimizer step `step_idx` or epoch `epoch_idx` (zero-based; one of
        them is given). Default: after every step."""
        return step_idx is not None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        from trellis.module import Module

        if type(pl_module).configure_model is not Module.configure_model:
            rank_zero_warn(
                "You're using the WeightAveraging callback with a model that overrides the configure_model callback. "
                "WeightAveraging doesn't support sharding model layers, so you may run out of memory."
            )
            pl_module.configure_model()
        with _trainer_detached(pl_module):  # AveragedModel copies the module, never its trainer
            self._average_model = AveragedModel(model=pl_module, device=self._device or pl_module.device,
                                                use_buffers=self._use_buffers, **self._kwargs)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step_idx = trainer.global_step - 1
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=step_idx):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        if epoch > self._latest_update_epoch and self.should_update(epoch_idx=epoch):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        assert self._average_model is not None
        for average, current in zip(self._tensors(self._average_model.module), self._tensors(pl_module)):
            current.data.copy_(average.data)

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self._latest_update_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = state_dict["latest_update_step"]
        if self._loaded is not None:  # the module's weights are loaded by now: put the current ones back
            pl_module, current = self._loaded
            pl_module.load_state_dict(current)
            self._loaded = None

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            info("You're using the WeightAveraging callback, but saving a checkpoint outside the 'fit' stage. The "
                 "state of the WeightAveraging callback won't be saved in the checkpoint. If training has finished, "
                 "the average model parameters will be saved to the state_dict in the checkpoint.")
            return
        average = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {name[len("module."):]: value for name, value in average.items()
                                    if name.startswith("module.")}
        checkpoint["averaging_state"] = {name: value for name, value in average.items()
                                         if not name.startswith("module.")}

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            rank_zero_warn(
                "You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage. The "
                "WeightAveraging state cannot be restored. If you're using the checkpoint for prediction or testing, "
                "you can ignore this warning. To disable the warning, remove the WeightAveraging callback."
            )
        elif "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            info("Found current_model_state in the checkpoint. This will be used to initialize the model.")
            average = {f"module.{name}": value for name, value in checkpoint["state_dict"].items()}
            self._average_model.load_state_dict({**average, **checkpoint["averaging_state"]})
            # "state_dict" (the averages) is loaded into the module after this hook; load_state_dict puts the
            # current weights back once it has been
            self._loaded = (pl_module, checkpoint["current_model_state"])
        else:
            rank_zero_warn("The checkpoint was not created with WeightAveraging. Both the current and the average "
                           "model will be initialized with state_dict.")
            self._average_model.module.load_state_dict(copy.deepcopy(checkpoint["state_dict"]), strict=False)

    def _swap_models(self, pl_module: Any) -> None:
        assert self._average_model is not None
        for average, current in zip(self._tensors(self._average_model.module), self._tensors(pl_module)):
            held = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(held)

    @staticmethod
    def _tensors(module: torch.nn.Module) -> Iterator[torch.Tensor]:
        return itertools.chain(module.parameters(), module.buffers())


class EMAWeightAveraging(WeightAveraging):
    """An exponential moving average of the weights (`decay` per update), updated every `update_every_n_steps`
    optimizer steps from `update_starting_at_step` on, and after every epoch from `update_starting_at_epoch` on
    when that is given."""

    def __init__(self, device: torch.device | str | int | None = None, use_buffers: bool = True, decay: float = 0.999,
                 update_every_n_steps: int = 1, update_starting_at_step: int | None = None,
                 update_starting_at_epoch: int | None = None, **kwargs: Any) -> None:
        super().__init__(device=device, use_buffers=use_buffers, **kwargs, avg_fn=get_ema_avg_fn(decay=decay))
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is not None:
            started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
            if started and self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0:
                return True
        return (epoch_idx is not None and self.update_starting_at_epoch is not None
                and epoch_idx >= self.update_starting_at_epoch)


@contextlib.contextmanager
def _trainer_detached(module: Any) -> Iterator[None]:
    trainer = getattr(module, "_trainer", None)
    object.__setattr__(module, "_trainer", None)
    try:
        yield
    finally:
        object.__setattr__(module, "_trainer", trainer)
