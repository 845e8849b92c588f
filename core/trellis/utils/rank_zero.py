"""Printing and warning once, from global rank zero only."""

from __future__ import annotations

import functools
import os
import warnings


def global_rank() -> int:
    for variable in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if variable in os.environ:
            return int(os.environ[variable])
    return 0


def rank_zero_info(message: str) -> None:
    if global_rank() == 0:
        print(message, flush=True)


def rank_zero_warn(message: str, category: type[Warning] = UserWarning) -> None:
    if global_rank() == 0:
        warnings.warn(message, category, stacklevel=3)


@functools.cache
def warn_once(message: str) -> None:
    rank_zero_warn(message)
