"""trellis.DataModule: the data side of an experiment, reusable across modules."""

from __future__ import annotations

from typing import Any

from trellis.hookspecs import default_hook
from trellis.utils.hparams import HyperparametersMixin


class DataModule(HyperparametersMixin):
    """Override prepare_data, setup(stage) and the *_dataloader methods you need."""

    def __init__(self) -> None:
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

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""
