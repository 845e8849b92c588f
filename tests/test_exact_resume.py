"""Killed with SIGKILL at random moments and resumed each time, training ends exactly as if never stopped."""

from __future__ import annotations

import csv
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

JOB = Path(__file__).with_name("resume_job.py")
STEPS = 60  # 3 epochs of 20 batches
#: (line that triggers the kill, how many such lines to let pass first): mid-step, mid-write, mid-validation.
KILLS = [("step", 4), ("saving", 1), ("validating", 2), ("step", 9), ("saving", 2), ("validating", 1)]


def _start(root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(JOB), str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _run_until_killed(root: Path, trigger: str, skip: int, rng: random.Random) -> None:
    job = _start(root)
    seen = 0
    for line in job.stdout:
        if line.startswith("finished"):
            break
        if line.startswith(trigger):
            seen += 1
            if seen > skip:
                time.sleep(rng.uniform(0, 0.02))
                break
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=60)


def _run_to_end(root: Path) -> None:
    job = _start(root)
    output, errors = job.communicate(timeout=300)
    assert job.returncode == 0, errors


def _metric_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "trellis_logs" / "version_0" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_kills_at_random_moments_then_resume_give_bit_identical_weights_and_clean_metrics(tmp_path):
    rng = random.Random(2026)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    _run_to_end(reference)
    for trigger, skip in KILLS:
        _run_until_killed(interrupted, trigger, skip, rng)
    _run_to_end(interrupted)

    expected = torch.load(reference / "final.pt")
    actual = torch.load(interrupted / "final.pt")
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after kills and resumes"

    reference_rows, resumed_rows = _metric_rows(reference), _metric_rows(interrupted)
    train_steps = [int(row["step"]) for row in resumed_rows if row.get("train_loss_step")]
    assert train_steps == list(range(STEPS)), "a training step is missing or duplicated in metrics.csv"
    assert resumed_rows == reference_rows
