"""DCPCheckpointIO: sharded checkpoint directories written by every process, committed by one atomic rename.

A checkpoint `PATH` is a symbolic link to a hidden sibling directory `.NAME.dcp-<token>` holding DCP's
files (each process writes the shards it owns, replicated tensors once) and one small `trellis.rankN.pt`
per process (loop progress, RNG, callback and metric state). Rank 0 points the link at a new directory
only once every process has finished writing it, so a kill mid-save leaves the previous checkpoint whole.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import shutil
import threading
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import torch

from trellis.errors import CheckpointError
from trellis.plugin import CheckpointIO, PathLike, fsync_directory
from trellis_dcp.layout import join_tensors, split_tensors, tensors_by_key

#: types besides tensors and plain containers that the per-process state holds (hyperparameters).
SAFE_TYPES: list[Any] = [argparse.Namespace]
METADATA_FILE = ".metadata"
#: seconds to wait for an asynchronous save before giving up with an error.
DEFAULT_WAIT_TIMEOUT = 1800.0
#: the hidden directory a save writes into, and the link made to commit it.
_STAGING = re.compile(r"\..+\.dcp-[0-9a-f]{12}(\.link)?")
#: what weights-only unpickling says when it refuses a class or function.
_REFUSED = re.compile(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>")
_RESUME_ELSEWHERE = "It cannot be repaired: resume from another checkpoint, or start without ckpt_path."


class DCPCheckpointIO(CheckpointIO):
    """Sharded, atomic checkpoints through torch.distributed.checkpoint; loadable at any world size.

    asynchronous: stage the tensors to CPU memory and write them in a background thread while training
    continues; the next save (and teardown) waits for the previous one.
    """

    name = "dcp"
    sharded = True

    def __init__(self, asynchronous: bool = False, wait_timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        self.asynchronous = asynchronous
        self.wait_timeout = wait_timeout
        self._pending: _PendingSave | None = None
        self._save_group: Any = None
        self._cleaned: set[str] = set()

    # -- saving -------------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        """Called on every process (collective); returns once written, or once staged when asynchronous."""
        import torch.distributed.checkpoint as dcp

        self.wait()
        path = os.path.abspath(os.fspath(path))
        if os.path.lexists(path) and not os.path.islink(path):
            raise CheckpointError(
                f"{path!r} exists and is not a checkpoint written by DCPCheckpointIO (those are links to a hidden "
                "directory): remove it, or save under another name"
            )
        rank = _rank()
        staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.dcp-{_shared_token()}")
        if rank == 0 and os.path.dirname(path) not in self._cleaned:
            remove_stale_staging(os.path.dirname(path), keep=os.path.basename(staging))
            self._cleaned.add(os.path.dirname(path))
        tensors, rest, places = split_tensors(checkpoint)
        os.makedirs(staging, exist_ok=True)
        _write_rest({"rest": rest, "places": places}, os.path.join(staging, f"trellis.rank{rank}.pt"))
        writer = dcp.FileSystemWriter(staging)
        if not self.asynchronous:
            with _single_process_quiet():
                dcp.save(tensors, storage_writer=writer, no_dist=not _distributed())
            if rank == 0:
                _commit(staging, path)
            return
        with _single_process_quiet():
            future = dcp.async_save(tensors, storage_writer=writer, process_group=self._group(),
                                    no_dist=not _distributed())
        self._pending = _PendingSave(future, staging, path if rank == 0 else None)

    def wait(self) -> None:
        """Block until the asynchronous save in flight (if any) is written and committed; raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.wait(self.wait_timeout)

    def _group(self) -> Any:
        """A process group of its own for the background writer, so its collectives never meet training's."""
        import torch.distributed as dist

        if not _distributed():
            return None
        if self._save_group is None:
            self._save_group = dist.new_group(backend="gloo")
        return self._save_group

    # -- loading ------------------------------------------------------------------------------
    def load_checkpoint(
        self,
        path: PathLike,
        map_location: Any = "cpu",
        weights_only: bool = True,
        template: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Load on every process (collective when distributed).

        template: a partial checkpoint ({"state_dict": ..., "optimizer_states": [...]}) whose tensors are
        loaded in place, each process reading only its shards: sharding strategies pass their DTensor
        state here, resharding a checkpoint saved at another world size. Tensors not in it load whole.
        """
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        from trellis_dcp.safe_reader import SafeFileSystemReader

        self.wait()
        directory = os.fspath(path)
        if not self.exists(directory):
            raise CheckpointError(
                f"no DCP checkpoint at {directory!r} (a directory with a {METADATA_FILE} file): check the path "
                "(ckpt_path=...), or load single-file checkpoints with the 'torch' checkpoint IO"
            )
        if _rank() == 0:
            remove_stale_staging(os.path.dirname(os.path.abspath(directory)))
        saved = _read_rest(directory, _rank(), weights_only)
        reader = SafeFileSystemReader(directory, weights_only=weights_only)
        try:
            metadata = reader.read_metadata()
        except CheckpointError:
            raise
        except Exception as error:
            raise CheckpointError(
                f"the DCP checkpoint {directory!r} has a damaged {METADATA_FILE} file ({_describe(error)}). "
                f"{_RESUME_ELSEWHERE}"
            ) from error
        targets = tensors_by_key(template or {})
        tensors: dict[str, torch.Tensor] = {}
        for key in saved["places"]:
            entry = metadata.state_dict_metadata.get(key)
            if not isinstance(entry, TensorStorageMetadata):
                raise CheckpointError(f"{directory!r} lacks the tensor {key!r}: the checkpoint is damaged")
            target = targets.get(key)
            if target is None or tuple(target.shape) != tuple(entry.size):
                target = torch.empty(entry.size, dtype=entry.properties.dtype, device=_device(map_location))
            tensors[key] = target
        with _single_process_quiet():
            dcp.load(tensors, storage_reader=reader, no_dist=not _distributed())
        return join_tensors(saved["rest"], tensors, saved["places"])

    # -- housekeeping -------------------------------------------------------------------------
    def remove_checkpoint(self, path: PathLike) -> None:
        self.wait()
        path = os.fspath(path)
        if os.path.islink(path):
            target = os.path.join(os.path.dirname(path), os.readlink(path))
            os.unlink(path)
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.isdir(path):
            shutil.rmtree(path)

    def exists(self, path: PathLike) -> bool:
        return os.path.isfile(os.path.join(os.fspath(path), METADATA_FILE))

    def teardown(self) -> None:
        self.wait()


class _PendingSave:
    """An asynchronous save: committed (on rank 0) by the writer thread as soon as it has finished."""

    def __init__(self, future: Any, staging: str, commit_to: str | None) -> None:
        self.staging, self.commit_to = staging, commit_to
        self.error: BaseException | None = None
        self.done = threading.Event()
        upload = getattr(future, "upload_completion", future)
        upload.add_done_callback(self._finish)

    def _finish(self, future: Future) -> None:
        try:
            future.result()
            if self.commit_to is not None:
                _commit(self.staging, self.commit_to)
        except BaseException as error:  # noqa: BLE001 - handed to the training thread by wait()
            self.error = error
        finally:
            self.done.set()

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise CheckpointError(
                f"the asynchronous save to {self.commit_to or self.staging!r} did not finish within {timeout:.0f} s: "
                "check the storage, or raise DCPCheckpointIO(wait_timeout=...)"
            )
        if self.error is not None:
            raise CheckpointError(f"the asynchronous save to {self.staging!r} failed: {self.error}") from self.error


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """Silence DCP's warning that it runs in one process: without a process group that is the intent."""
    with warnings.catch_warnings():
        if not _distributed():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if _distributed() else 0


def _shared_token() -> str:
    """A fresh name part, the same on every process (rank 0's)."""
    import torch.distributed as dist

    holder = [uuid.uuid4().hex[:12]]
    if _distributed():
        dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _device(map_location: Any) -> torch.device:
    if map_location is None or callable(map_location) or isinstance(map_location, dict):
        return torch.device("cpu")
    return torch.device(map_location)


def _write_rest(state: dict[str, Any], path: str) -> None:
    with open(path, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())


def _read_rest(directory: str, rank: int, weights_only: bool) -> dict[str, Any]:
    """This process's state, or rank 0's for a process the saving run did not have."""
    own = os.path.join(directory, f"trellis.rank{rank}.pt")
    path = own if os.path.isfile(own) else os.path.join(directory, "trellis.rank0.pt")
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{directory!r} holds DCP data but no Trellis state (trellis.rank0.pt): it was not written by "
            "DCPCheckpointIO, or it is damaged"
        )
    try:
        with torch.serialization.safe_globals(SAFE_TYPES):
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:
        refused = _REFUSED.search(str(error)) if isinstance(error, pickle.UnpicklingError) else None
        if refused and zipfile.is_zipfile(path):  # an intact file: the object really is refused
            raise CheckpointError(
                f"{path!r} holds an object of type {refused.group(1) or refused.group(2)}, and loading it would run "
                "that type's code, so weights-only loading refused it. If you trust the checkpoint, load it with "
                "weights_only=False"
            ) from error
        raise CheckpointError(f"{path!r} is damaged or truncated ({_describe(error)}). {_RESUME_ELSEWHERE}") from error


