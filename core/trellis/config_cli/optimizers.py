"""Types for optimizers and schedulers given in a config (`--optimizer=Adam --lr_scheduler=StepLR`).

Light on purpose (torch only): model code imports `OptimizerCallable` for its __init__ annotations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Union

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ReduceLROnPlateau that also names the metric it follows, so a config can choose both."""

    def __init__(self, optimizer: Optimizer, monitor: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor


LRSchedulerTypeTuple = (LRScheduler, ReduceLROnPlateau)
LRSchedulerTypeUnion = Union[LRScheduler, ReduceLROnPlateau]
LRSchedulerType = Union[type[LRScheduler], type[ReduceLROnPlateau]]

#: A module's __init__ may take `optimizer: OptimizerCallable = torch.optim.Adam`; the CLI fills in a partial.
OptimizerCallable = Callable[[Iterable], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], Union[LRScheduler, ReduceLROnPlateau]]
#: What TrellisCLI(args=...) accepts: command-line strings, or a config as a dict or jsonargparse Namespace.
ArgsType = Union[list[str], dict[str, Any], Any, None]
