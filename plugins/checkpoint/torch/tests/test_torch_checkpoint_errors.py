"""Every way a checkpoint fails to save or load names the file, what is wrong and the fix.

A damaged file is never called unsafe, so nobody is steered to weights_only=False for it.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

from trellis.errors import CheckpointError
from trellis_torch import TorchCheckpointIO


def _saved(tmp_path, name="model.ckpt"):
    path = tmp_path / name
    TorchCheckpointIO().save_checkpoint({"state_dict": {"weight": torch.randn(2000)}, "epoch": 3}, path)
    return path


def _load_error(path) -> str:
    with pytest.raises(CheckpointError) as caught:
        TorchCheckpointIO().load_checkpoint(path)
    message = str(caught.value)
    assert repr(str(path)) in message, "the message must name the file"
    return message


def test_a_file_cut_anywhere_is_called_truncated_and_never_unsafe(tmp_path):
    data = _saved(tmp_path).read_bytes()
    cut = tmp_path / "cut.ckpt"
    for length in [*range(1, len(data), 331), len(data) - 1]:
        cut.write_bytes(data[:length])
        message = _load_error(cut)
        assert "is truncated" in message and "another checkpoint" in message, message
        assert "weights_only" not in message


def test_an_empty_file_says_so(tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    message = _load_error(empty)
    assert "is empty (0 bytes)" in message and "weights_only" not in message


def test_random_bytes_are_not_a_torch_file_and_never_called_unsafe(tmp_path):
    noise = tmp_path / "noise.ckpt"
    generator = random.Random(0)
    for _ in range(20):
        noise.write_bytes(generator.randbytes(generator.randrange(1, 20_000)))
        message = _load_error(noise)
        assert "not a file torch.save writes" in message and "weights_only" not in message, message


def test_a_damaged_part_is_found_by_its_checksum(tmp_path):
    path = _saved(tmp_path)
    with zipfile.ZipFile(path) as archive:
        pickle_part = next(info for info in archive.infolist() if info.filename.endswith("data.pkl"))
    data = bytearray(path.read_bytes())
    start = pickle_part.header_offset + 30 + len(pickle_part.filename) + len(pickle_part.extra)
    data[start:start + pickle_part.compress_size] = b"\xff" * pickle_part.compress_size
    path.write_bytes(bytes(data))
    message = _load_error(path)
    assert "fails its checksum" in message and "data.pkl" in message and "weights_only" not in message, message


class Arbitrary:
    """A type no allowlist knows: loading it would need arbitrary code."""


def test_an_object_that_would_run_code_is_named_with_the_opt_in_for_a_trusted_file(tmp_path):
    path = tmp_path / "code.ckpt"
    TorchCheckpointIO().save_checkpoint({"state_dict": {}, "object": Arbitrary()}, path)
    message = _load_error(path)
    assert f"{__name__}.Arbitrary" in message or "Arbitrary" in message
    assert "weights_only=False" in message and "add_safe_globals" in message


def test_a_plain_tensor_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.randn(3), path)
    message = _load_error(path)
    assert "holds a Tensor, not a checkpoint" in message and "torch.load(path)" in message


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
@pytest.mark.parametrize("async_save", [False, True])
def test_checkpoints_get_the_permissions_the_umask_gives_like_torch_save(tmp_path, umask, mode, async_save):
    previous = os.umask(umask)
    try:
        io = TorchCheckpointIO(async_save=async_save)
        io.save_checkpoint({"step": 1}, tmp_path / "model.ckpt")
        io.teardown()
        torch.save({"step": 1}, tmp_path / "plain.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "model.ckpt").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "plain.pt").st_mode) == mode


#: saves a small checkpoint, then one too big for the filesystem; prints the error and what is left.
FILL_THE_DISK = """
import os, sys, torch
from trellis.errors import CheckpointError
from trellis_torch import TorchCheckpointIO
path = os.path.join(sys.argv[1], "model.ckpt")
io = TorchCheckpointIO(async_save=sys.argv[2] == "async")
io.save_checkpoint({"state_dict": {"weight": torch.ones(1000)}, "step": 1}, path)
io.teardown()
try:
    io.save_checkpoint({"state_dict": {"weight": torch.ones(4_000_000)}, "step": 2}, path)
    io.teardown()
except CheckpointError as error:
    print("ERROR", error)
print("LEFT", sorted(os.listdir(sys.argv[1])))
print("STEP", io.load_checkpoint(path)["step"])
"""


def _on_a_full_disk(directory, script: str, *arguments: str) -> tuple[str, str]:
    """Run `script` with a 1 MB filesystem mounted at `directory` (a private tmpfs); else under a 1 MB file-size
    limit (RLIMIT_FSIZE), where mounting is not allowed. Returns (stdout, how)."""
    command = [sys.executable, "-c", textwrap.dedent(script), str(directory), *arguments]
    if shutil.which("unshare"):
        namespace = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
        mounted = ["unshare", *namespace, "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"', str(directory), *command]
        done = subprocess.run(mounted, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return done.stdout, "tmpfs"
    limited = textwrap.dedent("""
        import resource, signal, runpy, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
        sys.argv = sys.argv[1:]
        exec(sys.argv[0])
    """)
    done = subprocess.run([sys.executable, "-c", limited, textwrap.dedent(script), str(directory), *arguments],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout, "rlimit"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_full_disk_is_named_with_the_fix_and_the_previous_checkpoint_survives(tmp_path, mode):
    output, how = _on_a_full_disk(tmp_path, FILL_THE_DISK, mode)
    error = next(line for line in output.splitlines() if line.startswith("ERROR"))
    assert "model.ckpt" in error and "intact" in error
    if how == "tmpfs":
        assert "the disk is full" in error and "free space in" in error and "MB free" in error
    else:
        assert "size limit" in error and "ulimit -f" in error
    assert "LEFT ['model.ckpt']" in output, "a failed write must not leave its temporary behind"
    assert "STEP 1" in output, "the previous checkpoint must stay loadable"
