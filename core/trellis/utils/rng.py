"""Running code without disturbing the global random number generators."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Restore python's and torch's RNG state afterwards (a sanity check must not change training)."""
    python_state = random.getstate()
    torch_state = torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        torch.set_rng_state(torch_state)