def remove_stale_staging(directory: str, keep: str = "") -> list[str]:
    """Delete what killed saves left in `directory`: hidden `.NAME.dcp-<token>` directories that no checkpoint
    link points at (and half-made `.link`s), except `keep`, the save in progress. Nothing else is touched."""
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    linked = {os.path.basename(os.readlink(os.path.join(directory, entry))) for entry in entries
              if os.path.islink(os.path.join(directory, entry)) and not _STAGING.fullmatch(entry)}
    removed = []
    for entry in entries:
        if not _STAGING.fullmatch(entry) or entry in linked or entry == keep:
            continue
        leftover = os.path.join(directory, entry)
        if os.path.islink(leftover) or os.path.isfile(leftover):
            os.unlink(leftover)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover)
    return removed


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0]}" if str(error).strip() else type(error).__name__


def _commit(staging: str, path: str) -> None:
    """Point `path` at the finished `staging` directory in one rename, then drop what it replaced."""
    directory, name = os.path.split(path)
    fsync_directory(staging)
    link = f"{staging}.link"
    os.symlink(os.path.basename(staging), link)
    os.replace(link, path)
    fsync_directory(directory)
    keep = os.path.basename(staging)
    stale = re.compile(rf"\.{re.escape(name)}\.dcp-[0-9a-f]{{12}}(\.link)?")
    for entry in os.listdir(directory):
        if entry != keep and stale.fullmatch(entry):
            leftover = os.path.join(directory, entry)
            if os.path.islink(leftover) or os.path.isfile(leftover):
                os.unlink(leftover)
            else:
                shutil.rmtree(leftover, ignore_errors=True)
