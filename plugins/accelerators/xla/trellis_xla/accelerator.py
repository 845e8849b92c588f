"""The XLA accelerator: lazy tensors cut into graphs at step boundaries, data fed by XLA's parallel loader."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

from trellis.plugin import Accelerator, rank_zero_info
from trellis_xla import availability

_MIB = 1024.0 * 1024.0


class XLAAccelerator(Accelerator):
    """XLA devices: TPU chips, or XLA's CPU device with PJRT_DEVICE=CPU (CPU_NUM_DEVICES=N of them).

    Nothing forces the host to wait on the device inside a step: the optimizer step and the values
    passed to self.log stay lazy XLA tensors until the graph is cut at the step boundary.

    Args:
        metrics_report: print torch_xla's metrics report (compilations, transfers, op fallbacks to
            CPU) at teardown; the first thing to read when XLA training is slow.
    """

    name = "xla"
    device_type = "xla"
    process_group_backend = "xla"
    auto_priority = 20
    default_distributed_strategy = "xla"
    default_single_device_strategy = "xla"
    defers_execution = True
    supports_inference_mode = False  # XLA tensors cannot be inference tensors

    def __init__(self, metrics_report: bool = False) -> None:
        self.metrics_report = metrics_report

    @classmethod
    def is_available(cls) -> bool:
        """Cheap: torch_xla findable and an XLA device type configured or TPU device nodes present."""
        return availability.torch_xla_installed() and availability.pjrt_device() is not None

    @classmethod
    def unavailable_reason(cls) -> str:
        return availability.unavailable_reason()

    @classmethod
    def device_count(cls) -> int:
        """Devices of this host, read without starting the XLA runtime (a started one cannot fork)."""
        kind = availability.pjrt_device()
        if kind == "TPU":
            from torch_xla._internal import tpu

            return tpu.num_available_devices()
        return int(os.environ.get(f"{kind}_NUM_DEVICES", "1"))

    def device(self, index: int) -> torch.device:
        import torch_xla

        return torch_xla.device(index)

    def setup_device(self, device: torch.device) -> None:
        import torch_xla  # noqa: F401  (registers the xla device type with torch)

    def wrap_dataloader(self, dataloader: Iterable, device: torch.device) -> Iterable:
        """XLA's parallel loader uploads the next batches in a background thread while the device computes."""
        from trellis_xla.loader import DeviceLoader

        return DeviceLoader(dataloader, device)

    def step_boundary(self) -> None:
        """Cut the lazy graph recorded during the step and run it asynchronously on the device."""
        import torch_xla

        torch_xla.sync()

    def device_stats(self, device: torch.device) -> dict[str, float]:
        """Device memory in MiB where the runtime reports it (TPU, CUDA); empty on XLA's CPU device."""
        import torch_xla.core.xla_model as xm

        try:
            info = xm.get_memory_info(device)
        except RuntimeError:
            return {}
        return {f"{key.removesuffix('_bytes')}_mib": value / _MIB
                for key, value in info.items() if key.endswith("bytes")}

    def rng_state(self) -> dict[str, int]:
        """The XLA device's random seed state (dropout and torch.rand* on the device draw from it)."""
        import torch_xla.core.xla_model as xm

        return {"xla_seed": xm.get_rng_state()}

    def load_rng_state(self, state: dict[str, int]) -> None:
        """Restore what rng_state returned; a checkpoint from another device (no "xla_seed") changes nothing."""
        if "xla_seed" in state:
            import torch_xla.core.xla_model as xm

            xm.set_rng_state(state["xla_seed"])

    def teardown(self) -> None:
        if self.metrics_report:
            import torch_xla.debug.metrics as metrics

            rank_zero_info(metrics.metrics_report())
