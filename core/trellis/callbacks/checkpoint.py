"""Checkpoint: the base of callbacks that save checkpoints (ModelCheckpoint, OnExceptionCheckpoint)."""

from __future__ import annotations

from trellis.callbacks.base import Callback


class Checkpoint(Callback):
    """A callback that saves checkpoints. Passing one to the Trainer replaces the default ModelCheckpoint, and
    its hooks run after the module's, so that it sees what the module logged at the same moment."""

    runs_last = True
