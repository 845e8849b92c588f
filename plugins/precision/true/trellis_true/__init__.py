"""True precision modes: parameters, inputs and new tensors all in one dtype, no autocast."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from trellis.plugin import Precision, apply_to_tensors, default_dtype

TRELLIS_PLUGIN_API = 1


class TruePrecision(Precision):
    """The module's parameters and floating inputs in `param_dtype`; optimizer state follows them."""

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(dtype=self.param_dtype)

    def convert_input(self, batch: Any) -> Any:
        dtype = self.param_dtype
        return apply_to_tensors(batch, lambda tensor: tensor.to(dtype) if tensor.is_floating_point() else tensor)

    def forward_context(self, device_type: str) -> contextlib.AbstractContextManager:
        return default_dtype(self.param_dtype)


class Float32(Precision):
    """"32-true": the plain PyTorch loop, nothing converted and nothing in between."""

    name = "32-true"


class Float64(TruePrecision):
    """"64-true": double precision, for numerics that float32 rounds away (gradient checks, ill-conditioned fits)."""

    name = "64-true"
    param_dtype = torch.float64


class Float16(TruePrecision):
    """"16-true": everything in float16, no loss scaling; halves memory, overflows where float32 would not."""

    name = "16-true"
    param_dtype = torch.float16


class BFloat16(TruePrecision):
    """"bf16-true": everything in bfloat16; float32's range with 8 bits of mantissa."""

    name = "bf16-true"
    param_dtype = torch.bfloat16
