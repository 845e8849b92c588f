"""Where checkpoint bytes go: a local directory, or any fsspec filesystem named by a URL.

Both write into a temporary file beside the target and rename it over the target when complete, so a
reader sees the previous checkpoint or the new one, never a partial one:

- local paths (and file:// URLs): temporary file (trellis_torch.temporaries: created with the umask's
  permissions, locked while written), fsync, os.replace, fsync of the directory; the new checkpoint
  survives a crash or power loss once save returns. A write that fails (a full disk) raises a
  CheckpointError naming the file, the cause and the fix, and removes its temporary.
- other fsspec URLs (memory://, s3://, gs://, ...): temporary file, then fs.mv onto the target. The
  guarantee is the filesystem's: a rename where it has one; on object stores mv is a server-side copy
  (which replaces the target object whole: readers see the old object or the new one) and a delete of
  the temporary. fsspec has no fsync, so durability is whatever the store promises once the upload is closed.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
from collections.abc import Callable
from typing import IO, Any

from trellis.errors import CheckpointError
from trellis.plugin import fsync_directory
from trellis_torch import temporaries

#: writes a checkpoint into an open binary file (torch.save)
Writer = Callable[[IO[bytes]], None]


class LocalStorage:
    """A path on this machine's filesystem."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, write: Writer) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            file, temporary = temporaries.create(os.path.join(directory, os.path.basename(self.path)))
        except OSError as error:
            raise write_failed(self.path, error) from error
        try:
            with file:
                recorder = _FailureRecorder(file)
                try:
                    write(recorder)
                except Exception as error:
                    if recorder.error is not None:  # torch.save reports a failed write with text of its own
                        raise recorder.error from error
                    raise
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException as error:
            if os.path.exists(temporary):
                os.unlink(temporary)
            if isinstance(error, OSError):  # after the unlink: the free space it reports includes what was freed
                raise write_failed(self.path, error) from error
            raise
        finally:
            temporaries.finished(temporary)
        fsync_directory(directory)

    def remove_stale_temporaries(self) -> list[str]:
        """Temporaries of killed writes in this checkpoint's directory (see trellis_torch.temporaries)."""
        return temporaries.remove_stale(os.path.dirname(os.path.abspath(self.path)))

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
        hidden = f".{name}.trellis-{secrets.token_hex(8)}.tmp"
        temporary = f"{parent}/{hidden}" if parent else hidden
        try:
            with self.fs.open(temporary, "wb") as file:
                write(file)
            self.fs.mv(temporary, self.path)
        except BaseException:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)
            raise

    def remove_stale_temporaries(self) -> list[str]:
        """Nothing: remote stores have no locks to tell a killed write from a running one."""
        return []

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


class _FailureRecorder:
    """The file torch.save writes into, remembering the OSError of a failed write.

    torch.save turns a failed write into its own RuntimeError ("unexpected pos ..."); the recorded error
    says what really happened (no space left on the device, a file size limit, an I/O error).
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self._file.flush()


def write_failed(path: str, error: OSError) -> CheckpointError:
    """The checkpoint could not be written: name the file, the cause and the fix; the previous one is intact."""
    directory = os.path.dirname(os.path.abspath(path))
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(directory)
        cause = "the disk is full" if error.errno == errno.ENOSPC else "the disk quota is exhausted"
        where = f" ({free / 1e6:.1f} MB free)" if free is not None else ""
        fix = (f"free space in {directory}{where}, or save elsewhere (ModelCheckpoint(dirpath=...), "
               "Trainer(default_root_dir=...))")
    elif error.errno == errno.EFBIG:
        cause = "the file grew past the size limit of this process"
        fix = "raise the limit (ulimit -f) or save elsewhere"
    elif error.errno in (errno.EEXIST, errno.ENOTDIR):
        cause = f"{directory} (or a folder above it) is a file, not a directory"
        fix = "move that file, or save elsewhere"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause, fix = f"{directory} is not writable", "choose a writable directory or fix its permissions"
    else:
        cause, fix = "the filesystem refused it", "check the filesystem, or save elsewhere"
    return CheckpointError(
        f"could not write the checkpoint {path!r}: {cause} ({type(error).__name__}: {error.strerror or error}). "
        f"Fix: {fix}. The checkpoint previously at that path, if any, is intact."
    )


def _free_bytes(directory: str) -> int | None:
    try:
        status = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return status.f_bavail * status.f_frsize
