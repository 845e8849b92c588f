"""Killed with SIGKILL at awkward moments and resumed with ckpt_path="last" in a new process each time, a run
ends exactly as if it had never stopped: bit-identical weights, every metric row once in CSV and TensorBoard,
no temporary file left behind.

CI runs a short list of kills; TRELLIS_CRASH_KILLS=N adds N more at random moments (the long version).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trellis.testing.processes import LAUNCHER_VARIABLES, group_running, kill_group

JOB = Path(__file__).with_name("crash_job.py")
RUN_TIMEOUT = 300
#: (line that triggers the kill, how many such lines to let pass first): before the first checkpoint, inside a
#: checkpoint write, inside validation, at an epoch's last batch, inside a later write.
KILLS = [("step", 2), ("saving", 1), ("validating", 2), ("last batch", 1), ("saving", 2)]
TRIGGERS = ("step", "saving", "validating", "last batch")


def _kills() -> list[tuple[str, int]]:
    extra = int(os.environ.get("TRELLIS_CRASH_KILLS", "0"))
    rng = random.Random(extra)
    return KILLS + [(rng.choice(TRIGGERS), rng.randrange(0, 6)) for _ in range(extra)]


def _start(root: Path, strategy: str) -> subprocess.Popen:
    """The job in a process group of its own (with DDP: rank 0 and the rank it starts)."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in LAUNCHER_VARIABLES and not key.startswith("SLURM_")}
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.stderr", "a") as errors:  # kept beside the run, for a failing test
        return subprocess.Popen([sys.executable, str(JOB), str(root), strategy], stdout=subprocess.PIPE,
                                stderr=errors, text=True, env=environment, start_new_session=True)


def _kill(job: subprocess.Popen) -> None:
    """SIGKILL every process of the job and wait until none is left."""
    kill_group(job.pid)
    job.wait(timeout=30)
    deadline = time.monotonic() + 30
    while group_running(job.pid):
        assert time.monotonic() < deadline, f"processes of group {job.pid} survived SIGKILL"
        time.sleep(0.05)


def _run_until_killed(root: Path, strategy: str, trigger: str, skip: int, rng: random.Random) -> bool:
    """Run until the trigger line has been seen `skip` + 1 times, then SIGKILL every process; False when the
    run finished first."""
    job = _start(root, strategy)
    try:
        seen = 0
        for line in job.stdout:
            if line.startswith("finished"):
                return False
            if line.startswith(trigger):
                seen += 1
                if seen > skip:
                    time.sleep(rng.uniform(0, 0.02))
                    return True
        return False
    finally:
        _kill(job)


def _run_to_end(root: Path, strategy: str) -> None:
    job = _start(root, strategy)
    try:
        output, _ = job.communicate(timeout=RUN_TIMEOUT)
    finally:
        _kill(job)
    errors = (root.parent / f"{root.name}.stderr").read_text()
    assert job.returncode == 0 and "finished" in output, errors[-4000:]


def _csv_rows(root: Path) -> list[dict[str, str]]:
    directory = next(line for line in (root / "log_dirs.txt").read_text().splitlines() if "csv" in line.lower()
                     or (Path(line) / "metrics.csv").exists())
    with open(Path(directory) / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def _tensorboard_scalars(root: Path) -> list[tuple[str, int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    directories = [Path(line) for line in (root / "log_dirs.txt").read_text().splitlines()]
    directory = next(path for path in directories if any(path.glob("events.out.tfevents.*")))
    events = EventAccumulator(str(directory))
    events.Reload()
    return sorted((tag, event.step, event.value) for tag in events.Tags()["scalars"] for event in events.Scalars(tag))


def _leftovers(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*")
                  if path.name.endswith(".tmp") or ".trellis-" in path.name or ".dcp-" in path.name)


STRATEGIES = ["single_device", pytest.param("ddp", marks=pytest.mark.skipif(
    importlib.util.find_spec("trellis_ddp") is None, reason="trellis-ddp is not installed"))]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_kills_at_awkward_moments_resumed_with_last_end_exactly_as_an_uninterrupted_run(tmp_path, strategy):
    rng = random.Random(2026)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    _run_to_end(reference, strategy)
    kills = sum(_run_until_killed(interrupted, strategy, trigger, skip, rng) for trigger, skip in _kills())
    _run_to_end(interrupted, strategy)
    assert kills >= len(KILLS) - 1, "the job finished before most kills landed"

    expected, actual = torch.load(reference / "final.pt"), torch.load(interrupted / "final.pt")
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after {kills} kills and resumes"

    reference_rows, resumed_rows = _csv_rows(reference), _csv_rows(interrupted)
    steps = [row["step"] for row in resumed_rows if row.get("train_loss_step")]
    assert len(steps) == len(set(steps)), "a training step is logged twice in metrics.csv"
    assert resumed_rows == reference_rows
    if importlib.util.find_spec("trellis_tensorboard") is not None:
        scalars = _tensorboard_scalars(interrupted)
        # "epoch" rides along with every logging call, as in Lightning: validation and the step it follows share it.
        metrics = [(tag, step) for tag, step, _ in scalars if tag != "epoch"]
        assert len(set(metrics)) == len(metrics), "a TensorBoard point is written twice"
        assert scalars == _tensorboard_scalars(reference)
    assert _leftovers(interrupted) == []
