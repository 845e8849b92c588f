"""One checkpoint write at a time on a background thread, its failure reported to the training thread."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from trellis.errors import CheckpointError


class BackgroundWriter:
    """Runs a write job off the training thread; a new job first waits for the previous one.

    Waiting (rather than superseding the pending write) means every checkpoint that was asked for exists
    afterwards, which ModelCheckpoint relies on when it records a path as saved.
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._pending: tuple[str, Future] | None = None

    def submit(self, path: str, job: Callable[[], None]) -> None:
        self.wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trellis-checkpoint-writer")
        self._pending = (path, self._executor.submit(job))

    def wait(self) -> None:
        """Block until the pending write is done; raise its failure here, in the caller's thread."""
        if self._pending is None:
            return
        path, future = self._pending
        self._pending = None
        error = future.exception()
        if isinstance(error, CheckpointError):  # already names the path, the cause and the fix
            raise CheckpointError(f"an asynchronous checkpoint write failed: {error}") from error
        if error is not None:
            raise CheckpointError(
                f"the asynchronous checkpoint write to {path!r} failed ({type(error).__name__}: {error}). "
                "The checkpoint previously at that path, if any, is intact. Fix the cause (disk space, "
                "permissions, the path) or save synchronously with TorchCheckpointIO(async_save=False)"
            ) from error

    def wait_for(self, path: str) -> None:
        """Wait only if the pending write targets `path` (so it is read, tested or removed complete)."""
        if self._pending is not None and self._pending[0] == path:
            self.wait()

    def close(self) -> None:
        """Wait for the pending write, then stop the thread."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None
