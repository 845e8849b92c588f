"""Where checkpoint bytes go: a local directory, or any fsspec filesystem named by a URL.

Both write into a temporary file beside the target and rename it over the target when complete, so a
reader sees the previous checkpoint or the new one, never a partial one:

- local paths (and file:// URLs): temporary file, fsync, os.replace, fsync of the directory; the new
  checkpoint survives a crash or power loss once save returns.
- other fsspec URLs (memory://, s3://, gs://, ...): temporary file, then fs.mv onto the target. The
  guarantee is the filesystem's: a rename where it has one; on object stores mv is a server-side copy
  (which replaces the target object whole: readers see the old object or the new one) and a delete of
  the temporary. fsspec has no fsync, so durability is whatever the store promises once the upload is closed.
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from collections.abc import Callable
from typing import IO, Any

from trellis.errors import CheckpointError
from trellis.utils.files import fsync_directory

#: writes a checkpoint into an open binary file (torch.save)
Writer = Callable[[IO[bytes]], None]


class LocalStorage:
    """A path on this machine's filesystem."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, write: Writer) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp",
                                                 dir=directory)
        try:
            with os.fdopen(descriptor, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        fsync_directory(directory)

    def source(self) -> str:
        """What torch.load reads: the path itself (no copy into memory)."""
        if not os.path.isfile(self.path):
            raise CheckpointError(f"no checkpoint file at {self.path!r}: check the path (ckpt_path=...)")
        return self.path

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


class FsspecStorage:
    """A file on an fsspec filesystem (memory://, s3://, gs://, ...)."""

    def __init__(self, url: str, filesystem: Any, path: str) -> None:
        self.url, self.fs, self.path = url, filesystem, path

    def write(self, write: Writer) -> None:
        parent, _, name = self.path.rpartition("/")
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        temporary = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp" if parent else f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open(temporary, "wb") as file:
                write(file)
            self.fs.mv(temporary, self.path)
        except BaseException:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)
            raise

    def source(self) -> io.BytesIO:
        """The whole file in memory: torch.load seeks a lot, which costs a request each on remote stores."""
        if not self.fs.isfile(self.path):
            raise CheckpointError(f"no checkpoint file at {self.url!r}: check the URL (ckpt_path=...)")
        with self.fs.open(self.path, "rb") as file:
            return io.BytesIO(file.read())

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def remove(self) -> None:
        if self.fs.exists(self.path):
            self.fs.rm(self.path)


def storage_for(path: str) -> LocalStorage | FsspecStorage:
    """Paths with a protocol ("memory://...", "s3://...") go through fsspec; file:// becomes a local path."""
    if "://" not in path:
        return LocalStorage(path)
    try:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem
    except ImportError as error:
        raise CheckpointError(
            f"the checkpoint path {path!r} is a URL, which needs fsspec: pip install 'trellis-torch[remote]'"
        ) from error
    try:
        filesystem, inner = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as error:
        raise CheckpointError(
            f"cannot open the filesystem of {path!r}: {error}. Install the fsspec backend for its protocol "
            "(e.g. pip install s3fs for s3://, gcsfs for gs://) or fix the URL"
        ) from error
    if isinstance(filesystem, LocalFileSystem):
        return LocalStorage(inner)
    return FsspecStorage(path, filesystem, inner)
