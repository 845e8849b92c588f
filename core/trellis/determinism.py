"""Trainer(deterministic=..., benchmark=...): torch's global switches for reproducible kernels."""

from __future__ import annotations

import os

import torch


def configure_determinism(deterministic: bool | str | None, benchmark: bool | None) -> None:
    """deterministic: True, False or "warn" (warn instead of failing on a nondeterministic op); None leaves
    torch as it is. benchmark: cuDNN autotuning (off when deterministic and not asked for)."""
    if deterministic is not None:
        warn_only = deterministic == "warn"
        torch.use_deterministic_algorithms(bool(deterministic), warn_only=warn_only)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.backends.cudnn.deterministic = bool(deterministic)
    if benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
    elif deterministic:
        torch.backends.cudnn.benchmark = False
