"""Autocast around forward and the step methods; parameters and optimizer state stay float32."""

from __future__ import annotations

import contextlib

import torch

from trellis.errors import ConfigurationError
from trellis.plugin import Precision


class AutocastPrecision(Precision):
    """torch.autocast in `compute_dtype` on the accelerator's device type; nothing else changes."""

    def __init__(self) -> None:
        self._checked_device_types: set[str] = set()

    def forward_context(self, device_type: str) -> contextlib.AbstractContextManager:
        if device_type not in self._checked_device_types:
            self._check_device_type(device_type)
            self._checked_device_types.add(device_type)
        return torch.autocast(device_type, dtype=self.compute_dtype)

    def _check_device_type(self, device_type: str) -> None:
        if not torch.amp.is_autocast_available(device_type):
            raise ConfigurationError(
                f"precision={self.name!r} autocasts on the accelerator's device type {device_type!r}, which torch "
                f"cannot autocast: use precision='32-true' or a true mode such as 'bf16-true' on this accelerator"
            )
        if device_type == "cuda" and self.compute_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ConfigurationError(
                f"precision={self.name!r} needs bfloat16 support, which this GPU lacks: use precision='16-mixed'"
            )


class BFloat16Mixed(AutocastPrecision):
    """"bf16-mixed": bfloat16 has float32's range, so gradients need no loss scaling."""

    name = "bf16-mixed"
    compute_dtype = torch.bfloat16
