"""BaseFinetuning and BackboneFinetuning: freeze parts of a model before training and unfreeze them later into
new param groups of the live optimizer."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

import torch
from torch.nn import Module, ModuleDict
from torch.nn.modules.batchnorm import _BatchNorm

from trellis.callbacks.base import Callback
from trellis.callbacks.messages import info
from trellis.errors import ConfigurationError
from trellis.utilities.rank_zero import rank_zero_warn

Modules = Module | Iterable[Module | Iterable]


def multiplicative(epoch: int) -> float:
    """BackboneFinetuning's default schedule: the backbone's learning rate doubles every epoch."""
    return 2.0


class BaseFinetuning(Callback):
    """Override `freeze_before_training(pl_module)` (called in setup, before configure_optimizers: freeze there)
    and `finetune_function(pl_module, epoch, optimizer)` (called at each epoch start for each optimizer: call
    `unfreeze_and_add_param_group` there). The param groups added are saved in checkpoints and restored on
    resume, so the optimizer's state loads into the same groups."""

    def __init__(self) -> None:
        self._internal_optimizer_metadata: dict[int, list[dict[str, Any]]] = {}
        self._restarting = False

    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restarting = True
        self._internal_optimizer_metadata = state_dict.get("internal_optimizer_metadata", state_dict)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.freeze_before_training(pl_module)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """A resumed fit gets back the param groups the callback had added (by parameter name), with their
        parameters trainable again (freeze_before_training froze them in setup)."""
        if self._restarting:
            if self._internal_optimizer_metadata:
                parameters = dict(pl_module.named_parameters())
                for index, optimizer in enumerate(trainer.optimizers):
                    if index in self._internal_optimizer_metadata:
                        configured = len(optimizer.param_groups)
                        optimizer.param_groups = self._apply_mapping_to_param_groups(
                            self._internal_optimizer_metadata[index], parameters)
                        for group in optimizer.param_groups[configured:]:
                            self._unfreeze_restored(pl_module, group["params"])
            self._restarting = False

    @staticmethod
    def _unfreeze_restored(pl_module: Any, params: list[torch.nn.Parameter]) -> None:
        """Lightning leaves these frozen, so a resumed fit never trains what was unfrozen before the checkpoint."""
        restored = {id(parameter) for parameter in params}
        for module in pl_module.modules():
            own = list(module.parameters(recurse=False))
            if own and any(id(parameter) in restored for parameter in own):
                if isinstance(module, _BatchNorm):
                    module.track_running_stats = True
                for parameter in own:
                    if id(parameter) in restored:
                        parameter.requires_grad = True

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        for index, optimizer in enumerate(trainer.optimizers):
            groups_before = len(optimizer.param_groups)
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._store(pl_module, index, groups_before, optimizer.param_groups)

    def finetune_function(self, pl_module: Any, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Override: unfreeze what should train from `epoch` on."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement finetune_function(pl_module, epoch, optimizer)")

    def freeze_before_training(self, pl_module: Any) -> None:
        """Override: freeze what should not train at first."""
        raise NotImplementedError(f"{type(self).__name__} must implement freeze_before_training(pl_module)")

    # -- what subclasses use ----------------------------------------------------------------------
    @staticmethod
    def flatten_modules(modules: Modules) -> list[Module]:
        """The leaf modules of `modules` (a module, or nested iterables of modules), and the parents that hold
        parameters themselves."""
        if isinstance(modules, ModuleDict):
            modules = modules.values()
        if isinstance(modules, Iterable):
            found: list[Module] = []
            for item in modules:
                found.extend(BaseFinetuning.flatten_modules(item))
            candidates: Iterable[Module] = found
        else:
            candidates = modules.modules()
        return [module for module in candidates if not list(module.children()) or module._parameters]

    @staticmethod
    def filter_params(modules: Modules, train_bn: bool = True, requires_grad: bool = True) -> Generator:
        """The parameters of `modules` whose requires_grad is `requires_grad` (BatchNorm's left out unless
        `train_bn`)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            for parameter in module.parameters(recurse=False):
                if parameter.requires_grad == requires_grad:
                    yield parameter

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        """Unfreeze the parameters of `modules` (BatchNorm tracks running statistics again)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad = True

    @staticmethod
    def freeze_module(module: Module) -> None:
        """Freeze one module's own parameters (BatchNorm stops tracking running statistics)."""
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Freeze `modules`; with `train_bn`, their BatchNorm layers stay trainable."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(optimizer: torch.optim.Optimizer, params: Iterable) -> list:
        """The parameters of `params` that are not in the optimizer yet (with a warning for those that are).

        A parameter counts as present when it is the same tensor (Lightning compares values, so it also skips a
        parameter that merely equals one in the optimizer, such as a fresh LayerNorm's ones)."""
        held = {id(existing) for group in optimizer.param_groups for existing in group["params"]}
        kept: list[Any] = []
        skipped: list[Any] = []
        for parameter in params:
            (skipped if id(parameter) in held else kept).append(parameter)
        if skipped:
            rank_zero_warn(
                "The provided params to be frozen already exist within another group of this optimizer. Those "
                "parameters will be skipped.\nHINT: Did you init your optimizer in `configure_optimizer` as such:\n "
                f"{type(optimizer)}(filter(lambda p: p.requires_grad, self.parameters()), ...) "
            )
        return kept

    @staticmethod
    def unfreeze_and_add_param_group(modules: Modules, optimizer: torch.optim.Optimizer, lr: float | None = None,
                                     initial_denom_lr: float = 10.0, train_bn: bool = True) -> None:
        """Unfreeze `modules` and add their parameters to `optimizer` as a new param group, at `lr` (default: the
        first group's rate divided by `initial_denom_lr`)."""
        BaseFinetuning.make_trainable(modules)
        group_lr = optimizer.param_groups[0]["lr"] if lr is None else float(lr)
        denominator = initial_denom_lr if lr is None else 1.0
        params = BaseFinetuning.filter_on_optimizer(
            optimizer, BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True))
        if params:
            optimizer.add_param_group({"params": params, "lr": group_lr / denominator})

    # -- the groups in checkpoints ----------------------------------------------------------------
    @staticmethod
    def _apply_mapping_to_param_groups(param_groups: list[dict[str, Any]], mapping: dict) -> list[dict[str, Any]]:
        return [{**{key: value for key, value in group.items() if key != "params"},
                 "params": [mapping[parameter] for parameter in group["params"]]} for group in param_groups]

    def _store(self, pl_module: Any, index: int, groups_before: int, groups: list[dict[str, Any]]) -> None:
        names = {parameter: name for name, parameter in pl_module.named_parameters()}
        if index not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[index] = self._apply_mapping_to_param_groups(groups, names)
        elif groups_before != len(groups):
            self._internal_optimizer_metadata[index].extend(
                self._apply_mapping_to_param_groups(groups[groups_before:], names))


