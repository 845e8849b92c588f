"""Capturing, restoring and isolating the random number generators a training run touches."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any, Protocol

import torch

#: RNG states saved by enclosing isolated_rng blocks, outermost first.
_outer_states: list[dict[str, Any]] = []


class DeviceRNG(Protocol):
    """The accelerator's part: its devices' generators (Accelerator.rng_state/load_rng_state)."""

    def rng_state(self) -> dict[str, Any]: ...

    def load_rng_state(self, state: dict[str, Any]) -> None: ...


def capture_rng(device: DeviceRNG | None = None) -> dict[str, Any]:
    """python, numpy (when installed), torch and the device's generator states, in checkpoint-safe types."""
    version, keys, gauss = random.getstate()
    states: dict[str, Any] = {"python": {"version": version, "keys": list(keys), "gauss": gauss},
                              "torch": torch.get_rng_state()}
    if device is not None:
        states.update(device.rng_state())
    try:
        import numpy
    except ImportError:
        return states
    legacy_state: Any = numpy.random.get_state()  # the legacy tuple (numpy's stubs type it as the dict form)
    kind, numpy_keys, position, has_gauss, cached = legacy_state
    states["numpy"] = {"keys": torch.from_numpy(numpy_keys.astype("int64")), "position": int(position),
                       "has_gauss": int(has_gauss), "cached": float(cached)}
    return states


def restore_rng(states: dict[str, Any], device: DeviceRNG | None = None) -> None:
    python = states["python"]
    random.setstate((python["version"], tuple(python["keys"]), python["gauss"]))
    torch.set_rng_state(states["torch"])
    if device is not None:
        device.load_rng_state(states)
    if "numpy" in states:
        import numpy

        saved = states["numpy"]
        numpy.random.set_state(("MT19937", saved["keys"].numpy().astype("uint32"), saved["position"],
                                saved["has_gauss"], saved["cached"]))


def training_rng_state(device: DeviceRNG | None = None) -> dict[str, Any]:
    """The RNG state training will continue from: the outermost saved one inside isolated blocks."""
    return _outer_states[0] if _outer_states else capture_rng(device)


@contextlib.contextmanager
def isolated_rng(device: DeviceRNG | None = None) -> Iterator[None]:
    """Run a block (the sanity check) without changing the RNG state training sees."""
    states = capture_rng(device)
    _outer_states.append(states)
    try:
        yield
    finally:
        _outer_states.pop()
        restore_rng(states, device)
