"""Launching by re-running the user's script: `python train.py` starts the other ranks of this node.

This process becomes local rank 0; each other rank is the same command with LOCAL_RANK/RANK set. A
watcher thread ends the whole group as soon as any rank fails, so a crash never becomes a hang.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from trellis.errors import ConfigurationError
from trellis_ddp.environment import LAUNCHED_VARIABLE, PARENT_VARIABLE
from trellis_ddp.ports import free_port, require_free

T = TypeVar("T")
POLL_SECONDS = 0.1
TERMINATE_GRACE_SECONDS = 5.0
_watching_parent = False


def script_command() -> list[str]:
    """The command that started this process, to start the other ranks with."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        module = spec.name.removesuffix(".__main__")
        return [sys.executable, "-m", module, *sys.argv[1:]]
    if not sys.argv or sys.argv[0] in ("", "-c") or not os.path.exists(sys.argv[0]):
        raise ConfigurationError(
            "strategy='ddp' starts the other processes by re-running your script, but this process has no script "
            "(an interactive session or a notebook): use strategy='ddp_notebook' (or 'ddp_spawn'), or run a script"
        )
    return [sys.executable, *sys.argv]


class ScriptLauncher:
    """Starts local ranks 1..N-1 of this node as copies of this script, then runs the function here as rank 0."""

    def __init__(self, num_devices: int, num_nodes: int) -> None:
        self.num_devices, self.num_nodes = num_devices, num_nodes
        self.children: dict[int, subprocess.Popen] = {}
        self._failed = False
        self._stopping = False

    def launch(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self._start_children()
        try:
            return function(*args, **kwargs)
        except BaseException:
            self._failed = True
            self.terminate_children()
            raise

    def _start_children(self) -> None:
        node_rank = int(os.environ.get("NODE_RANK", "0"))
        address = os.environ.get("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" in os.environ:
            port = int(os.environ["MASTER_PORT"])
            if node_rank == 0:
                require_free(address, port)
        elif self.num_nodes > 1:
            raise ConfigurationError(
                f"num_nodes={self.num_nodes} without a cluster launcher needs the same MASTER_ADDR and MASTER_PORT, "
                "and NODE_RANK=0..num_nodes-1, exported on every node; or launch with torchrun or srun"
            )
        else:
            port = free_port(address)
        os.environ.update({
            "MASTER_ADDR": address,
            "MASTER_PORT": str(port),
            "NODE_RANK": str(node_rank),
            "WORLD_SIZE": str(self.num_devices * self.num_nodes),
            "LOCAL_RANK": "0",
            "RANK": str(node_rank * self.num_devices),
            LAUNCHED_VARIABLE: "1",
            PARENT_VARIABLE: str(os.getpid()),
        })
        command = script_command()
        for local_rank in range(1, self.num_devices):
            environment = {**os.environ, "LOCAL_RANK": str(local_rank),
                           "RANK": str(node_rank * self.num_devices + local_rank)}
            self.children[local_rank] = subprocess.Popen(command, env=environment)
        threading.Thread(target=self._watch_children, name="trellis-ddp-watcher", daemon=True).start()
        _chain_excepthook(self._on_uncaught_exception)
        atexit.register(self._wait_for_children)

    def _watch_children(self) -> None:
        """End every rank (this one included, non-zero) as soon as one child fails."""
        while self.children:
            for local_rank, child in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self.children[local_rank]
                if code != 0 and not self._stopping:
                    self.terminate_children()
                    print(
                        f"[trellis] local rank {local_rank} (pid {child.pid}) exited with code {code}; its traceback "
                        "is above. Stopping every other rank.",
                        file=sys.stderr,
                        flush=True,
                    )
                    os._exit(code if code > 0 else 1)
            time.sleep(POLL_SECONDS)

    def _on_uncaught_exception(self) -> None:
        self._failed = True
        self.terminate_children()

    def _wait_for_children(self) -> None:
        """At exit: let the other ranks finish the script (or stop them when this one failed)."""
        if self._failed:
            self.terminate_children()
        for child in list(self.children.values()):
            child.wait()

    def terminate_children(self) -> None:
        self._stopping = True
        children = list(self.children.values())
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        for child in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _chain_excepthook(callback: Callable[[], None]) -> None:
    """Run `callback` when this process dies of an uncaught exception, then print it as usual."""
    previous = sys.excepthook

    def hook(kind, value, traceback):  # noqa: ANN001
        previous(kind, value, traceback)
        callback()

    sys.excepthook = hook


def watch_parent() -> None:
    """In a launched child: exit when the launching process is gone, instead of waiting in a collective."""
    global _watching_parent
    parent = int(os.environ.get(PARENT_VARIABLE, "0"))
    if _watching_parent or not parent or parent == os.getpid():
        return
    _watching_parent = True

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        print(f"[trellis] the launching process {parent} is gone; exiting", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=watch, name="trellis-ddp-parent-watch", daemon=True).start()
