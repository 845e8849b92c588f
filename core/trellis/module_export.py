"""Exporting a Module: TorchScript (script or trace) and ONNX, as Lightning's to_torchscript and to_onnx."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from typing import IO, Any

import torch

from trellis.errors import ConfigurationError
from trellis.hookspecs import is_overridden


def to_torchscript(module: Any, file_path: str | os.PathLike | None, method: str | None, example_inputs: Any,
                   **kwargs: Any) -> Any:
    """The module scripted or traced in eval mode (its mode is restored afterwards), saved when asked."""
    training = module.training
    try:
        if method == "script":
            with _scripting(), torch.no_grad():
                exported = torch.jit.script(torch.nn.Module.train(module, False), **kwargs)
        elif method == "trace":
            if example_inputs is None:
                example_inputs = module.example_input_array
            if example_inputs is None:
                raise ConfigurationError(
                    "to_torchscript(method='trace') needs inputs to trace: pass example_inputs=..., or set "
                    "self.example_input_array in __init__"
                )
            if kwargs.get("check_inputs") is not None:
                kwargs["check_inputs"] = prepared_input(module, kwargs["check_inputs"])
            with _scripting(), torch.no_grad():
                exported = torch.jit.trace(torch.nn.Module.train(module, False),
                                           example_inputs=prepared_input(module, example_inputs), **kwargs)
        else:
            raise ConfigurationError(f"to_torchscript(method={method!r}): use method='script' or method='trace'")
    finally:
        torch.nn.Module.train(module, training)
    if file_path is not None:
        torch.jit.save(exported, os.fspath(file_path))
    return exported


def to_onnx(module: Any, file_path: str | os.PathLike | IO[bytes] | None, input_sample: Any, **kwargs: Any) -> Any:
    """torch.onnx.export of the module on `input_sample` (else example_input_array), in its current mode."""
    if importlib.util.find_spec("onnx") is None:
        raise ModuleNotFoundError(f"{type(module).__name__}.to_onnx() needs the onnx package: pip install onnx")
    if kwargs.get("dynamo") and importlib.util.find_spec("onnxscript") is None:
        raise ModuleNotFoundError(
            f"{type(module).__name__}.to_onnx(dynamo=True) needs the onnxscript package: pip install onnxscript")
    if input_sample is None:
        input_sample = module.example_input_array
    if input_sample is None:
        raise ConfigurationError(
            "to_onnx needs an input to export with: pass input_sample=..., or set self.example_input_array in __init__"
        )
    training = module.training
    if isinstance(file_path, os.PathLike):
        file_path = os.fspath(file_path)
    try:
        with torch.no_grad():
            # torch.onnx.export also writes to a binary file object, which its annotation leaves out
            return torch.onnx.export(module, prepared_input(module, input_sample), file_path,  # type: ignore[arg-type]
                                     **kwargs)
    finally:
        torch.nn.Module.train(module, training)


def prepared_input(module: Any, sample: Any) -> Any:
    """An input made ready as a batch is: on_before_batch_transfer, transfer_batch_to_device (to the module's
    device) and on_after_batch_transfer, each the attached DataModule's where it overrides it."""
    trainer = module._trainer
    datamodule = trainer.datamodule if trainer is not None else None

    def hook(name: str) -> Any:
        if datamodule is not None and is_overridden(datamodule, name):
            return getattr(datamodule, name)
        return getattr(module, name)

    sample = hook("on_before_batch_transfer")(sample, 0)
    sample = hook("transfer_batch_to_device")(sample, module.device, 0)
    return hook("on_after_batch_transfer")(sample, 0)


@contextlib.contextmanager
def _scripting() -> Iterator[None]:
    """While TorchScript compiles: `module.trainer` reads as None instead of raising on a detached module."""
    from trellis.module import Module

    Module._jit_is_scripting = True
    try:
        yield
    finally:
        Module._jit_is_scripting = False
