"""The data a fit runs on: the training loader and the validation loaders, split across processes, with
their batch limits, requested at Lightning's moments and reloaded when asked to.

Each loader is requested when the loop first needs it, never earlier: a module that builds its data from
the global RNG inside `*_dataloader()` gets the same data as under Lightning.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from trellis.data import batch_limit, in_order, request_loaders, require_batches
from trellis.distributed_data import distribute
from trellis.errors import ConfigurationError
from trellis.roles import Strategy
from trellis.settings import TrainerSettings
from trellis.stages import TRAIN, VALIDATION, LoopStage

if TYPE_CHECKING:
    from trellis.datamodule import DataModule
    from trellis.module import Module


def prepare_loader(loader: Iterable[Any], strategy: Strategy, settings: TrainerSettings) -> Iterable[Any]:
    """Insert a DistributedSampler when the strategy splits data (opt out: use_distributed_sampler=False)."""
    sampler_kwargs = strategy.distributed_sampler_kwargs
    if sampler_kwargs is None or not settings.use_distributed_sampler:
        return loader
    return distribute(loader, sampler_kwargs)


def stage_loaders(stage: LoopStage, given: Any, module: Module, datamodule: DataModule | None, strategy: Strategy,
                  settings: TrainerSettings) -> tuple[list[Iterable[Any]], list[float]]:
    """A loop's loaders (from the call, the DataModule or the Module) and the batches to run of each."""
    loaders = [prepare_loader(loader, strategy, settings)
               for loader in request_loaders(stage.loader_method, given, module, datamodule)]
    return loaders, [batch_limit(loader, settings.limit(stage), stage.limit_flag) for loader in loaders]


class FitData:
    """Training and validation loaders of one fit."""

    def __init__(self, given: dict[str, Any], module: Module, datamodule: DataModule | None, strategy: Strategy,
                 settings: TrainerSettings) -> None:
        self._given, self._module, self._datamodule = given, module, datamodule
        self._strategy, self._settings = strategy, settings
        self.train_loader: Iterable[Any] = ()
        self.num_training_batches: float = 0.0
        self.val_loaders: list[Iterable[Any]] = []
        self.val_batch_limits: list[float] = []
        self.train_requested = self.validation_requested = False
        self._train_epoch = self._validation_epoch = -1
        #: Lightning's enable_validation: a validation_step and a non-zero limit_val_batches.
        self.validation_enabled = settings.limit_val_batches != 0 and callable(
            getattr(module, VALIDATION.step_method, None))

    def request_train(self, epoch: int) -> None:
        """Request the training loader (again, when reloading)."""
        settings = self._settings
        train = request_loaders(TRAIN.loader_method, self._given["train"], self._module, self._datamodule)
        if not train:
            raise ConfigurationError(
                "fit found no training dataloader: pass train_dataloaders=..., a datamodule, or define "
                "train_dataloader() on the module"
            )
        if len(train) > 1:
            raise ConfigurationError("fit takes one training dataloader; combine several into one dataset or loader")
        loader = in_order(train[0]) if settings.overfit_batches else train[0]
        self.train_loader = prepare_loader(loader, self._strategy, settings)
        self.num_training_batches = batch_limit(self.train_loader, settings.limit_train_batches, TRAIN.limit_flag)
        require_batches(self.num_training_batches, "training")
        self._train_epoch, self.train_requested = epoch, True

    def request_validation(self, epoch: int) -> None:
        """Request the validation loaders (again, when reloading); none when validation is off."""
        self.validation_requested, self._validation_epoch = True, epoch
        if not self.validation_enabled:
            return
        self.val_loaders, self.val_batch_limits = stage_loaders(
            VALIDATION, self._given.get("validation"), self._module, self._datamodule, self._strategy, self._settings)
        if not any(self.val_batch_limits):
            self.val_loaders, self.val_batch_limits = [], []

    def train_reload_due(self, epoch: int) -> bool:
        every = self._settings.reload_dataloaders_every_n_epochs
        return bool(every) and epoch - self._train_epoch >= every

    def validation_reload_due(self, epoch: int) -> bool:
        every = self._settings.reload_dataloaders_every_n_epochs
        return not self.validation_requested or bool(every) and epoch - self._validation_epoch >= every

    def set_epoch(self, epoch: int) -> None:
        """Tell samplers which epoch starts (DistributedSampler reshuffles by epoch)."""
        loader = self.train_loader
        batch_sampler = getattr(loader, "batch_sampler", None)
        for candidate in (loader, getattr(loader, "sampler", None), batch_sampler,
                          getattr(batch_sampler, "sampler", None)):
            set_epoch = getattr(candidate, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
