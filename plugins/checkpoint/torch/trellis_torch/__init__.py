"""Single-file checkpoints: written atomically, loaded with weights_only=True."""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import zipfile
from typing import Any

import torch

from trellis.errors import CheckpointError
from trellis.roles import CheckpointIO
from trellis.roles.checkpoint_io import PathLike

#: types besides tensors and plain containers that Trellis checkpoints hold (hyperparameters).
SAFE_TYPES: list[Any] = [argparse.Namespace]


class TorchCheckpointIO(CheckpointIO):
    """torch.save into a temporary file beside the target, fsync, rename, fsync the directory.

    A reader sees the old file or the new one, never a partial one, even if the process dies mid-write.
    """

    name = "torch"

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(descriptor, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        _fsync_directory(directory)

    def load_checkpoint(self, path: PathLike, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise CheckpointError(f"no checkpoint file at {path!r}: check the path (ckpt_path=...)")
        try:
            with torch.serialization.safe_globals(SAFE_TYPES):
                return torch.load(path, map_location=map_location, weights_only=weights_only)
        except pickle.UnpicklingError as error:
            if weights_only and "weights_only" in str(error):
                raise CheckpointError(
                    f"{path!r} holds objects that could run code when loaded, so it was refused. If you trust the "
                    f"file, load it with weights_only=False. Detail: {str(error).splitlines()[0]}"
                ) from error
            raise _corrupt(path, error) from error
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
            raise _corrupt(path, error) from error

    def remove_checkpoint(self, path: PathLike) -> None:
        if os.path.exists(path):
            os.unlink(path)

    def exists(self, path: PathLike) -> bool:
        return os.path.exists(path)


def _corrupt(path: str, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path!r} is corrupt or truncated and cannot be loaded ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}). Resume from an earlier checkpoint."
    )


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
