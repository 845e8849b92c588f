"""trellis.DataModule: the data side of an experiment, reusable across modules."""

from __future__ import annotations

import os
from typing import IO, Any

import torch

from trellis.hookspecs import default_hook
from trellis.module_loading import class_only_method
from trellis.utils.collections import move_to_device
from trellis.utils.hparams import HyperparametersMixin


class DataModule(HyperparametersMixin):
    """Override prepare_data, setup(stage) and the *_dataloader methods you need."""

    #: where checkpoints keep its hyperparameters, the __init__ argument they came as, and their kind.
    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "datamodule_hparams_type"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.trainer: Any = None

    def prepare_data(self) -> None:
        """Download or write data, once per node, before setup."""

    @default_hook
    def setup(self, stage: str) -> None: ...

    @default_hook
    def teardown(self, stage: str) -> None: ...

    @default_hook
    def train_dataloader(self) -> Any: ...

    @default_hook
    def val_dataloader(self) -> Any: ...

    @default_hook
    def test_dataloader(self) -> Any: ...

    @default_hook
    def predict_dataloader(self) -> Any: ...

    @default_hook
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change a batch before it moves to the device (overrides the Module's)."""
        return batch

    @default_hook
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move a batch to the device (overrides the Module's), for batches of custom types."""
        return move_to_device(batch, device)

    @default_hook
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Change a batch on the device, e.g. GPU augmentation (overrides the Module's)."""
        return batch

    def state_dict(self) -> dict[str, Any]:
        """State to keep in checkpoints (under the class's name); restored by load_state_dict."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""

    @class_only_method
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike | IO[bytes],
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> DataModule:
        """Rebuild the DataModule with the hyperparameters a checkpoint saved of it (save_hyperparameters in its
        __init__), kwargs overriding them, and give it the state it had (load_state_dict)."""
        from trellis.module_loading import load_from_checkpoint

        return load_from_checkpoint(cls, checkpoint_path, map_location, hparams_file, None, weights_only, **kwargs)
