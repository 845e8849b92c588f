"""`module.device` and `module.dtype` that follow `.to()`, `.cuda()`, `.half()`, ... as in Lightning."""

from __future__ import annotations

from typing import Any

import torch


class DeviceDtypeModuleMixin(torch.nn.Module):
    """Remembers where the module was moved and into which dtype, for itself and every such submodule.

    Known without looking at parameters, so a module without any has a device too; it starts at torch's
    default device and dtype (what `trainer.init_module()` sets).
    """

    __jit_unused_properties__: list[str] = ["device", "dtype"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dtype: torch.dtype = torch.get_default_dtype()
        self._device: torch.device = torch.get_default_device()

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @dtype.setter
    def dtype(self, value: torch.dtype) -> None:
        raise RuntimeError(f"module.dtype cannot be set; convert the module with module.to({value})")

    @property
    def device(self) -> torch.device:
        device = self._device
        if device.type == "cuda" and device.index is None:  # always with its index, as torch.cuda numbers them
            return torch.device("cuda", torch.cuda.current_device())
        return device

    def to(self, *args: Any, **kwargs: Any) -> DeviceDtypeModuleMixin:
        device, dtype = torch._C._nn._parse_to(*args, **kwargs)[:2]
        _update_properties(self, device=device, dtype=dtype)
        return super().to(*args, **kwargs)

    def cuda(self, device: torch.device | int | None = None) -> DeviceDtypeModuleMixin:
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif isinstance(device, int):
            device = torch.device("cuda", device)
        _update_properties(self, device=device)
        return super().cuda(device=device)

    def cpu(self) -> DeviceDtypeModuleMixin:
        _update_properties(self, device=torch.device("cpu"))
        return super().cpu()

    def type(self, dst_type: torch.dtype | str) -> DeviceDtypeModuleMixin:
        _update_properties(self, dtype=dst_type)
        return super().type(dst_type=dst_type)

    def float(self) -> DeviceDtypeModuleMixin:
        _update_properties(self, dtype=torch.float)
        return super().float()

    def double(self) -> DeviceDtypeModuleMixin:
        _update_properties(self, dtype=torch.double)
        return super().double()

    def half(self) -> DeviceDtypeModuleMixin:
        _update_properties(self, dtype=torch.half)
        return super().half()

    def bfloat16(self) -> DeviceDtypeModuleMixin:
        _update_properties(self, dtype=torch.bfloat16)
        return super().bfloat16()


def _update_properties(root: torch.nn.Module, device: torch.device | None = None, dtype: Any = None) -> None:
    """Record the move on `root` and its submodules (only recorded: a model spread over devices stays so)."""
    for module in root.modules():
        if not isinstance(module, DeviceDtypeModuleMixin):
            continue
        if device is not None:
            module._device = torch.device(device)
        if dtype is not None:
            module._dtype = dtype
