"""The CUDA accelerator: one process per GPU, collectives over nccl."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from trellis.errors import ConfigurationError
from trellis.plugin import Accelerator, move_to_device
from trellis_cuda import availability

MATMUL_PRECISIONS = ("highest", "high", "medium")
_MIB = 1024.0 * 1024.0


class CUDAAccelerator(Accelerator):
    """GPUs visible to this process; `devices` indices count them after CUDA_VISIBLE_DEVICES.

    Args:
        cudnn_benchmark: set torch.backends.cudnn.benchmark (autotuned convolutions for fixed input
            shapes); None leaves it as it is.
        float32_matmul_precision: torch.set_float32_matmul_precision ("high" and "medium" allow
            TF32/bf16 tensor cores for float32 matmuls); None leaves it as it is.
        pin_memory: turn on pin_memory for torch DataLoaders, so that non-blocking copies overlap compute.
    """

    name = "cuda"
    device_type = "cuda"
    process_group_backend = "nccl"
    auto_priority = 10
    default_distributed_strategy = "ddp"

    def __init__(
        self,
        cudnn_benchmark: bool | None = None,
        float32_matmul_precision: str | None = None,
        pin_memory: bool = True,
    ) -> None:
        if float32_matmul_precision is not None and float32_matmul_precision not in MATMUL_PRECISIONS:
            raise ConfigurationError(
                f"float32_matmul_precision={float32_matmul_precision!r} is unknown: use one of {MATMUL_PRECISIONS}"
            )
        self.cudnn_benchmark = cudnn_benchmark
        self.float32_matmul_precision = float32_matmul_precision
        self.pin_memory = pin_memory
        self._saved_settings: tuple[bool, str] | None = None

    @classmethod
    def is_available(cls) -> bool:
        return torch.cuda.is_available()

    @classmethod
    def unavailable_reason(cls) -> str:
        return availability.unavailable_reason()

    @classmethod
    def device_count(cls) -> int:
        return torch.cuda.device_count()

    def setup_device(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise ConfigurationError(f"the CUDA accelerator was given device {device}: it runs on cuda devices only")
        torch.cuda.set_device(device)
        self._saved_settings = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
        if self.cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.float32_matmul_precision is not None:
            torch.set_float32_matmul_precision(self.float32_matmul_precision)

    def wrap_dataloader(self, dataloader: Iterable, device: torch.device) -> Iterable:
        """Pinned host batches let batch_to_device copy without blocking; set on torch DataLoaders."""
        if self.pin_memory and isinstance(dataloader, torch.utils.data.DataLoader):
            dataloader.pin_memory = True
        return dataloader

    def batch_to_device(self, batch: Any, device: torch.device) -> Any:
        return move_to_device(batch, device, non_blocking=True)

    def device_stats(self, device: torch.device) -> dict[str, float]:
        """Allocator memory figures in MiB, plus retries and out-of-memory counts."""
        stats = torch.cuda.memory_stats(device)
        return {
            "memory_allocated_mib": stats.get("allocated_bytes.all.current", 0) / _MIB,
            "memory_allocated_peak_mib": stats.get("allocated_bytes.all.peak", 0) / _MIB,
            "memory_reserved_mib": stats.get("reserved_bytes.all.current", 0) / _MIB,
            "memory_reserved_peak_mib": stats.get("reserved_bytes.all.peak", 0) / _MIB,
            "alloc_retries": float(stats.get("num_alloc_retries", 0)),
            "out_of_memory_count": float(stats.get("num_ooms", 0)),
        }

    def rng_state(self) -> dict[str, Any]:
        """The generator state of every visible GPU, for exact resume; empty while CUDA is not initialised.

        A process that never touched CUDA has drawn nothing from its generators, and asking for their state
        would initialise CUDA (and take GPU memory) only to save the seeds' defaults.
        """
        if not torch.cuda.is_initialized():
            return {}
        return {"cuda": torch.cuda.get_rng_state_all()}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        """Restore what rng_state() returned; devices beyond those saved or those visible keep their state."""
        generators = state.get("cuda")
        if not generators or not torch.cuda.is_available():
            return
        for index, generator in enumerate(generators[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(generator.cpu(), index)

    def teardown(self) -> None:
        """Restore the global settings setup_device changed and return cached memory to the driver."""
        if self._saved_settings is not None:
            torch.backends.cudnn.benchmark, precision = self._saved_settings
            torch.set_float32_matmul_precision(precision)
            self._saved_settings = None
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
