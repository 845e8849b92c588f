"""The lifecycle hooks the loops call, written once: pluggy hook specifications that are also the no-op
defaults `trellis.Callback` inherits.

Implementations take only the arguments they name (pluggy passes by name), so a Lightning callback
`on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx)` and a Module hook
`on_train_batch_end(self, outputs, batch, batch_idx)` both implement the same hook. A default that a
subclass does not override is never registered, so it costs nothing per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import pluggy

if TYPE_CHECKING:
    from trellis.module import Module
    from trellis.trainer import Trainer

_hookspec = pluggy.HookspecMarker("trellis")


def default_hook(function: Any) -> Any:
    """Mark a base-class no-op hook: it is not registered, so it costs nothing per call."""
    function._trellis_default_hook = True
    return function


def is_overridden(obj: Any, name: str) -> bool:
    """Whether `obj`'s class defines `name` itself, rather than inheriting a marked no-op default."""
    defined = getattr(type(obj), name, None)
    return defined is not None and not getattr(defined, "_trellis_default_hook", False)


def hookspec(function: Any) -> Any:
    """A hook specification that is also the no-op default of every Callback."""
    return default_hook(_hookspec(function))


class LifecycleHooks:
    """One method per hook, in the order a fit calls them (see docs/hooks.md)."""

    @hookspec
    def on_init_start(self, trainer: Trainer) -> None: ...

    @hookspec
    def on_init_end(self, trainer: Trainer) -> None: ...

    @hookspec
    def setup(self, trainer: Trainer, pl_module: Module, stage: str) -> None: ...

    @hookspec
    def on_fit_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_sanity_check_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_sanity_check_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_train_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_train_epoch_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_train_batch_start(self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int) -> Any:
        """Return -1 to end the epoch here."""

    @hookspec
    def on_before_backward(self, trainer: Trainer, pl_module: Module, loss: Any) -> None: ...

    @hookspec
    def on_after_backward(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: Module, optimizer: Any, optimizer_idx: int
    ) -> None: ...

    @hookspec
    def on_before_zero_grad(self, trainer: Trainer, pl_module: Module, optimizer: Any) -> None: ...

    @hookspec
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None: ...

    @hookspec
    def on_train_epoch_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_train_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_fit_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_validation_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None: ...

    @hookspec
    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None: ...

    @hookspec
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_validation_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_test_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_test_epoch_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_test_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None: ...

    @hookspec
    def on_test_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None: ...

    @hookspec
    def on_test_epoch_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_test_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_predict_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: Module, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None: ...

    @hookspec
    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None: ...

    @hookspec
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_predict_end(self, trainer: Trainer, pl_module: Module) -> None: ...

    @hookspec
    def on_save_checkpoint(self, trainer: Trainer, pl_module: Module, checkpoint: dict[str, Any]) -> None: ...

    @hookspec
    def on_load_checkpoint(self, trainer: Trainer, pl_module: Module, checkpoint: dict[str, Any]) -> None: ...

    @hookspec
    def on_exception(self, trainer: Trainer, pl_module: Module, exception: BaseException) -> None: ...

    @hookspec
    def teardown(self, trainer: Trainer, pl_module: Module, stage: str) -> None: ...


HOOK_NAMES: frozenset[str] = frozenset(
    name for name, value in vars(LifecycleHooks).items() if callable(value) and not name.startswith("_")
)

#: the hook names as a type, so that a misspelled name in the kernel's own calls fails type checking.
HookName = Literal[
    "on_init_start",
    "on_init_end",
    "setup",
    "on_fit_start",
    "on_sanity_check_start",
    "on_sanity_check_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_train_end",
    "on_fit_end",
    "on_validation_start",
    "on_validation_epoch_start",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_validation_epoch_end",
    "on_validation_end",
    "on_test_start",
    "on_test_epoch_start",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_test_epoch_end",
    "on_test_end",
    "on_predict_start",
    "on_predict_epoch_start",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_predict_epoch_end",
    "on_predict_end",
    "on_save_checkpoint",
    "on_load_checkpoint",
    "on_exception",
    "teardown",
]

#: hooks only callbacks and hook plugins receive; every other hook also has a Module form (ModuleHooks).
CALLBACK_ONLY_HOOKS: frozenset[str] = frozenset(
    {"on_init_start", "on_init_end", "on_sanity_check_start", "on_sanity_check_end", "on_exception"}
)
