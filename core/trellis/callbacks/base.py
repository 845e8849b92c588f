"""trellis.Callback: hooks into the loops, with state that travels in checkpoints."""

from __future__ import annotations

from typing import Any

from trellis.hookspecs import default_hook


class Callback:
    """Override the hooks you need; each receives what it names (trainer, pl_module, batch, ...)."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints; make it unique when several of a type are used."""
        return type(self).__qualname__

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""

    @default_hook
    def on_init_start(self, trainer: Any) -> None: ...

    @default_hook
    def on_init_end(self, trainer: Any) -> None: ...

    @default_hook
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None: ...

    @default_hook
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_train_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> Any: ...

    @default_hook
    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None: ...

    @default_hook
    def on_after_backward(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any, optimizer_idx: int) -> None: ...

    @default_hook
    def on_before_zero_grad(self, trainer: Any, pl_module: Any, optimizer: Any) -> None: ...

    @default_hook
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None: ...

    @default_hook
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_train_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_test_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None: ...

    @default_hook
    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_test_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_predict_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_predict_end(self, trainer: Any, pl_module: Any) -> None: ...

    @default_hook
    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None: ...

    @default_hook
    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None: ...

    @default_hook
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None: ...

    @default_hook
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None: ...
