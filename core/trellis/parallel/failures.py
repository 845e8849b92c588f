"""Which process of a launched group failed first, so that its traceback is the one shown, and only once.

When one rank fails, the others fail after it: their collectives lose a peer and raise errors of their
own, which are noise. The first to claim the group's failure record is the cause. A rank whose own error
may be such a consequence waits briefly (SETTLE_SECONDS) for a claim from elsewhere before it claims.
A claim is the exclusive creation of one file that every process of the group knows by name; the file
exists only once a rank failed, and the launching process removes it when the group has ended.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import tempfile
import time

#: names the group's failure record for the processes a script launcher starts.
RECORD_VARIABLE = "TRELLIS_FAILURE_RECORD"
#: how long a failing rank waits for news of an earlier failure before it takes the blame.
SETTLE_SECONDS = 0.3
_POLL_SECONDS = 0.02


class FailureRecord:
    """One claim per group: who failed first, and the one line that says so."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls) -> FailureRecord:
        """A new record for a group, under an unguessable name in the temporary directory (nothing is written
        until a rank fails)."""
        return cls(os.path.join(tempfile.gettempdir(), f"trellis-failure-{os.getpid()}-{secrets.token_hex(8)}"))

    @classmethod
    def of_this_group(cls) -> FailureRecord | None:
        path = os.environ.get(RECORD_VARIABLE)
        return cls(path) if path else None

    def claim(self, who: str, summary: str) -> bool:
        """Record `who` as the cause; True when it is (this call or an earlier one by the same `who`)."""
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return self.cause() == who
        except OSError:  # no record can be kept here: every failing rank shows its traceback rather than none
            return True
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(f"{who}\n{summary}")
        return True

    def settle_and_claim(self, who: str, summary: str) -> bool:
        """Claim after waiting up to SETTLE_SECONDS for another process's claim; True when `who` is the cause."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while self.cause() is None and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
        return self.claim(who, summary)

    def cause(self) -> str | None:
        """Who claimed, None before anyone did (or while the claimant is still writing)."""
        lines = self._lines()
        return lines[0] if len(lines) == 2 else None

    def summary(self) -> str:
        lines = self._lines()
        return lines[1] if len(lines) == 2 else "a rank failed"

    def _lines(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8") as file:
                return file.read().split("\n", 1)
        except OSError:
            return []

    def remove(self) -> None:
        """Once every process of the group has ended (only the launching process knows)."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


def describe_exit(code: int) -> str:
    """"exited with code 3" or "was killed by SIGKILL" for a process's return code."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"
