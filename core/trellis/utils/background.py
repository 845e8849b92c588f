"""Background delivery for loggers: the training thread hands items over, one daemon thread delivers them.

Every logger plugin uses this one mechanism, so they share its promises: the training thread only appends
to a queue (no serialization, no I/O, no lock); items reach the backend in the order they were put; a
failing backend (a full disk, a server that is down) costs one warning and no item; every wait of the
training thread is bounded; and what could not be delivered in the end is spilled to a JSON-lines file, or,
when even that fails, named exactly in a warning.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from trellis.utils.rank_zero import rank_zero_info, rank_zero_warn

Item = dict[str, Any]


class BackgroundDelivery:
    """A queue of items for one backend and the daemon thread that empties it into `deliver`.

    `deliver(chunk)` runs on the thread with up to `chunk_size` of the oldest items; a chunk counts as
    delivered only once it returned, so it must deliver the whole chunk or leave nothing visible (roll back
    what it half wrote), or be safe to repeat. The thread wakes every `interval` seconds, or at once on
    `flush`. After a failure it retries every `retry_interval` seconds; items pile up meanwhile, and beyond
    `max_pending` the oldest are spilled so that memory stays bounded.
    """

    def __init__(
        self,
        backend: str,
        deliver: Callable[[list[Item]], None],
        spill_path: Callable[[], str],
        interval: float = 0.5,
        retry_interval: float = 5.0,
        chunk_size: int = 1000,
        max_pending: int = 200_000,
    ) -> None:
        self.backend = backend
        self._deliver = deliver
        self._spill_path = spill_path
        self.interval = interval
        self.retry_interval = retry_interval
        self.chunk_size = chunk_size
        self.max_pending = max_pending
        self._items: deque[Item] = deque()
        self._in_flight: list[Item] = []
        self._sending_since: float | None = None  # when the chunk in flight was handed to `deliver`
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # in C: a wake costs the training thread one call
        self._thread: threading.Thread | None = None
        self._generation = 0  # a thread whose generation is over touches nothing (see close)
        self._closing = False
        self._delivered = 0
        self._attempts = 0
        self._retry_at = 0.0
        self.failing = False
        self.last_error: BaseException | None = None

    def put(self, item: Item) -> None:
        """Queue an item, starting the thread. While the thread runs, `put` is the queue's own append (one C
        call on the training thread)."""
        self._items.append(item)
        self._start()

    def wake(self) -> None:
        """Deliver soon, without waiting for it."""
        self._wake.put_nowait(None)

    def __len__(self) -> int:
        """Items not delivered yet (queued or being delivered)."""
        with self._lock:
            return len(self._items) + len(self._in_flight)

    def flush(self, timeout: float) -> bool:
        """Deliver everything put so far; wait at most `timeout` seconds, and no longer than one failed attempt.

        True when all of it was delivered. A failing backend is retried now rather than at its next interval;
        one stuck in an attempt for longer than `timeout` already is not waited for again.
        """
        with self._lock:
            target = self._delivered + len(self._items) + len(self._in_flight)
            if self._delivered >= target:
                return True
            attempts = self._attempts
            stuck = self._sending_since is not None and time.monotonic() - self._sending_since > timeout
        if stuck:
            return False
        self._start()
        self._retry_at = 0.0
        self.wake()
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._delivered < target:
                left = deadline - time.monotonic()
                if left <= 0 or (self.failing and self._attempts > attempts):
                    return False
                self._progress.wait(left)
        return True

    def close(self, timeout: float) -> None:
        """Deliver what is left, retrying for at most `timeout` seconds, then stop the thread and spill the rest.

        A chunk still being delivered when the time is up is spilled too, and the warning says it may also have
        arrived. A later `put` starts a new thread.
        """
        if self._items or self._in_flight:
            self._start()
        thread = self._thread
        if thread is not None:
            self._closing = True
            self._retry_at = 0.0
            self.wake()
            thread.join(timeout)
        with self._lock:
            self._generation += 1
            in_flight, left = list(self._in_flight), list(self._items)
            self._items.clear()
            self._in_flight, self._sending_since = [], None
            self._thread = None
            self._closing = False
            self.__dict__.pop("put", None)  # back to the method that starts a thread
        error = f"{type(self.last_error).__name__}: {self.last_error}" if self.last_error else "no answer in time"
        why = f"could not be delivered in {timeout:g} s (last error: {error})"
        if in_flight:
            why += f"; the first {len(in_flight)} were still being sent and may also have arrived"
        self.spill(in_flight + left, why)

    def spill(self, items: list[Item], why: str) -> None:
        """Write items to the spill file and warn exactly what they are; if that fails too, warn they are lost."""
        if not items:
            return
        path = self._spill_path()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "a") as file:
                file.write("".join(json.dumps(item, default=_jsonable) + "\n" for item in items))
        except OSError as error:
            rank_zero_warn(
                f"{self.backend}: {describe(items)} {why}, and could not be saved to {path} either ({error}). "
                "They are lost."
            )
            return
        rank_zero_warn(
            f"{self.backend}: {describe(items)} {why}. They are not in the backend; they are saved, one JSON "
            f"object per line, in {path}."
        )

    # -- the thread -----------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, args=(self._generation,), name=f"trellis-{self.backend}-delivery", daemon=True
            )
            self.put = self._items.append  # type: ignore[method-assign, assignment]
        self._thread.start()

    def _run(self, generation: int) -> None:
        """Deliver every interval (or when woken); once closing, until everything is delivered or close gives up."""
        while self._generation == generation:
            with contextlib.suppress(queue.Empty):
                self._wake.get(timeout=self.interval)
                while not self._wake.empty():
                    self._wake.get_nowait()
            if time.monotonic() >= self._retry_at:
                self._deliver_pending(generation)
            if self.failing and len(self._items) > self.max_pending:
                self._spill_overflow(generation)
            if self._closing and not self._items:
                return

    def _deliver_pending(self, generation: int) -> None:
        while True:
            with self._lock:
                if self._generation != generation or not self._items:
                    break
                chunk = [self._items.popleft() for _ in range(min(self.chunk_size, len(self._items)))]
                self._in_flight = chunk
                self._sending_since = time.monotonic()
            try:
                self._deliver(chunk)
            except Exception as error:  # any backend failure: keep the items, in order, and retry later
                self._failed(generation, chunk, error)
                return
            with self._progress:
                if self._generation != generation:
                    return
                self._in_flight, self._sending_since = [], None
                self._delivered += len(chunk)
                self._attempts += 1
                self._progress.notify_all()
        if self.failing and self._generation == generation:
            self.failing = False
            rank_zero_info(f"{self.backend} answers again: everything kept while it failed was delivered.")

    def _failed(self, generation: int, chunk: list[Item], error: BaseException) -> None:
        with self._progress:
            if self._generation != generation:
                return
            self._items.extendleft(reversed(chunk))
            self._in_flight, self._sending_since = [], None
            self.last_error = error
            if not self.failing:
                rank_zero_warn(
                    f"{self.backend} failed ({type(error).__name__}: {error}). Training goes on; {len(self._items)} "
                    f"item(s) are kept and retried every {self.retry_interval:g} s until it answers again."
                )
            self.failing = True
            self._retry_at = time.monotonic() + self.retry_interval
            self._attempts += 1
            self._progress.notify_all()

    def _spill_overflow(self, generation: int) -> None:
        with self._lock:
            if self._generation != generation:
                return
            oldest = [self._items.popleft() for _ in range(len(self._items) - self.max_pending // 2)]
            self._delivered += len(oldest)
        self.spill(oldest, f"were the oldest of more than {self.max_pending} items waiting while it failed")


def hold_file(path: str, directory: str) -> str:
    """A hard link to `path` (same name) in a new folder under `directory`, so that a file queued for upload (a
    checkpoint) survives its removal (top-k) until it is sent; the path itself where links are not possible."""
    folder = os.path.join(directory, str(time.time_ns()))
    held = os.path.join(folder, os.path.basename(path))
    try:
        os.makedirs(folder)
        os.link(path, held)
    except OSError:
        return os.path.abspath(path)
    return held


def release_file(held: str, directory: str) -> None:
    """Remove what hold_file made, once sent (a path it could not link is left alone)."""
    folder = os.path.dirname(held)
    if os.path.abspath(os.path.dirname(folder)) == os.path.abspath(directory):
        shutil.rmtree(folder, ignore_errors=True)


def describe(items: Iterable[Item]) -> str:
    """What a list of items holds, for a warning: metric rows with their steps and names, the rest by kind."""
    items = list(items)
    steps = [item["step"] for item in items if "metrics" in item]
    names = sorted({name for item in items if "metrics" in item for name in item["metrics"]})
    parts = []
    if steps:
        parts.append(f"{len(steps)} metric row(s) for steps {min(steps)}..{max(steps)} ({', '.join(names)})")
    others: dict[str, int] = {}
    for item in items:
        if "metrics" not in item:
            kind = item.get("kind", "other")
            others[kind] = others.get(kind, 0) + 1
    parts += [f"{count} {kind} item(s)" for kind, count in sorted(others.items())]
    return " and ".join(parts) or "nothing"


def _jsonable(value: Any) -> Any:
    """Bytes (serialized events) as base64 text in spill files; anything else as its repr."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    return repr(value)
