"""DCPCheckpointIO: sharded, atomic, asynchronous checkpoints, in one process and in two real gloo processes."""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import random
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trellis.errors import CheckpointError
from trellis.testing import Subject, Target, checks_for, run_check
from trellis.testing.processes import run
from trellis_dcp import DCPCheckpointIO

SCRIPTS = Path(__file__).parent / "scripts"
DDP_TESTS = Path(__file__).parents[3] / "accelerators" / "ddp" / "tests"


def checkpoint() -> dict:
    """The shapes a Trellis checkpoint has: weights, a torch optimizer state (int keys), per-process rest."""
    return {
        "format_version": 1,
        "global_step": 7,
        "state_dict": {"net.weight": torch.randn(4, 3), "net.bias": torch.randn(4)},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.randn(4, 3)}},
                              "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]}],
        "rng_states": {"torch": torch.get_rng_state()},
        "hyper_parameters": {"options": argparse.Namespace(width=3)},
    }


def assert_same(expected, actual) -> None:
    if isinstance(expected, torch.Tensor):
        assert torch.equal(expected, actual)
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys()
        for key in expected:
            assert_same(expected[key], actual[key])
    elif isinstance(expected, (list, tuple)):
        assert type(expected) is type(actual) and len(expected) == len(actual)
        for first, second in zip(expected, actual):
            assert_same(first, second)
    else:
        assert expected == actual


# -- one process ----------------------------------------------------------------------------------
def test_round_trip_keeps_every_entry_and_type(tmp_path: Path) -> None:
    io, saved = DCPCheckpointIO(), checkpoint()
    io.save_checkpoint(saved, tmp_path / "last.ckpt")
    assert io.exists(tmp_path / "last.ckpt")
    assert_same(saved, io.load_checkpoint(tmp_path / "last.ckpt"))


def test_is_chosen_by_name_and_collective() -> None:
    from trellis.plugin import load_plugin

    assert load_plugin("checkpoint_io", "dcp") is DCPCheckpointIO
    assert DCPCheckpointIO.sharded


def test_a_save_killed_before_its_commit_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    io, first = DCPCheckpointIO(), checkpoint()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(first, path)
    # What a kill mid-save leaves: a half-written staging directory beside the checkpoint.
    leftover = tmp_path / ".last.ckpt.dcp-0123456789ab"
    leftover.mkdir()
    (leftover / "__0_0.distcp").write_bytes(b"partial")
    assert_same(first, io.load_checkpoint(path))
    second = checkpoint()
    io.save_checkpoint(second, path)
    assert_same(second, io.load_checkpoint(path))
    assert sorted(entry.name for entry in tmp_path.iterdir()) == sorted([os.readlink(path), "last.ckpt"])


def test_asynchronous_save_writes_the_state_as_it_was_when_saved(tmp_path: Path) -> None:
    io, saved = DCPCheckpointIO(asynchronous=True), checkpoint()
    expected = saved["state_dict"]["net.weight"].clone()
    io.save_checkpoint(saved, tmp_path / "last.ckpt")
    saved["state_dict"]["net.weight"].add_(1.0)  # training goes on while the writer works
    io.teardown()
    assert torch.equal(io.load_checkpoint(tmp_path / "last.ckpt")["state_dict"]["net.weight"], expected)


def test_remove_deletes_the_link_and_its_directory(tmp_path: Path) -> None:
    io = DCPCheckpointIO()
    io.save_checkpoint(checkpoint(), tmp_path / "epoch=0.ckpt")
    io.remove_checkpoint(tmp_path / "epoch=0.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_what_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "last.ckpt").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint written by DCPCheckpointIO"):
        DCPCheckpointIO().save_checkpoint(checkpoint(), tmp_path / "last.ckpt")


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no DCP checkpoint"):
        DCPCheckpointIO().load_checkpoint(tmp_path / "absent.ckpt")


def test_metadata_that_would_run_code_is_refused_unless_trusted(tmp_path: Path) -> None:
    io = DCPCheckpointIO()
    io.save_checkpoint(checkpoint(), tmp_path / "last.ckpt")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "last.ckpt" / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="posix.system|os.system"):
        io.load_checkpoint(tmp_path / "last.ckpt")
    assert not marker.exists()


