"""Capturing, restoring and isolating the random number generators a training run touches."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import torch

#: RNG states saved by enclosing isolated_rng blocks, outermost first.
_outer_states: list[dict[str, Any]] = []


def capture_rng() -> dict[str, Any]:
    """python, numpy (when installed), torch and CUDA generator states, in checkpoint-safe types."""
    version, keys, gauss = random.getstate()
    states: dict[str, Any] = {"python": {"version": version, "keys": list(keys), "gauss": gauss},
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy
    except ImportError:
        return states
    kind, numpy_keys, position, has_gauss, cached = numpy.random.get_state()
    states["numpy"] = {"keys": torch.from_numpy(numpy_keys.astype("int64")), "position": int(position),
                       "has_gauss": int(has_gauss), "cached": float(cached)}
    return states


def restore_rng(states: dict[str, Any]) -> None:
    python = states["python"]
    random.setstate((python["version"], tuple(python["keys"]), python["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy

        saved = states["numpy"]
        numpy.random.set_state(("MT19937", saved["keys"].numpy().astype("uint32"), saved["position"],
                                saved["has_gauss"], saved["cached"]))


def training_rng_state() -> dict[str, Any]:
    """The RNG state training will continue from: the outermost saved one inside isolated blocks."""
    return _outer_states[0] if _outer_states else capture_rng()


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block (validation, a sanity check) without changing the RNG state training sees."""
    states = capture_rng()
    _outer_states.append(states)
    try:
        yield
    finally:
        _outer_states.pop()
        restore_rng(states)
