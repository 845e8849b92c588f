"""Seeding every random number generator a training run touches."""

from __future__ import annotations

import os
import random

import torch


def seed_everything(seed: int = 0, workers: bool = False) -> int:
    """Seed python, numpy (when installed) and torch; export the seed for worker processes."""
    os.environ["TRELLIS_GLOBAL_SEED"] = str(seed)
    os.environ["TRELLIS_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    try:
        import numpy
    except ImportError:
        pass
    else:
        numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed
