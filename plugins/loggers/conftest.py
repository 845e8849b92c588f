"""Shared by the logger plugins' tests: a tiny Module on random tensors, servers on loopback (the `kit` fixture),
and a disk that fills up for real (the `small_disk` fixture)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis


class TinyRegression(trellis.Module):
    """A linear layer on random data; logs `loss` every step and its epoch mean."""

    def __init__(self, learning_rate: float = 0.05, width: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), targets)
        self.log("loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)


def random_loader(batches: int = 8, batch_size: int = 4, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batches * batch_size, 4, generator=generator)
    return DataLoader(TensorDataset(inputs, inputs.sum(1, keepdim=True)), batch_size=batch_size)


def quiet_trainer(**flags: Any) -> trellis.Trainer:
    flags = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1, **flags}
    return trellis.Trainer(**flags)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll until ready() holds; fail with the process's output if it died or the timeout passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"{what} exited with {process.returncode} before it was ready:\n{output}")
        if ready():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} was not ready after {timeout} s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    """Terminate a server we started (and its children: it leads its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    if process.stdout:
        process.stdout.close()


#: A fit that dies by SIGKILL at a step, after asking its logger to write what it has (as its interval would).
_KILLED_FIT = """
import os, signal, sys
import torch, trellis
sys.path.insert(0, {here!r})
from conftest import TinyRegression, random_loader, quiet_trainer
from trellis.callbacks.model_checkpoint import ModelCheckpoint

class Kill(trellis.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == {kill_at}:
            trainer.logger.save()
            os.kill(os.getpid(), signal.SIGKILL)

callbacks = [Kill()]
if {checkpoint_at}:
    callbacks.append(ModelCheckpoint(every_n_train_steps={checkpoint_at}, save_top_k=-1, filename="{{step}}"))
torch.manual_seed(0)
trainer = quiet_trainer(logger={logger!r}, max_steps=8, default_root_dir={root!r}, callbacks=callbacks)
trainer.fit(TinyRegression(), random_loader())
"""


def run_killed(root: Any, logger: str, kill_at: int, checkpoint_at: int = 0) -> None:
    """A fit with `logger` in `root`, killed by SIGKILL at step `kill_at` (checkpoints every `checkpoint_at`)."""
    code = _KILLED_FIT.format(here=os.path.dirname(__file__), logger=logger, kill_at=kill_at,
                              checkpoint_at=checkpoint_at, root=str(root))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    return SimpleNamespace(
        TinyRegression=TinyRegression, random_loader=random_loader, quiet_trainer=quiet_trainer,
        free_port=free_port, wait_until=wait_until, http_ok=http_ok, stop=stop, run_killed=run_killed,
    )


#: Runs first in a `small_disk` script: DISK is a directory on a full filesystem, make_room() frees it.
_TMPFS_PREAMBLE = """
import os, sys
DISK = sys.argv[1]
def make_room():
    os.remove(os.path.join(DISK, "filler"))
"""
_RLIMIT_PREAMBLE = """
import os, resource, signal, sys, tempfile
import torch._dynamo  # the limit is process-wide: what writes files of its own is set up before it
tempfile.gettempdir()
DISK = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
_, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, _hard))
def make_room():
    resource.setrlimit(resource.RLIMIT_FSIZE, (_hard, _hard))
"""


#: A 10-step fit whose logger writes to the full DISK; make_room() at step free_at (-1: never). It prints the
#: steps done, what the logger reads back (the filesystem dies with the process) and the warnings.
_FULL_DISK_FIT = """
import json, warnings
import torch, trellis
from torch.utils.data import DataLoader, TensorDataset

class Model(trellis.Module):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)
    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        self.log("loss", loss)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

class FreeTheDisk(trellis.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer.logger.save()  # every step tries to write, as the logger's interval would
        if trainer.global_step == {free_at}:
            make_room()

torch.manual_seed(0)
inputs = torch.randn(40, 4)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    trainer = trellis.Trainer(logger={logger!r}, max_steps=10, log_every_n_steps=1, enable_progress_bar=False,
                              enable_model_summary=False, enable_checkpointing=False, default_root_dir=DISK,
                              callbacks=[FreeTheDisk()])
    trainer.fit(Model(), DataLoader(TensorDataset(inputs, inputs.sum(1, keepdim=True)), batch_size=4))
print(json.dumps({{"global_step": trainer.global_step, "points": trainer.logger.read_back(),
                  "warnings": [str(warning.message) for warning in caught
                               if not issubclass(warning.category, DeprecationWarning)]}}))
"""


class SmallDisk:
    """Runs Python code in a process where DISK is full: a 1 MiB tmpfs filled to the last byte, mounted in a
    private mount namespace (unshare), or where unshare is not allowed, a file-size limit of 0 bytes
    (RLIMIT_FSIZE: every write fails with EFBIG, as on a full disk, until make_room() lifts it)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.mode = "tmpfs" if _can_mount_tmpfs(root) else "RLIMIT_FSIZE"

    def run(self, code: str, timeout: float = 300) -> subprocess.CompletedProcess:
        disk = os.path.join(self.root, "disk")
        os.makedirs(disk, exist_ok=True)
        script = os.path.join(self.root, "on_full_disk.py")
        preamble = _TMPFS_PREAMBLE if self.mode == "tmpfs" else _RLIMIT_PREAMBLE
        with open(script, "w") as file:
            file.write(preamble + textwrap.dedent(code))
        python = [sys.executable, script, disk]
        if self.mode == "tmpfs":
            fill = f"dd if=/dev/zero of={disk}/filler bs=4k >/dev/null 2>&1; "
            command = ["unshare", "-rm", "sh", "-c",
                       f"mount -t tmpfs -o size=1m tmpfs {disk} && {fill}exec \"$0\" \"$@\"", *python]
        else:
            command = python
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def fit(self, logger: str, free_at: int) -> dict[str, Any]:
        """The outcome of a 10-step fit with `logger` on the full disk (see _FULL_DISK_FIT)."""
        result = self.run(_FULL_DISK_FIT.format(logger=logger, free_at=free_at))
        assert result.returncode == 0, f"[{self.mode}] {result.stderr[-3000:]}"
        return json.loads(result.stdout.strip().splitlines()[-1])


def _can_mount_tmpfs(root: str) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = os.path.join(root, "probe")
    os.makedirs(probe, exist_ok=True)
    result = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                            capture_output=True, timeout=30)
    return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path) -> SmallDisk:
    return SmallDisk(str(tmp_path))
