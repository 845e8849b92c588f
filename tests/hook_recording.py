"""A module and a callback that record every hook call of a run, for tests/test_hook_order.py."""

from __future__ import annotations

import torch

import trellis
from support import TinyRegressor
from trellis.hookspecs import HOOK_NAMES

CALLBACK_ONLY = {"on_init_start", "on_init_end", "on_exception", "on_sanity_check_start", "on_sanity_check_end"}


def recording_pair(calls: list[str]) -> tuple[trellis.Module, trellis.Callback]:
    """A TinyRegressor subclass and a Callback whose every hook appends "Module.hook"/"Callback.hook"."""

    def module_hook(name: str):
        def hook(self):
            calls.append(f"Module.{name}")
        hook.__name__ = name
        return hook

    def callback_hook(name: str):
        def hook(self):
            calls.append(f"Callback.{name}")
        hook.__name__ = name
        return hook

    module_hooks = {name: module_hook(name) for name in HOOK_NAMES - CALLBACK_ONLY}
    module_hooks["prepare_data"] = lambda self: calls.append("Module.prepare_data")
    module_hooks["configure_model"] = lambda self: calls.append("Module.configure_model")
    module_hooks["configure_optimizers"] = lambda self: (calls.append("Module.configure_optimizers"),
                                                         torch.optim.SGD(self.parameters(), lr=0.01))[1]
    module_hooks["train_dataloader"] = lambda self: (calls.append("Module.train_dataloader"),
                                                     __import__("support").loader(64))[1]
    module_hooks["val_dataloader"] = lambda self: (calls.append("Module.val_dataloader"),
                                                   __import__("support").loader(32))[1]
    module_class = type("RecordingModule", (TinyRegressor,), module_hooks)
    callback_class = type("RecordingCallback", (trellis.Callback,), {name: callback_hook(name) for name in HOOK_NAMES})
    return module_class(), callback_class()
