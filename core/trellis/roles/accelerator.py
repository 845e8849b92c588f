"""The accelerator role: one family of devices (cpu, cuda, xla, a third party's npu...)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch

from trellis.errors import ConfigurationError
from trellis.utils.collections import move_to_device

DevicesArg = int | str | Sequence[int]


class Accelerator:
    """What the kernel asks of a device family.

    Class attributes are the plugin's descriptor: the kernel reads them without creating devices.
    Plugin modules must stay cheap to import: import the backend library (torch_xla, a vendor SDK)
    inside methods, never at module level, so that `accelerator="auto"` can ask `is_available()`.
    """

    name: ClassVar[str] = ""
    #: torch device type of the devices, also used as the autocast device type ("cpu", "cuda", "xla").
    device_type: ClassVar[str] = ""
    #: process-group backend a distributed strategy should use over these devices (None: cannot).
    process_group_backend: ClassVar[str | None] = None
    #: order under accelerator="auto": the available accelerator with the highest value is chosen.
    auto_priority: ClassVar[int] = 0
    #: strategy chosen by strategy="auto" when more than one device is asked for.
    default_distributed_strategy: ClassVar[str] = "ddp"
    #: strategy chosen by strategy="auto" for one device (XLA's keeps checkpoints off the device).
    default_single_device_strategy: ClassVar[str] = "single_device"
    #: the device runs recorded graphs asynchronously (XLA): reading a tensor on the host stalls it, so the
    #: fit loop checks the loss for NaN/inf at epoch ends instead of after every step.
    defers_execution: ClassVar[bool] = False
    #: evaluation may run under torch.inference_mode (XLA's tensors do not support it: no_grad is used instead).
    supports_inference_mode: ClassVar[bool] = True

    @classmethod
    def is_available(cls) -> bool:
        """Whether this machine can run the accelerator now."""
        raise NotImplementedError

    @classmethod
    def unavailable_reason(cls) -> str:
        """When unavailable: what was found and what to install or set."""
        return f"accelerator {cls.name!r} is not available on this machine"

    @classmethod
    def device_count(cls) -> int:
        """How many devices this process can see."""
        raise NotImplementedError

    @classmethod
    def parse_devices(cls, devices: DevicesArg) -> list[int]:
        """Turn the Trainer's `devices=` into device indices (count, list, "0,2", -1 or "auto")."""
        available = cls.device_count()
        if devices in ("auto", -1, "-1"):
            return list(range(available))
        if isinstance(devices, str):
            text = devices.strip()
            indices = [int(part) for part in text.split(",") if part.strip()] if "," in text else None
            devices = indices if indices is not None else int(text)
        if isinstance(devices, int):
            if devices < 1:
                raise ConfigurationError(
                    f"devices={devices} is not a device count: pass a positive number, a list of indices, -1 or 'auto'"
                )
            if devices > available:
                raise ConfigurationError(
                    f"devices={devices} asks for more {cls.name} devices than the {available} this machine has: "
                    f"pass devices<={available}"
                )
            return list(range(devices))
        indices = list(devices)
        missing = [index for index in indices if not 0 <= index < available]
        if missing:
            raise ConfigurationError(
                f"{cls.name} device indices {missing} do not exist: this machine has indices 0..{available - 1}"
            )
        return indices

    def device(self, index: int) -> torch.device:
        """The torch device for a device index."""
        return torch.device(self.device_type, index)

    def setup_device(self, device: torch.device) -> None:
        """Prepare the process to run on `device` (select it, apply global settings)."""

    def batch_to_device(self, batch: Any, device: torch.device) -> Any:
        """Move a batch (any nesting of tensors) onto the device."""
        return move_to_device(batch, device)

    def wrap_dataloader(self, dataloader: Iterable[Any], device: torch.device) -> Iterable[Any]:
        """A device-specific loader around `dataloader` (XLA's parallel loader); identity by default."""
        return dataloader

    def step_boundary(self) -> None:
        """Called at the end of every step of every loop (XLA cuts and runs its lazy graph here)."""

    def rng_state(self) -> dict[str, Any]:
        """The devices' random number generator states, for checkpoints (exact resume) and for validation that
        must not change training's draws; keys of the plugin's choosing, values checkpoint-safe (tensors, ints)."""
        return {}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        """Restore what rng_state returned (ignore what is missing: a checkpoint may come from another device)."""

    def device_stats(self, device: torch.device) -> dict[str, float]:
        """Device statistics (memory, utilisation) for loggers and monitors."""
        return {}

    def teardown(self) -> None:
        """Release what setup_device took."""
