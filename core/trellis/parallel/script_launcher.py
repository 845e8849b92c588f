"""Launching by re-running the user's script: `python train.py` starts the other ranks of this node.

This process becomes the node's local rank 0; each other rank is the same command with LOCAL_RANK/RANK
set. When any rank raises or dies, every rank ends within about a second: the first failure is the only
traceback shown (see trellis.parallel.failures), one line names it, and the other ranks are killed,
since they are stuck in collectives that lost a peer.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from trellis.errors import ConfigurationError
from trellis.parallel.environment import LAUNCHED_VARIABLE, LAUNCHER_PID_VARIABLE
from trellis.parallel.failures import RECORD_VARIABLE, FailureRecord, describe_exit
from trellis.parallel.ports import rendezvous_port
from trellis.preemption import PREEMPTED_EXIT_CODE

if TYPE_CHECKING:
    from trellis.roles.strategy import LaunchedCall

POLL_SECONDS = 0.05
#: how long this process's main thread may take to notice another rank's failure and unwind.
UNWIND_SECONDS = 1.0
#: the launcher running in this process, if any (the failure hook stops its children).
_launcher: ScriptLauncher | None = None
_following_launcher = False
_hook_installed = False


def script_command() -> list[str]:
    """The command that started this process, to start the other ranks with."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        module = spec.name.removesuffix(".__main__")
        return [sys.executable, "-m", module, *sys.argv[1:]]
    if not sys.argv or sys.argv[0] in ("", "-c") or not os.path.exists(sys.argv[0]):
        raise ConfigurationError(
            "this strategy starts the other processes by re-running your script, but this process has no script "
            "(an interactive session or a notebook): use strategy='ddp_notebook' (or 'ddp_spawn'), or run a script"
        )
    return [sys.executable, *sys.argv]


class ScriptLauncher:
    """Starts local ranks 1..N-1 of this node as copies of this script, then runs the call here as rank 0."""

    def __init__(self, num_devices: int, num_nodes: int) -> None:
        self.num_devices, self.num_nodes = num_devices, num_nodes
        self.children: dict[int, subprocess.Popen] = {}
        self.record: FailureRecord | None = None
        self.rank = 0
        self._stop_lock = threading.Lock()
        self._stopped = False

    def launch(self, call: LaunchedCall) -> Any:
        if self.record is None:
            self._start_children()
        try:
            return call()
        except SystemExit:  # preemption (every rank saved and exits 75) or the user's own exit: not a failure
            raise
        except BaseException:
            assert self.record is not None  # set by _start_children
            self.record.settle_and_claim(f"rank {self.rank}", f"rank {self.rank} failed")
            self.stop_group()
            raise

    def _start_children(self) -> None:
        global _launcher
        node_rank = int(os.environ.get("NODE_RANK", "0"))
        address = os.environ.get("MASTER_ADDR", "127.0.0.1")
        if self.num_nodes > 1 and "MASTER_PORT" not in os.environ:
            raise ConfigurationError(
                f"num_nodes={self.num_nodes} without a cluster launcher needs the same MASTER_ADDR and MASTER_PORT, "
                "and NODE_RANK=0..num_nodes-1, exported on every node; or launch with torchrun or srun"
            )
        port = rendezvous_port(address, check_free=node_rank == 0)
        command = script_command()
        self.rank = node_rank * self.num_devices
        self.record = FailureRecord.create()
        os.environ.update({
            "MASTER_ADDR": address,
            "MASTER_PORT": str(port),
            "NODE_RANK": str(node_rank),
            "WORLD_SIZE": str(self.num_devices * self.num_nodes),
            "LOCAL_RANK": "0",
            "RANK": str(self.rank),
            LAUNCHED_VARIABLE: "1",
            LAUNCHER_PID_VARIABLE: str(os.getpid()),
            RECORD_VARIABLE: self.record.path,
        })
        for local_rank in range(1, self.num_devices):
            environment = {**os.environ, "LOCAL_RANK": str(local_rank), "RANK": str(self.rank + local_rank)}
            self.children[local_rank] = subprocess.Popen(command, env=environment)
        _launcher = self
        threading.Thread(target=self._watch_children, name="trellis-launcher-watch", daemon=True).start()
        atexit.register(self._at_exit)

    def _watch_children(self) -> None:
        """When a child fails, stop every rank; this process ends within UNWIND_SECONDS even if it is blocked."""
        record = self.record
        assert record is not None  # started after it is made
        while not self._stopped:
            for local_rank, child in list(self.children.items()):
                code = child.poll()
                if code in (None, 0, PREEMPTED_EXIT_CODE):  # preempted ranks exit together once the checkpoint is saved
                    continue
                detail = ", without a Python traceback" if code < 0 else ""
                record.claim(f"rank {self.rank + local_rank}",
                             f"local rank {local_rank} (pid {child.pid}) {describe_exit(code)}{detail}")
                self.stop_group()
                time.sleep(UNWIND_SECONDS)  # the main thread's collective fails and the failure hook ends us
                record.remove()
                os._exit(code if code > 0 else 1)
            time.sleep(POLL_SECONDS)

    def stop_group(self) -> None:
        """Kill every other rank of this node (they are stuck in collectives) and say once why."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        assert self.record is not None  # children exist only once it is made
        cause = self.record.cause()
        for local_rank, child in self.children.items():  # the failed rank prints its traceback, then exits
            if cause == f"rank {self.rank + local_rank}":
                try:
                    child.wait(timeout=UNWIND_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
        children = list(self.children.values())
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
        for child in children:
            child.wait()
        print(f"[trellis] {self.record.summary()}; every rank was stopped", file=sys.stderr, flush=True)

    def _at_exit(self) -> None:
        """Let the other ranks finish the script (or stop them after a failure), then drop the record."""
        assert self.record is not None  # registered after it is made
        if self.record.cause() is not None:
            self.stop_group()
        for child in list(self.children.values()):
            child.wait()
        self.record.remove()


def follow_launcher() -> None:
    """In a process a Trellis launcher started: exit when the launcher is gone instead of waiting in a collective."""
    global _following_launcher
    launcher = int(os.environ.get(LAUNCHER_PID_VARIABLE, "0"))
    if _following_launcher or not launcher or launcher == os.getpid():
        return
    _following_launcher = True
    record = FailureRecord.of_this_group()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(POLL_SECONDS)
        summary = f"the launching process (pid {launcher}) died"
        if record is None or record.claim("launcher", summary):  # the record stays: other ranks may still look
            print(f"[trellis] {summary}; exiting", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=watch, name="trellis-launcher-follow", daemon=True).start()


def end_at_first_failure(rank: int) -> None:
    """In every process of a script-launched group, once it joined the process group: an uncaught exception
    is shown only when this rank failed first, and then the process ends at once.

    Installed after joining, so that it runs outermost (torch's hook, which prefixes "[rankN]:", prints
    inside it). Ending skips the interpreter's teardown, which takes seconds with torch loaded and which
    the group must not wait for: what a failed run must finish (loggers, checkpoint writes) was finished
    by the Trainer as the exception passed; logging's handlers are flushed here.
    """
    global _hook_installed
    record = FailureRecord.of_this_group()
    if record is None or _hook_installed:
        return
    _hook_installed = True
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if record.settle_and_claim(f"rank {rank}", f"rank {rank} failed"):
            previous(kind, value, traceback)
        if _launcher is not None:
            _launcher.stop_group()
            record.remove()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(1)

    sys.excepthook = hook