class BackboneFinetuning(BaseFinetuning):
    """Trains `pl_module.backbone` from `unfreeze_backbone_at_epoch` on, first at the optimizer's rate times
    `backbone_initial_ratio_lr` (or `backbone_initial_lr`), then at `lambda_func(epoch + 1)` times the previous
    rate each epoch, capped at the optimizer's rate when `should_align`."""

    def __init__(self, unfreeze_backbone_at_epoch: int = 10, lambda_func: Callable = multiplicative,
                 backbone_initial_ratio_lr: float = 10e-2, backbone_initial_lr: float | None = None,
                 should_align: bool = True, initial_denom_lr: float = 10.0, train_bn: bool = True,
                 verbose: bool = False, rounding: int = 12) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata,
                "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_backbone_lr = state_dict["previous_backbone_lr"]
        super().load_state_dict(state_dict)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not isinstance(getattr(pl_module, "backbone", None), Module):
            raise ConfigurationError("The LightningModule should have a nn.Module `backbone` attribute")
        super().on_fit_start(trainer, pl_module)

    def freeze_before_training(self, pl_module: Any) -> None:
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module: Any, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if epoch == self.unfreeze_backbone_at_epoch:
            current_lr = optimizer.param_groups[0]["lr"]
            initial = (self.backbone_initial_lr if self.backbone_initial_lr is not None
                       else current_lr * self.backbone_initial_ratio_lr)
            self.previous_backbone_lr = initial
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, initial, train_bn=self.train_bn,
                                              initial_denom_lr=self.initial_denom_lr)
            if self.verbose:
                info(f"Current lr: {round(current_lr, self.rounding)}, "
                     f"Backbone lr: {round(initial, self.rounding)}")
        elif epoch > self.unfreeze_backbone_at_epoch:
            current_lr = optimizer.param_groups[0]["lr"]
            assert self.previous_backbone_lr is not None
            next_lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            next_lr = current_lr if self.should_align and next_lr > current_lr else next_lr
            optimizer.param_groups[-1]["lr"] = next_lr
            self.previous_backbone_lr = next_lr
            if self.verbose:
                info(f"Current lr: {round(current_lr, self.rounding)}, Backbone lr: {round(next_lr, self.rounding)}")
