"""Run directories of file-writing loggers (<save_dir>/<name>/version_N), each owned by one live run.

A run holds an exclusive lock on `<run dir>/.trellis_run` while it writes, and records there how far it got
("running", "checkpointed"); a run that ends records its final status and removes the file, so a finished run's
directory holds only the logger's own files, as Lightning's does. That lets a fresh run tell the directories apart:
one that a live process still writes (never touched), one whose run was killed before its first checkpoint
(nothing can resume it: the fresh run takes it over and writes it again from the start, so a restart does not
duplicate rows), and one that holds a resumable or finished run (left alone: the fresh run gets a new version).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import threading
from typing import IO

from trellis.utils.rank_zero import global_rank, rank_zero_warn

try:
    import fcntl
except ImportError:  # no advisory locks (Windows): runs are never taken over
    fcntl = None  # type: ignore[assignment]

LEASE_FILE = ".trellis_run"
RUNNING, CHECKPOINTED = "running", "checkpointed"


class RunDirectory:
    """The version directory of one logger; `owned` are the glob patterns of the files the logger writes there."""

    def __init__(
        self, save_dir: str, name: str, version: int | str | None, owned: tuple[str, ...], prefix: str = "version_"
    ) -> None:
        self.save_dir = save_dir
        self.name = name
        self.prefix = prefix
        self._version = version
        self._owned = owned
        self._lease: IO[str] | None = None
        self._state = RUNNING
        self.resumed = False  # set by continue_run: the files are this run's own
        self._claimed = False
        self._earlier: str | None = None  # the state an earlier run left in the lease
        self._mutex = threading.RLock()  # the training thread and a logger's delivery thread both call in

    @property
    def version(self) -> int | str:
        """The version; without one given, the newest when its run was killed before a checkpoint, else the next.

        On global rank zero the directory is reserved (created and locked) as soon as the version is known, so
        that two runs starting together never pick the same one.
        """
        if self._version is None:
            numbers = _version_numbers(self.root, self.prefix)
            newest = max(numbers, default=None)
            reclaim = newest is not None and _abandoned(os.path.join(self.root, f"{self.prefix}{newest}"))
            self._version = newest if reclaim else (0 if newest is None else newest + 1)
            if global_rank() == 0:
                with self._mutex, contextlib.suppress(OSError):  # a full disk: claim() retries before writing
                    self._lock()
        assert self._version is not None
        return self._version

    @property
    def root(self) -> str:
        return os.path.join(self.save_dir, self.name)

    @property
    def path(self) -> str:
        version = self.version
        return os.path.join(self.root, version if isinstance(version, str) else f"{self.prefix}{version}")

    def continue_run(self, version: int | str) -> None:
        """Resume `version`: its files belong to this run (the logger truncates them to the checkpoint)."""
        with self._mutex:
            if self._lease is not None and not self._claimed:  # a fresh version reserved but never written
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.path, LEASE_FILE))
                    os.rmdir(self.path)
            self.release()
            self._version = version
            self._state = CHECKPOINTED
            self.resumed = True

    def claim(self) -> list[str]:
        """Own the directory before the first write; the owned files of an earlier run it replaces are removed.

        Returns the removed file names. Raises OSError when the directory cannot be created (a full disk):
        the caller retries later.
        """
        with self._mutex:
            self._lock()
            if self.resumed or self._claimed:
                return []
            self._claimed = True
            return self._remove_earlier_files()

    def mark_checkpointed(self) -> None:
        """A checkpoint names this run: from now on it is resumable, and a fresh run never takes it over."""
        with self._mutex:
            if self._state != CHECKPOINTED:
                self._state = CHECKPOINTED
                if self._lease is not None:
                    self._write_state(CHECKPOINTED)

    def release(self, status: str | None = None) -> None:
        """Unlock; with the run's final status, record it and remove the lease (a process that opened the lease
        just before reads the status, and never takes the finished run for an abandoned one)."""
        with self._mutex:
            if self._lease is None:
                return
            with contextlib.suppress(OSError):
                if status is not None:
                    self._write_state(status)
                    os.remove(self._lease.name)
            with contextlib.suppress(OSError):
                self._lease.close()
            self._lease = None

    def _lock(self) -> None:
        """Create the directory and take its lease; a live process holding it sends us to a new version."""
        path = self.path  # deciding the version may have reserved it already
        if self._lease is not None:
            return
        os.makedirs(path, exist_ok=True)
        lease = open(os.path.join(path, LEASE_FILE), "a+")
        if fcntl is not None:
            try:
                fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lease.close()
                self._move_on()
                return
        self._earlier = _read_state(lease)
        self._lease = lease
        self._write_state(self._state)

    def _move_on(self) -> None:
        """The directory is being written by another live process: never share it; take a new version."""
        taken = self.path
        self._version = max(_version_numbers(self.root, self.prefix), default=-1) + 1
        self.resumed = False
        rank_zero_warn(
            f"{taken} is being written by another live process; this run writes {self.path} instead. Give "
            "concurrent runs their own version (or let the logger choose one)."
        )
        self._lock()

    def _remove_earlier_files(self) -> list[str]:
        files = sorted({path for pattern in self._owned for path in glob.glob(os.path.join(self.path, pattern))})
        if not files:
            return []
        for path in files:
            os.remove(path)
        why = ("its run was killed before its first checkpoint, so nothing could resume it" if self._earlier == RUNNING
               else "this run was started fresh (no ckpt_path) in a directory that already held a run")
        names = [os.path.basename(path) for path in files]
        rank_zero_warn(f"{self.path}: {', '.join(names)} replaced: {why}.")
        return names

    def _write_state(self, state: str) -> None:
        lease = self._lease
        assert lease is not None
        lease.seek(0)
        lease.truncate()
        lease.write(json.dumps({"state": state, "pid": os.getpid(), "host": socket.gethostname()}))
        lease.flush()


def _version_numbers(root: str, prefix: str) -> list[int]:
    if not os.path.isdir(root):
        return []
    cut = len(prefix)
    return [int(entry[cut:]) for entry in os.listdir(root) if entry.startswith(prefix) and entry[cut:].isdigit()]


def _abandoned(path: str) -> bool:
    """A run that was killed before its first checkpoint: still "running", and nobody holds its lock."""
    if fcntl is None:
        return False
    try:
        with open(os.path.join(path, LEASE_FILE)) as lease:
            if _read_state(lease) != RUNNING:
                return False
            try:
                fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
    except OSError:
        return False


def _read_state(lease: IO[str]) -> str | None:
    lease.seek(0)
    try:
        return json.loads(lease.read() or "{}").get("state")
    except ValueError:
        return None
