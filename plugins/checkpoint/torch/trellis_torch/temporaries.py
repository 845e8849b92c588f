"""Temporary files of local checkpoint writes: recognisable names, locked while written, removed once stale.

A write goes to `.NAME.trellis-<16 hex>.tmp` beside the checkpoint NAME and is renamed over NAME when
complete. A writer killed mid-write leaves that file behind; `remove_stale` deletes such leftovers and
nothing else:

- only names of that pattern (and of the pattern earlier trellis-torch versions used, for checkpoint names
  ending in .ckpt, .pt or .pth), only in the directory it is given, never recursively;
- never a file a live writer still holds: writers keep an exclusive `flock` on their temporary file until
  it is renamed, the kernel releases it when a writer dies. This process's own writes in progress are also
  known by name, since on some network filesystems locks do not tell threads of one process apart. An
  unlocked file that is still empty may be a writer of another process between creating and locking it: it
  is stale only if it is older than this process's trellis_torch, or than a grace period. Where the
  filesystem has no locks (some network filesystems), a temporary counts as stale once it has not changed
  for 10 minutes.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted there anyway
    fcntl = None  # type: ignore[assignment]

TEMPORARY = re.compile(r"\..+\.trellis-[0-9a-f]{16}\.tmp")
#: what trellis-torch 0.1 named them (tempfile.mkstemp), removed as well when the target was a checkpoint file.
LEGACY_TEMPORARY = re.compile(r"\..+\.(ckpt|pt|pth)\.[a-z0-9_]{8}\.tmp")
#: seconds an unlocked empty temporary made after this process started is left alone (its writer may be
#: about to lock it).
EMPTY_GRACE_S = 10.0
_IMPORTED_AT = time.time()
#: seconds without change after which a temporary is stale where the filesystem cannot lock.
UNLOCKABLE_STALE_S = 600.0
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
#: temporaries this process is writing now.
_WRITING: set[str] = set()


def create(target: str) -> tuple[IO[bytes], str]:
    """A new temporary file beside `target`, open for writing and locked until closed.

    Created with mode 0666 minus the umask, as open() and torch.save create files.
    """
    directory, name = os.path.split(target)
    while True:
        path = os.path.join(directory, f".{name}.trellis-{secrets.token_hex(8)}.tmp")
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        _WRITING.add(os.path.abspath(path))
        file = os.fdopen(descriptor, "wb")
        _lock(descriptor, wait=True)  # waits only while a cleaner inspects the new file
        return file, path


def finished(path: str) -> None:
    """The write into the temporary `path` is over (renamed or abandoned)."""
    _WRITING.discard(os.path.abspath(path))


def remove_stale(directory: str) -> list[str]:
    """Delete the temporaries in `directory` whose writers are gone; returns their paths."""
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        if not (TEMPORARY.fullmatch(entry) or LEGACY_TEMPORARY.fullmatch(entry)):
            continue
        path = os.path.join(directory, entry)
        if os.path.abspath(path) not in _WRITING and _stale(path):
            try:
                os.unlink(path)
            except FileNotFoundError:  # another process cleaned it first
                continue
            removed.append(path)
    return removed


def _lock(descriptor: int, wait: bool) -> bool | None:
    """Take an exclusive lock: True if taken, False if held elsewhere (without waiting), None if unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _NO_LOCKS:
            return None
        raise
    return True


def _stale(path: str) -> bool:
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(status.st_mode):  # links, directories, pipes: not what a writer makes
        return False
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except (FileNotFoundError, PermissionError):
        return False
    try:
        unchanged_for = time.time() - status.st_mtime
        locked = _lock(descriptor, wait=False)
        if locked is None:
            return unchanged_for > UNLOCKABLE_STALE_S
        if not locked:
            return False
        made_by_an_earlier_process = status.st_mtime < _IMPORTED_AT
        return os.fstat(descriptor).st_size > 0 or made_by_an_earlier_process or unchanged_for > EMPTY_GRACE_S
    finally:
        os.close(descriptor)  # releases the lock taken here
