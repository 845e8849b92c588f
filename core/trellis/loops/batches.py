"""Bringing batches onto the device, and switching the module's train/eval mode, as the loops need them.

Both go through a Module's or DataModule's overrides only where those exist; otherwise the loops call the
strategy directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from trellis.hookspecs import is_overridden
from trellis.roles import Precision, Strategy

if TYPE_CHECKING:
    from trellis.run import Run


def batch_transfer(run: Run, dataloader_idx: int = 0) -> Callable[[Any], Any]:
    """What brings one batch of a loader onto this process's device: the precision's input conversion, then
    on_before_batch_transfer, transfer_batch_to_device and on_after_batch_transfer (Lightning's order), each
    the DataModule's or the Module's where one overrides it, else the strategy's move."""
    strategy = run.strategy
    device = strategy.root_device
    precision = strategy.precision
    convert = None if type(precision).convert_input is Precision.convert_input else precision.convert_input
    before = _override(run, "on_before_batch_transfer")
    transfer = _override(run, "transfer_batch_to_device")
    after = _override(run, "on_after_batch_transfer")
    # a strategy's own batch_to_device(batch) finds its device itself; the role's takes it, found once here
    to_device = (functools.partial(strategy.batch_to_device, device=device)
                 if type(strategy).batch_to_device is Strategy.batch_to_device else strategy.batch_to_device)
    if convert is None and before is None and transfer is None and after is None:
        return to_device

    def move(batch: Any) -> Any:
        if convert is not None:
            batch = convert(batch)
        if before is not None:
            batch = before(batch, dataloader_idx)
        batch = transfer(batch, device, dataloader_idx) if transfer is not None else to_device(batch)
        return after(batch, dataloader_idx) if after is not None else batch

    return move


def _override(run: Run, name: str) -> Callable[..., Any] | None:
    """The DataModule's implementation of a data hook, else the Module's, when either overrides it."""
    for source in (run.datamodule, run.module):
        if source is not None and is_overridden(source, name):
            implementation: Callable[..., Any] = getattr(source, name)
            return implementation
    return None


class ModuleMode:
    """The train/eval mode of every submodule, captured to be restored after an evaluation.

    Modes are switched with torch.nn.Module.train(module, mode), never `module.train()`: a module may have an
    attribute named `train` (a dataset split, say).
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self._modes = {name: submodule.training for name, submodule in module.named_modules()}

    @staticmethod
    def set(module: torch.nn.Module, training: bool) -> None:
        torch.nn.Module.train(module, training)

    def restore(self, module: torch.nn.Module) -> None:
        for name, submodule in module.named_modules():
            if name in self._modes:
                submodule.training = self._modes[name]
