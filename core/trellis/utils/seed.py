"""Seeding every random number generator a training run touches, as Lightning's seed_everything does."""

from __future__ import annotations

import os
import random
import sys

import torch

from trellis.utils.rank_zero import global_rank, rank_zero_warn

#: where the seed is kept for processes started later (DDP workers, the distributed sampler's shuffling).
SEED_VARIABLE = "TRELLIS_GLOBAL_SEED"
#: "1" when seed_everything(workers=True) asked for seeded dataloader workers.
SEED_WORKERS_VARIABLE = "TRELLIS_SEED_WORKERS"
_SEED_RANGE = (0, 2**32 - 1)  # what numpy accepts


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed Python's random, numpy (when installed) and torch, and export the seed for processes started later.

    seed=None takes TRELLIS_GLOBAL_SEED from the environment, else 0 (with a warning). verbose prints
    "Seed set to N" (prefixed with the rank on other ranks than zero). Returns the seed.
    """
    if seed is None:
        from_environment = os.environ.get(SEED_VARIABLE)
        if from_environment is None:
            seed = 0
            if verbose:
                rank_zero_warn(f"seed_everything() found no seed (no argument, no {SEED_VARIABLE}): seed set to 0")
        else:
            try:
                seed = int(from_environment)
            except ValueError:
                raise ValueError(f"{SEED_VARIABLE}={from_environment!r} is not an integer seed") from None
    elif not isinstance(seed, int):
        seed = int(seed)
    low, high = _SEED_RANGE
    if not low <= seed <= high:
        raise ValueError(f"seed_everything({seed}): the seed must lie in [{low}, {high}] (numpy's range)")
    if verbose:
        rank = global_rank()
        print(f"Seed set to {seed}" if rank == 0 else f"[rank: {rank}] Seed set to {seed}", file=sys.stderr, flush=True)
    os.environ[SEED_VARIABLE] = str(seed)
    os.environ[SEED_WORKERS_VARIABLE] = str(int(workers))
    random.seed(seed)
    try:
        import numpy
    except ImportError:
        pass
    else:
        numpy.random.seed(seed)
    torch.manual_seed(seed)
    return seed
