"""Writes killed mid-save leave temporaries; the next start or resume removes them, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from trellis_torch import TorchCheckpointIO
from trellis_torch.temporaries import EMPTY_GRACE_S

#: saves ever newer versions of a 16 MB checkpoint until killed, printing each completed version.
WRITER = """
import sys, torch
from trellis_torch import TorchCheckpointIO
io = TorchCheckpointIO(async_save=sys.argv[2] == "async")
for version in range(1, 10_000):
    io.save_checkpoint({"version": version, "weights": torch.full((4_000_000,), float(version))}, sys.argv[1])
    print(version, flush=True)
"""

#: holds a temporary open and locked, as a write in progress does, until killed.
HOLDER = """
import sys, time
from trellis_torch import temporaries
file, path = temporaries.create(sys.argv[1])
file.write(b"partial checkpoint bytes")
file.flush()
print(path, flush=True)
time.sleep(600)
"""

#: what a new run does first in a directory: save (start) or load (resume), in a process of its own.
NEW_RUN = """
import sys
from trellis_torch import TorchCheckpointIO
io = TorchCheckpointIO(async_save=sys.argv[3] == "async")
if sys.argv[2] == "save":
    io.save_checkpoint({"version": "new run"}, sys.argv[1])
    io.teardown()
else:
    print(io.load_checkpoint(sys.argv[1])["version"])