def test_a_damaged_metadata_or_state_file_is_never_called_unsafe(tmp_path: Path) -> None:
    io = DCPCheckpointIO()
    io.save_checkpoint(checkpoint(), tmp_path / "last.ckpt")
    noise = random.Random(3)
    metadata, state = tmp_path / "last.ckpt" / ".metadata", tmp_path / "last.ckpt" / "trellis.rank0.pt"
    original = state.read_bytes()
    state.write_bytes(original[: len(original) // 2])
    with pytest.raises(CheckpointError, match="trellis.rank0.pt' is damaged or truncated") as caught:
        io.load_checkpoint(tmp_path / "last.ckpt")
    assert "weights_only" not in str(caught.value) and "another checkpoint" in str(caught.value)
    state.write_bytes(original)
    for _ in range(10):
        metadata.write_bytes(noise.randbytes(noise.randrange(1, 4000)))
        with pytest.raises(CheckpointError, match="damaged") as caught:
            io.load_checkpoint(tmp_path / "last.ckpt")
        assert "weights_only" not in str(caught.value)


def test_what_killed_saves_left_is_removed_on_the_next_start_and_resume_and_nothing_else(tmp_path: Path) -> None:
    io = DCPCheckpointIO()
    io.save_checkpoint(checkpoint(), tmp_path / "last.ckpt")
    kept = checkpoint()
    io.save_checkpoint(kept, tmp_path / "epoch=1.ckpt")
    # a save killed before its commit, one killed between making the link and renaming it, user files
    killed = [".epoch=2.ckpt.dcp-0123456789ab", ".last.ckpt.dcp-abcdef012345"]
    for name in killed:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__0_0.distcp").write_bytes(b"partial shard")
    os.symlink(".last.ckpt.dcp-abcdef012345", tmp_path / ".last.ckpt.dcp-abcdef012345.link")
    others = [".notes.dcp-xyz", "notes.txt", ".last.ckpt.dcp-0123"]
    for name in others:
        (tmp_path / name).write_text("user file")
    committed = sorted(os.listdir(tmp_path))

    DCPCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")  # a resume
    assert sorted(os.listdir(tmp_path)) == sorted(set(committed) - {*killed, ".last.ckpt.dcp-abcdef012345.link"})
    for name in others:
        assert (tmp_path / name).read_text() == "user file"

    (tmp_path / killed[0]).mkdir()
    DCPCheckpointIO().save_checkpoint(checkpoint(), tmp_path / "other.ckpt")  # a new run's first save
    assert not (tmp_path / killed[0]).exists()
    assert_same(kept, DCPCheckpointIO().load_checkpoint(tmp_path / "epoch=1.ckpt"))


def test_passes_the_kits_kill_check() -> None:
    kill_check = next(check for check in checks_for("checkpoint_io") if check.id == "kill_mid_save")
    run_check(kill_check, Subject(Target.parse("checkpoint_io:dcp")))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_files_get_the_permissions_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        DCPCheckpointIO().save_checkpoint(checkpoint(), tmp_path / "last.ckpt")
    finally:
        os.umask(previous)
    files = [Path(root, name) for root, _, names in os.walk(tmp_path / "last.ckpt") for name in names]
    assert files and all(stat.S_IMODE(os.stat(file).st_mode) == mode for file in files)


# -- two gloo processes ----------------------------------------------------------------------------
def run_ok(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run in a process group of its own (killed afterwards) and require success."""
    result = run(command, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def job(*arguments: str) -> None:
    run_ok([sys.executable, str(SCRIPTS / "dcp_job.py"), *arguments])


def assert_same_training_state(expected: dict, actual: dict) -> None:
    assert actual["global_step"] == expected["global_step"]
    assert_same(expected["model"], actual["model"])
    assert_same(expected["optimizer"]["state"], actual["optimizer"]["state"])


def test_fsdp_sharded_checkpoint_from_two_processes_resumes_on_two_and_on_one(tmp_path: Path) -> None:
    saved = tmp_path / "model.ckpt"
    job("--strategy", "fsdp", "--devices", "2", "--checkpoint", str(saved), "--report", str(tmp_path / "saved.pt"),
        "--asynchronous")
    shards = sorted(path.name for path in saved.iterdir() if path.suffix == ".distcp")
    assert shards == ["__0_0.distcp", "__1_0.distcp"], "each rank writes its own shard"
    expected = torch.load(tmp_path / "saved.pt")
    for devices in ("2", "1"):
        report = tmp_path / f"resumed-on-{devices}.pt"
        job("--strategy", "fsdp", "--devices", devices, "--checkpoint", str(saved), "--report", str(report),
            "--resume")
        assert_same_training_state(expected, torch.load(report))


def _ddp_resume_test_module():
    spec = importlib.util.spec_from_file_location("ddp_exact_resume", DDP_TESTS / "test_ddp_exact_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ddp_killed_during_asynchronous_sharded_saves_resumes_exactly_and_loads_in_one_process(tmp_path: Path) -> None:
    ddp = _ddp_resume_test_module()
    rng = random.Random(8)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    ddp.run_to_end(reference, "torch")
    for trigger, skip in [("saving", 1), ("validating", 1), ("saving", 4)]:
        ddp.run_until_killed(interrupted, "dcp-async", trigger, skip, rng)
    ddp.run_to_end(interrupted, "dcp-async")
    ddp.assert_resumed_run_matches(reference, interrupted)

    last = DCPCheckpointIO().load_checkpoint(interrupted / "checkpoints" / "last.ckpt")
    final = torch.load(interrupted / "final.pt")
    assert last["global_step"] == ddp.STEPS
    for name, value in final.items():
        assert torch.equal(last["state_dict"][f"net.{name}"], value)
    assert not [entry for entry in os.listdir(interrupted / "checkpoints") if entry.endswith(".link")]
    shutil.rmtree(interrupted)
