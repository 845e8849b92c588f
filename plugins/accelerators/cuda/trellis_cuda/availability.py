"""Why torch cannot use a GPU here, told from what is installed and visible (no CUDA context is created)."""

from __future__ import annotations

import ctypes.util
import os

import torch

INSTALL_HINT = "install a CUDA build of torch (pip install torch --index-url https://download.pytorch.org/whl/cu128)"


def unavailable_reason() -> str:
    """What was found that keeps torch.cuda from seeing a GPU, and what to do about it."""
    if torch.version.cuda is None and torch.version.hip is None:
        return f"this torch {torch.__version__} is a CPU-only build (torch.version.cuda is None): {INSTALL_HINT}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU: unset it or list the GPUs to use (e.g. 0,1)"
    if not driver_present():
        return (
            f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, but no NVIDIA driver was found "
            "(no libcuda, no /proc/driver/nvidia): install the NVIDIA driver, or in a container run with GPUs "
            "passed through (docker run --gpus all)"
        )
    return (
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) and the NVIDIA driver are present but torch sees "
        f"0 GPUs (CUDA_VISIBLE_DEVICES={visible!r}): check nvidia-smi, and that the driver supports CUDA "
        f"{torch.version.cuda}"
    )


def driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or ctypes.util.find_library("cuda") is not None