"""

#: files a user may keep beside checkpoints, some looking much like ours: none may be touched.
OTHER_FILES = [
    "notes.tmp",
    "model.ckpt.bak",
    ".model.ckpt.tmp",
    ".model.ckpt.trellis-123.tmp",
    ".model.ckpt.trellis-0123456789abcdef.tmp.keep",
    ".notes.txt.abcd1234.tmp",
    "model.ckpt.0123456789abcdef.tmp",
]


def _kill_writer_mid_save(path: Path, mode: str, delay: float) -> None:
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path), mode],
                              stdout=subprocess.PIPE, text=True)
    # the second save returns only once the first write is complete (an async save waits for the last)
    assert writer.stdout.readline().strip() and writer.stdout.readline().strip(), "the writer saved nothing"
    time.sleep(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=60)


def _new_run(path: Path, action: str, mode: str = "sync") -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(NEW_RUN), str(path), action, mode],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _temporaries(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".trellis-" in name and name.endswith(".tmp")
                  and name not in OTHER_FILES and (directory / name).is_file())


def _leave_temporaries_of_killed_writes(directory: Path, mode: str = "sync") -> None:
    """Kill writers mid-save until one leaves a temporary (each writer's first save removes the last one's)."""
    for attempt in range(8):
        _kill_writer_mid_save(directory / "model.ckpt", mode, 0.02 + 0.03 * attempt)
        if _temporaries(directory):
            return
    raise AssertionError(f"eight kills mid-save left no temporary: {os.listdir(directory)}")


def _plant_other_files(directory: Path) -> dict[str, bytes]:
    contents = {}
    for name in OTHER_FILES:
        contents[name] = f"user data in {name}".encode()
        (directory / name).write_bytes(contents[name])
    os.mkdir(directory / ".model.ckpt.trellis-aaaaaaaaaaaaaaaa.tmp")  # a directory named like ours
    nested = directory / "archive"
    nested.mkdir()
    nested_temporary = "archive/.model.ckpt.trellis-bbbbbbbbbbbbbbbb.tmp"
    contents[nested_temporary] = b"in a subdirectory: not ours to clean"
    (directory / nested_temporary).write_bytes(contents[nested_temporary])
    return contents


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_first_save_of_a_new_run_removes_what_killed_writes_left_and_nothing_else(tmp_path, mode):
    _leave_temporaries_of_killed_writes(tmp_path, mode)
    others = _plant_other_files(tmp_path)
    _new_run(tmp_path / "other.ckpt", "save", mode)
    assert _temporaries(tmp_path) == []
    for name, content in others.items():
        assert (tmp_path / name).read_bytes() == content, f"{name} was changed or removed"
    assert (tmp_path / ".model.ckpt.trellis-aaaaaaaaaaaaaaaa.tmp").is_dir()
    assert TorchCheckpointIO().load_checkpoint(tmp_path / "model.ckpt")["version"] >= 1


def test_resuming_removes_them_and_loads_the_last_complete_checkpoint(tmp_path):
    _leave_temporaries_of_killed_writes(tmp_path)
    assert int(_new_run(tmp_path / "model.ckpt", "load")) >= 1
    assert os.listdir(tmp_path) == ["model.ckpt"]
    checkpoint = TorchCheckpointIO().load_checkpoint(tmp_path / "model.ckpt")
    assert torch.equal(checkpoint["weights"], torch.full((4_000_000,), float(checkpoint["version"])))


def test_a_write_in_progress_in_another_process_is_never_removed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), str(tmp_path / "model.ckpt")],
                              stdout=subprocess.PIPE, text=True)
    try:
        temporary = Path(holder.stdout.readline().strip())
        io = TorchCheckpointIO()
        io.save_checkpoint({"step": 1}, tmp_path / "model.ckpt")
        io.load_checkpoint(tmp_path / "model.ckpt")
        assert temporary.exists(), "the temporary of a live writer was removed"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    TorchCheckpointIO().load_checkpoint(tmp_path / "model.ckpt")
    assert not temporary.exists(), "the writer is dead, its temporary should be gone"


def test_an_empty_unlocked_temporary_of_this_process_gets_a_grace_period(tmp_path):
    # a writer between creating its temporary and locking it looks like this
    temporary = tmp_path / ".model.ckpt.trellis-0123456789abcdef.tmp"
    temporary.write_bytes(b"")
    io = TorchCheckpointIO()
    io.save_checkpoint({"step": 1}, tmp_path / "model.ckpt")
    assert temporary.exists()
    old = time.time() - EMPTY_GRACE_S - 1
    os.utime(temporary, (old, old))
    io.load_checkpoint(tmp_path / "model.ckpt")
    assert not temporary.exists()


def test_an_empty_temporary_from_before_this_process_is_stale_at_once(tmp_path):
    temporary = tmp_path / ".model.ckpt.trellis-0123456789abcdef.tmp"
    temporary.write_bytes(b"")
    _new_run(tmp_path / "model.ckpt", "save")
    assert not temporary.exists()


def test_temporaries_named_by_earlier_versions_are_removed_too(tmp_path):
    legacy = [".model.ckpt.k2j_x9a1.tmp", ".weights.pt.abcdefgh.tmp", ".epoch=3-step=40.ckpt.0z9y8x7w.tmp"]
    for name in legacy:
        (tmp_path / name).write_bytes(b"PK\x03\x04 partial")
    io = TorchCheckpointIO()
    io.save_checkpoint({"step": 1}, tmp_path / "model.ckpt")
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_the_asynchronous_writer_passes_the_kits_kill_check():
    from trellis.testing import Subject, Target, checks_for, run_check

    kill_check = next(check for check in checks_for("checkpoint_io") if check.id == "kill_mid_save")
    run_check(kill_check, Subject(Target.parse("checkpoint_io:torch_async")))


def test_a_write_of_this_process_is_safe_even_where_locks_do_not_separate_threads(tmp_path, monkeypatch):
    from trellis_torch import temporaries

    file, path = temporaries.create(str(tmp_path / "model.ckpt"))
    file.write(b"half a checkpoint")
    file.flush()
    # network filesystems that emulate flock with POSIX locks grant a second lock inside the same process
    monkeypatch.setattr(temporaries, "_lock", lambda descriptor, wait: True)
    assert temporaries.remove_stale(str(tmp_path)) == [] and os.path.exists(path)
    file.close()
    temporaries.finished(path)
    assert temporaries.remove_stale(str(tmp_path)) == [path]
