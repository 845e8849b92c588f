"""What a logger owes a backend that can fail: kept in order, delivered when it can, never silently lost."""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from trellis.utils.rank_zero import rank_zero_info, rank_zero_warn

Item = dict[str, Any]


class PendingItems:
    """A queue of JSON-able items (metric rows, params, artifact paths) for one backend.

    `flush` hands the oldest items to `deliver` in chunks and forgets a chunk only once `deliver`
    returned, so a backend that is down (a stopped server, a full disk) costs one warning, not the
    metrics: the next flush retries. Deliveries must be safe to repeat (a chunk may be retried after
    a partial failure). `spill` writes what could never be delivered to a file and says what it was.
    """

    def __init__(self, backend: str, deliver: Callable[[list[Item]], None], chunk_size: int = 500) -> None:
        self.backend = backend
        self._deliver = deliver
        self._chunk_size = chunk_size
        self._items: deque[Item] = deque()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self.failing = False
        self.last_error: BaseException | None = None

    def add(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)

    def __len__(self) -> int:
        return len(self._items)

    def flush(self) -> bool:
        """Deliver everything pending, oldest first; False when the backend failed (nothing is dropped)."""
        with self._flushing:
            while True:
                with self._lock:
                    chunk = [self._items[index] for index in range(min(self._chunk_size, len(self._items)))]
                if not chunk:
                    break
                try:
                    self._deliver(chunk)
                except Exception as error:  # any backend failure: keep the items, retry on the next flush
                    self.last_error = error
                    if not self.failing:
                        rank_zero_warn(
                            f"{self.backend} failed ({type(error).__name__}: {error}). Training goes on; "
                            f"{len(self)} pending item(s) are kept and retried until it answers again."
                        )
                    self.failing = True
                    return False
                with self._lock:
                    for _ in chunk:
                        self._items.popleft()
            if self.failing:
                rank_zero_info(f"{self.backend} answers again: everything kept while it failed was delivered.")
            self.failing = False
            return True

    def spill(self, path: str) -> str | None:
        """Write the undelivered items to a JSON-lines file and warn exactly what they are; the path, or None."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
        if not items:
            return None
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as file:
            for item in items:
                file.write(json.dumps(item) + "\n")
        steps = [item["step"] for item in items if "step" in item]
        span = f", metric rows for steps {min(steps)}..{max(steps)}" if steps else ""
        rank_zero_warn(
            f"{self.backend} could not take {len(items)} item(s){span} "
            f"(last error: {type(self.last_error).__name__}: {self.last_error}). They are not in the backend; "
            f"they are saved, one JSON object per line, in {path}."
        )
        return path
