"""TorchCheckpointIO: single-file torch.save checkpoints, written atomically, loaded weights-only."""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from trellis.plugin import CheckpointIO, PathLike
from trellis_torch.background import BackgroundWriter
from trellis_torch.diagnosis import load_failed, not_a_checkpoint
from trellis_torch.snapshot import snapshot
from trellis_torch.storage import FsspecStorage, LocalStorage, storage_for

#: types besides tensors and plain containers that Trellis checkpoints hold (hyperparameters).
SAFE_TYPES: list[Any] = [argparse.Namespace]


class TorchCheckpointIO(CheckpointIO):
    """torch.save into a temporary file beside the target, then rename it over the target.

    A reader sees the old file or the new one, never a partial one, even if the process dies mid-write.
    Paths may be fsspec URLs (memory://, s3://, ...; see trellis_torch.storage for what each guarantees).

    With `async_save=True`, save_checkpoint copies the state to CPU memory (so later optimizer steps
    cannot change what is written) and returns; a background thread writes the copy. A save waits for
    the previous one, teardown() waits for the last one, and a failed write is raised as CheckpointError
    at the next save or at teardown.
    """

    name = "torch"

    def __init__(self, async_save: bool = False) -> None:
        self.async_save = async_save
        self._writer = BackgroundWriter()
        self._cleaned: set[str] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        path = os.fspath(path)
        storage = storage_for(path)
        if not self.async_save:
            self._clean_once(path, storage)
            storage.write(lambda file: torch.save(checkpoint, file))
            return
        self._writer.wait()
        self._clean_once(path, storage)
        copied = snapshot(checkpoint)
        self._writer.submit(path, lambda: storage.write(lambda file: torch.save(copied, file)))

    def load_checkpoint(self, path: PathLike, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
        path = os.fspath(path)
        self._writer.wait_for(path)
        storage = storage_for(path)
        source = storage.source()
        storage.remove_stale_temporaries()
        try:
            with torch.serialization.safe_globals(SAFE_TYPES):
                checkpoint = torch.load(source, map_location=map_location, weights_only=weights_only)
        except Exception as error:
            raise load_failed(path, source, error, weights_only) from error
        if not isinstance(checkpoint, dict):
            raise not_a_checkpoint(path, checkpoint)
        return checkpoint

    def remove_checkpoint(self, path: PathLike) -> None:
        path = os.fspath(path)
        self._writer.wait_for(path)
        storage_for(path).remove()

    def exists(self, path: PathLike) -> bool:
        path = os.fspath(path)
        self._writer.wait_for(path)
        return storage_for(path).exists()

    def teardown(self) -> None:
        """Wait for a pending asynchronous write; its failure is raised here."""
        self._writer.close()

    def _clean_once(self, path: str, storage: LocalStorage | FsspecStorage) -> None:
        """Remove temporaries that killed writes left in a directory, the first time this run saves there."""
        directory = os.path.dirname(path)
        if directory not in self._cleaned:
            storage.remove_stale_temporaries()
            self._cleaned.add(directory)


def async_torch_checkpoint_io() -> TorchCheckpointIO:
    """The "torch_async" entry point: TorchCheckpointIO(async_save=True), reachable by name."""
    return TorchCheckpointIO(async_save=True)
