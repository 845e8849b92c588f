"""The CPU accelerator: every process computes on the host, collectives go over gloo."""

from __future__ import annotations

import os
from typing import Any

import torch

from trellis.errors import ConfigurationError
from trellis.plugin import Accelerator, DevicesArg

TRELLIS_PLUGIN_API = 1


class CPUAccelerator(Accelerator):
    """`devices=N` on CPU means N processes (for DDP); one process is the default."""

    name = "cpu"
    device_type = "cpu"
    process_group_backend = "gloo"
    auto_priority = 0

    @classmethod
    def is_available(cls) -> bool:
        return True

    @classmethod
    def device_count(cls) -> int:
        return os.cpu_count() or 1

    @classmethod
    def parse_devices(cls, devices: DevicesArg) -> list[int]:
        if devices == "auto":
            return [0]
        if isinstance(devices, (list, tuple)):
            raise ConfigurationError(
                f"devices={list(devices)} lists device indices, which CPUs do not have: pass a process count, "
                "e.g. devices=2"
            )
        return super().parse_devices(devices)

    def device(self, index: int) -> torch.device:
        return torch.device("cpu")

    def batch_to_device(self, batch: Any, device: torch.device) -> Any:
        """Batches from a CPU dataloader are already on the host."""
        return batch
