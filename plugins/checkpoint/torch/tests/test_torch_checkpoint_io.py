"""Atomic writes, safe loading and clear errors of the torch checkpoint plugin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from trellis.errors import CheckpointError
from trellis_torch import TorchCheckpointIO

WRITER = """
import sys, torch
from trellis_torch import TorchCheckpointIO
io = TorchCheckpointIO(async_save=sys.argv[2] == "async")
version = 0
while True:
    version += 1
    io.save_checkpoint({"version": version, "weights": torch.full((4_000_000,), float(version))}, sys.argv[1])
    print(version, flush=True)
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_reader_never_sees_a_partial_file_when_the_writer_is_killed_mid_write(tmp_path, mode):
    path = tmp_path / "model.ckpt"
    io = TorchCheckpointIO()
    for attempt in range(3):
        writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path), mode],
                                  stdout=subprocess.PIPE, text=True)
        # the second save returns only once the first write is complete (an async save waits for the last)
        saved = [writer.stdout.readline(), writer.stdout.readline()]
        assert all(line.strip() for line in saved), "the writer saved nothing"
        time.sleep(0.05 + 0.07 * attempt)  # land somewhere inside a later write
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        checkpoint = io.load_checkpoint(path)
        assert torch.equal(checkpoint["weights"], torch.full((4_000_000,), float(checkpoint["version"])))
    leftovers = [name for name in os.listdir(tmp_path) if name != "model.ckpt"]
    assert all(name.endswith(".tmp") for name in leftovers)  # temporaries of killed writes, removed by the next run


def test_saving_replaces_the_previous_checkpoint_only_when_complete(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "model.ckpt"
    io.save_checkpoint({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        io.save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert io.load_checkpoint(path, weights_only=False) == {"step": 1}
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_truncated_file_is_refused_with_a_clear_error(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "model.ckpt"
    io.save_checkpoint({"weights": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is truncated"):
        io.load_checkpoint(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        TorchCheckpointIO().load_checkpoint(tmp_path / "absent.ckpt")


class Arbitrary:
    """A type no allowlist knows: loading it would need arbitrary code."""

    def __init__(self) -> None:
        self.value = 3


def test_loading_is_weights_only_and_says_how_to_opt_in_for_a_trusted_file(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "model.ckpt"
    io.save_checkpoint({"object": Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="Arbitrary.*weights_only=False"):
        io.load_checkpoint(path)
    assert io.load_checkpoint(path, weights_only=False)["object"].value == 3


def test_hyperparameter_namespaces_load_safely(tmp_path):
    import argparse

    io = TorchCheckpointIO()
    io.save_checkpoint({"hyper_parameters": {"args": argparse.Namespace(lr=0.1)}}, tmp_path / "h.ckpt")
    assert io.load_checkpoint(tmp_path / "h.ckpt")["hyper_parameters"]["args"].lr == 0.1


def test_exists_and_remove(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "model.ckpt"
    io.save_checkpoint({}, path)
    assert io.exists(path)
    io.remove_checkpoint(path)
    assert not io.exists(path)
