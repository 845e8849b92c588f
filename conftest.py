"""Test isolation for the whole repository (kernel and plugin tests alike)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def restore_environment() -> Iterator[None]:
    """Undo environment changes a test makes (seed_everything exports TRELLIS_GLOBAL_SEED, which
    processes started by later tests would inherit)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
