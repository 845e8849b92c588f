"""Test helpers for multi-process plugins: a command in a process group of its own (free of any outer
launcher's variables, always killed afterwards), watched until its last process ends, and a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from trellis.parallel.environment import LAUNCHED_VARIABLE, LAUNCHER_PID_VARIABLE
from trellis.parallel.failures import RECORD_VARIABLE
from trellis.parallel.ports import free_port

__all__ = ["LAUNCHER_VARIABLES", "WatchedRun", "free_port", "group_running", "kill_group", "run", "run_watched"]

#: variables of an outer launcher that must not leak into the runs started here.
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
                      "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "LOCAL_SIZE", "CROSS_RANK", LAUNCHED_VARIABLE,
                      LAUNCHER_PID_VARIABLE, RECORD_VARIABLE)


def run(command: list[str], timeout: float = 90, **variables: str) -> subprocess.CompletedProcess:
    """Run a command in its own process group; whatever it leaves behind is killed."""
    process = _start(command, variables)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        kill_group(process.pid)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass



@dataclass
class WatchedRun:
    """What `run_watched` saw: the exit code, the output, when each stderr line arrived and when the group ended."""

    returncode: int | None
    stdout: str
    #: (time.time() at arrival, line without its newline), in order.
    stderr_lines: list[tuple[float, str]] = field(default_factory=list)
    #: time.time() when no process of the group was running any more (None: it outlived the timeout).
    ended_at: float | None = None

    @property
    def stderr(self) -> str:
        return "".join(f"{line}\n" for _, line in self.stderr_lines)


def run_watched(command: list[str], timeout: float = 90, **variables: str) -> WatchedRun:
    """Run a command in its own process group until every process of the group has ended (or the timeout);
    whatever is left is killed. Times are wall-clock, comparable with time.time() printed by the processes."""
    process = _start(command, variables)
    lines: list[tuple[float, str]] = []
    stdout: list[str] = []
    out, err = process.stdout, process.stderr
    assert out is not None and err is not None  # pipes
    readers = [
        threading.Thread(target=lambda: lines.extend((time.time(), line.rstrip("\n")) for line in err)),
        threading.Thread(target=lambda: stdout.append(out.read())),
    ]
    for reader in readers:
        reader.start()
    deadline, ended_at = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            process.poll()  # reap our own child, so that it does not count as running
            if not group_running(process.pid):
                ended_at = time.time()
                break
            time.sleep(0.01)
    finally:
        kill_group(process.pid)
        for reader in readers:
            reader.join()
        process.wait()
    return WatchedRun(process.returncode, "".join(stdout), lines, ended_at)


def group_running(group: int) -> bool:
    """Whether a process of the process group is alive and not a zombie (an orphaned zombie has ended; its
    reaping is up to init). Reads /proc (Linux)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                state, _, pgid = stat.read().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(pgid) == group and state != "Z":
            return True
    return False


def _start(command: list[str], variables: dict[str, str]) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items()
                   if key not in LAUNCHER_VARIABLES and not key.startswith("SLURM_")}
    environment.update(variables)
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
