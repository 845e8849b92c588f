"""Two DDP processes killed together with SIGKILL at random moments, resumed each time, end exactly as never stopped."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from trellis.testing.processes import LAUNCHER_VARIABLES

JOB = Path(__file__).parent / "scripts" / "ddp_resume_job.py"
STEPS = 60  # 3 epochs of 20 batches per rank
#: (line of rank 0 that triggers the kill, how many such lines to let pass first): mid-step, mid-write, mid-validation.
KILLS = [("step", 4), ("saving", 1), ("validating", 2), ("step", 9), ("saving", 2)]
RUN_TIMEOUT = 120


def start_job(root: Path, checkpoint_io: str) -> subprocess.Popen:
    """The job in a process group of its own (rank 0 and the rank 1 it re-runs itself as)."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in LAUNCHER_VARIABLES and not key.startswith("SLURM_")}
    return subprocess.Popen([sys.executable, str(JOB), str(root), checkpoint_io], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment, start_new_session=True)


def kill_group(job: subprocess.Popen) -> None:
    """SIGKILL every process of the job's group and wait until none is left."""
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(job.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {job.pid} survived SIGKILL")


def run_until_killed(root: Path, checkpoint_io: str, trigger: str, skip: int, rng: random.Random) -> None:
    job = start_job(root, checkpoint_io)
    try:
        seen = 0
        deadline = time.monotonic() + RUN_TIMEOUT
        for line in job.stdout:
            assert time.monotonic() < deadline, "the job ran past its time limit"
            if line.startswith("finished"):
                break
            if line.startswith(trigger):
                seen += 1
                if seen > skip:
                    time.sleep(rng.uniform(0, 0.02))
                    break
    finally:
        kill_group(job)


def run_to_end(root: Path, checkpoint_io: str) -> None:
    job = start_job(root, checkpoint_io)
    try:
        _, errors = job.communicate(timeout=RUN_TIMEOUT)
    finally:
        kill_group(job)
    assert job.returncode == 0, errors[-3000:]


def metric_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "lightning_logs" / "version_0" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def assert_resumed_run_matches(reference: Path, interrupted: Path) -> None:
    expected, actual = torch.load(reference / "final.pt"), torch.load(interrupted / "final.pt")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after kills and resumes"
    reference_rows, resumed_rows = metric_rows(reference), metric_rows(interrupted)
    train_steps = [int(row["step"]) for row in resumed_rows if row.get("train_loss_step")]
    assert train_steps == list(range(STEPS)), "a training step is missing or duplicated in metrics.csv"
    assert resumed_rows == reference_rows


def test_two_processes_killed_at_random_moments_resume_to_bit_identical_weights(tmp_path: Path) -> None:
    rng = random.Random(2026)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    run_to_end(reference, "torch")
    for trigger, skip in KILLS:
        run_until_killed(interrupted, "torch", trigger, skip, rng)
    run_to_end(interrupted, "torch")
    assert_resumed_run_matches(reference, interrupted)
