"""SIGTERM/SIGUSR1 save a checkpoint at the next step boundary, exit with status 75, and resume exactly."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import torch

from trellis.preemption import PREEMPTED_EXIT_CODE

JOB = Path(__file__).with_name("preemption_job.py")


def _run(root: Path, env: dict[str, str] | None = None, signal_at_step: int | None = None,
         signal_number: int = signal.SIGTERM) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(JOB.parent), **(env or {})}
    job = subprocess.Popen([sys.executable, str(JOB), str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=environment)
    lines = []
    for line in job.stdout:
        lines.append(line)
        if signal_at_step is not None and line.strip() == f"step {signal_at_step}":
            job.send_signal(signal_number)
            signal_at_step = None
    errors = job.stderr.read()
    job.wait(timeout=120)
    return subprocess.CompletedProcess(job.args, job.returncode, "".join(lines), errors)


def test_sigterm_saves_at_the_next_step_boundary_exits_75_and_resumes_exactly(tmp_path):
    reference, preempted = tmp_path / "reference", tmp_path / "preempted"
    assert _run(reference).returncode == 0
    stopped = _run(preempted, signal_at_step=7)
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr
    assert "received SIGTERM" in stopped.stdout and "ckpt_path='last'" in stopped.stdout
    checkpoint = torch.load(preempted / "preempted.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 8  # the step running when the signal came was finished first
    resumed = _run(preempted)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == "step 8"
    expected, actual = torch.load(reference / "final.pt"), torch.load(preempted / "final.pt")
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_sigusr1_under_slurm_requeues_the_job(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "scontrol_calls"
    scontrol = fake_bin / "scontrol"  # SLURM is not installed here: a stand-in records the call
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_NODEID": "0", "SLURM_JOB_NAME": "train", "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    stopped = _run(tmp_path / "run", env=slurm, signal_at_step=3, signal_number=signal.SIGUSR1)
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr
    assert calls.read_text().strip() == "requeue 4242"
    assert "the job was requeued" in stopped.stdout
