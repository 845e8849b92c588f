"""Whether torch_xla and an XLA device are present, answered without importing torch_xla."""

from __future__ import annotations

import glob
import importlib.util
import os

import torch

INSTALL_HINT = (
    "pip install 'trellis-xla[tpu]' on a TPU VM (or pip install torch_xla=={version} next to torch {version}; "
    "torch_xla must match torch's version)"
)


def torch_xla_installed() -> bool:
    return importlib.util.find_spec("torch_xla") is not None


def tpu_device_files() -> list[str]:
    """The device nodes a TPU VM exposes (/dev/accel* on v2-v4, /dev/vfio/* on v5 and later)."""
    return glob.glob("/dev/accel*") + [path for path in glob.glob("/dev/vfio/*") if not path.endswith("/vfio")]


def pjrt_device() -> str | None:
    """The XLA runtime device type: PJRT_DEVICE, else TPU where TPU device nodes exist."""
    configured = os.environ.get("PJRT_DEVICE", "").strip().upper()
    if configured:
        return configured
    return "TPU" if tpu_device_files() else None


def unavailable_reason() -> str:
    version = torch.__version__.split("+")[0]
    if not torch_xla_installed():
        return f"torch_xla is not installed: {INSTALL_HINT.format(version=version)}"
    return (
        "torch_xla is installed but no XLA device was found: this is not a TPU VM (no /dev/accel* or /dev/vfio "
        "devices) and PJRT_DEVICE is not set. Set PJRT_DEVICE=TPU, CUDA or CPU (CPU runs XLA on the host)"
    )
