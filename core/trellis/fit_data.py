"""The data a fit runs on: the training loader and the validation loaders, split across processes,
with their batch limits, reloaded when asked to."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trellis.data import batch_limit, in_order, request_loaders, require_batches
from trellis.distributed_data import distribute
from trellis.errors import ConfigurationError
from trellis.roles import Strategy
from trellis.settings import TrainerSettings
from trellis.stages import TRAIN, VALIDATION, LoopStage


def prepare_loader(loader: Iterable, strategy: Strategy, settings: TrainerSettings) -> Iterable:
    """Insert a DistributedSampler when the strategy splits data (opt out: use_distributed_sampler=False)."""
    sampler_kwargs = strategy.distributed_sampler_kwargs
    if sampler_kwargs is None or not settings.use_distributed_sampler:
        return loader
    return distribute(loader, sampler_kwargs)


def stage_loaders(stage: LoopStage, given: Any, module: Any, datamodule: Any, strategy: Strategy,
                  settings: TrainerSettings) -> tuple[list[Iterable], list[float]]:
    """A loop's loaders (from the call, the DataModule or the Module) and the batches to run of each."""
    loaders = [prepare_loader(loader, strategy, settings)
               for loader in request_loaders(stage.loader_method, given, module, datamodule)]
    return loaders, [batch_limit(loader, settings.limit(stage), stage.limit_flag) for loader in loaders]


class FitData:
    """Training and validation loaders of one fit."""

    def __init__(self, given: dict[str, Any], module: Any, datamodule: Any, strategy: Strategy,
                 settings: TrainerSettings) -> None:
        self._given, self._module, self._datamodule = given, module, datamodule
        self._strategy, self._settings = strategy, settings
        self.train_loader: Iterable = ()
        self.num_training_batches: float = 0.0
        self.val_loaders: list[Iterable] = []
        self.val_batch_limits: list[float] = []
        self.connect()

    def connect(self) -> None:
        """Request the loaders (again, when reloading)."""
        module, datamodule, settings = self._module, self._datamodule, self._settings
        train = request_loaders(TRAIN.loader_method, self._given["train"], module, datamodule)
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
        if callable(getattr(module, VALIDATION.step_method, None)):
            self.val_loaders, self.val_batch_limits = stage_loaders(
                VALIDATION, self._given["validation"], module, datamodule, self._strategy, settings)
        if self.val_loaders and not any(self.val_batch_limits):
            self.val_loaders, self.val_batch_limits = [], []

    def prepare_epoch(self, epoch: int, resuming_inside: bool) -> None:
        """Reload the loaders when asked to; tell samplers which epoch starts (DistributedSampler reshuffles)."""
        every = self._settings.reload_dataloaders_every_n_epochs
        if every and epoch and epoch % every == 0 and not resuming_inside:
            self.connect()
        loader = self.train_loader
        batch_sampler = getattr(loader, "batch_sampler", None)
        for candidate in (loader, getattr(loader, "sampler", None), batch_sampler,
                          getattr(batch_sampler, "sampler", None)):
            set_epoch = getattr(candidate, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
