"""The logger resume check: real fits in one root directory, read back through the logger's `read_back()`.

Run as a module (`python -m trellis.testing.logger_checks NAME ROOT`) it is the process the check kills: a
fit with the logger NAME in ROOT that prints the logger's version and log_dir, then dies by SIGKILL before its
first checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trellis.callbacks.base import Callback
from trellis.testing import workload
from trellis.testing.subject import ConformanceFailure, Subject, Target, describe, failure_from
from trellis.testing.training_checks import MID_EPOCH_CHECKPOINT, SaveMidEpoch

METRIC = "train_loss"
STEPS_AFTER_RESTART = 2
KILLED_AT_STEP = 4
KILL_TIMEOUT_S = 240

Point = tuple[int, str, float]


def check_logger_resume(subject: Subject, tmp_path: Path) -> None:
    """Resumed in the same root dir, the run continues with each step once; fresh fits never mix runs."""
    root = tmp_path / "root"
    interrupted = _fit(subject, root, workload.TOTAL_STEPS, extra_callbacks=[SaveMidEpoch()])
    reference = _read_back(interrupted, "after an uninterrupted fit")
    expected = _expect_each_step_once(reference, "an uninterrupted fit", workload.TOTAL_STEPS)

    resumed = _fit(subject, root, workload.TOTAL_STEPS, ckpt_path=str(root / MID_EPOCH_CHECKPOINT))
    if resumed.version != interrupted.version:
        raise ConformanceFailure(
            f"resumed from a checkpoint in the same root dir, the logger's version is {resumed.version!r}, not the "
            f"checkpoint's {interrupted.version!r}: state_dict() must name the run and load_state_dict() continue it"
        )
    after_resume = _read_back(resumed, "after a resumed fit")
    _expect_each_step_once(after_resume, "a run saved at step "
                           f"{workload.STEPS_BEFORE_CHECKPOINT}, run on to step {workload.TOTAL_STEPS} and resumed "
                           "from the checkpoint", workload.TOTAL_STEPS, expected)

    fresh = _fit(subject, root, STEPS_AFTER_RESTART)
    if interrupted.version is not None and fresh.version == interrupted.version:
        raise ConformanceFailure(
            f"a fresh fit (no ckpt_path) in the same root dir reused version {fresh.version!r} of a finished run: "
            "give each fresh fit its own version, so runs are never mixed"
        )
    _expect_each_step_once(_read_back(fresh, "after a fresh fit beside a finished run"), "a fresh fit in a root dir "
                           "that holds an earlier run", STEPS_AFTER_RESTART, expected)
    if _read_back(resumed, "after a later fresh fit") != after_resume:
        raise ConformanceFailure(
            "a fresh fit in the same root dir changed what the earlier run's read_back() returns: a fresh fit "
            "must write into its own run only"
        )
    _check_restart_after_kill(subject, tmp_path / "killed_root", expected)


def _check_restart_after_kill(subject: Subject, root: Path, expected: dict[int, float]) -> None:
    """Killed before its first checkpoint and started again from scratch, the run has each step once."""
    if not hasattr(signal, "SIGKILL"):
        return
    killed = _killed_run(subject, root)
    with warnings.catch_warnings():  # taking over the killed run's folder is announced; here it is expected
        warnings.filterwarnings("ignore", ".*its run was killed before its first checkpoint", UserWarning)
        restarted = _fit(subject, root, workload.TOTAL_STEPS)
    _expect_each_step_once(_read_back(restarted, "after a restart"), f"a fit killed at step {KILLED_AT_STEP}, before "
                           "its first checkpoint, and started again from scratch", workload.TOTAL_STEPS, expected)
    killed_dir, restarted_dir = killed.get("log_dir"), restarted.log_dir
    if killed_dir and killed_dir != restarted_dir and any(Path(killed_dir).glob("*")):
        raise ConformanceFailure(
            f"a fit killed at step {KILLED_AT_STEP}, before its first checkpoint, left its rows in {killed_dir}, and "
            f"the restart from scratch wrote them again in {restarted_dir}: nothing can resume the killed run, so "
            "the restart must take its version over and write it again from the start "
            "(trellis.utils.run_lease.RunDirectory does this)"
        )


def _killed_run(subject: Subject, root: Path) -> dict[str, Any]:
    """Run this module in a process that dies by SIGKILL mid-fit; what it said about its logger."""
    command = [sys.executable, "-m", "trellis.testing.logger_checks", subject.name, str(root)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=KILL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConformanceFailure(f"a fit with {subject.target} did not reach step {KILLED_AT_STEP} in "
                                 f"{KILL_TIMEOUT_S} s") from None
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != -signal.SIGKILL or not lines:
        raise ConformanceFailure(
            f"the fit meant to be killed at step {KILLED_AT_STEP} with {subject.target} ended with exit "
            f"{result.returncode}:\n{result.stderr.strip()[-3000:]}"
        )
    return json.loads(lines[-1])


def _fit(subject: Subject, root: Path, max_steps: int, ckpt_path: str | None = None,
         extra_callbacks: Sequence[Any] = ()) -> Any:
    """A seeded fit with a fresh logger built as the kernel builds it by name in `root`; the logger."""
    os.makedirs(root, exist_ok=True)
    logger = subject.build(root)
    flags = workload.trainer_flags(root, accelerator="cpu", devices=1, logger=logger, callbacks=list(extra_callbacks))
    try:
        workload.fit(flags, max_steps, ckpt_path)
    except Exception as error:
        raise failure_from(f"Trainer.fit with {subject.target}", error) from error
    return logger


def _read_back(logger: Any, when: str) -> list[Point]:
    try:
        points = logger.read_back()
    except NotImplementedError as error:
        raise ConformanceFailure(f"{error}. The kit reads the run back {when} to check the resume contract.") from None
    except Exception as error:
        raise failure_from(f"{type(logger).__qualname__}.read_back() {when}", error) from error
    if not isinstance(points, list) or not all(isinstance(point, tuple) and len(point) == 3 for point in points):
        raise ConformanceFailure(
            f"{type(logger).__qualname__}.read_back() {when} returned {points!r}: return a list of "
            "(step, name, value) tuples"
        )
    return points


def _expect_each_step_once(points: list[Point], run: str, steps: int,
                           expected: dict[int, float] | None = None) -> dict[int, float]:
    """Every (step, name) once, METRIC at steps 0..steps-1 (a fit logs batch n at step n-1, as Lightning does),
    with the expected values; METRIC by step."""
    twice = sorted(key for key, count in Counter((step, name) for step, name, _ in points).items() if count > 1)
    if twice:
        raise ConformanceFailure(
            f"after {run}, the logger holds these (step, metric) points more than once: {twice[:10]}. A resumed run "
            "must drop (or not write again) what the interrupted run wrote after the checkpoint"
        )
    values = {step: value for step, name, value in points if name == METRIC}
    if sorted(values) != list(range(steps)):
        raise ConformanceFailure(
            f"after {run}, read_back() has {METRIC} at steps {sorted(values)}, not at steps 0..{steps - 1}: a step is "
            "missing, or rows of another run are mixed in"
        )
    if expected is not None:
        wrong = {step: (value, expected[step]) for step, value in values.items()
                 if not math.isclose(value, expected[step], rel_tol=1e-6, abs_tol=1e-12)}
        if wrong:
            raise ConformanceFailure(
                f"after {run}, {METRIC} differs from an uninterrupted run's at steps {sorted(wrong)} "
                "(value, expected): "
                f"{wrong}. The rows of that run must be the ones the Trainer logged, in place of any earlier ones"
            )
    return values


class _KillAtStep(Callback):
    """Delivers what was logged (as a flush interval would), reports the logger, and dies by SIGKILL."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == KILLED_AT_STEP:
            logger = trainer.logger
            logger.save()
            print(json.dumps({"version": logger.version, "log_dir": logger.log_dir}), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def _run_and_die(name: str, root: str) -> None:
    logger = Subject(Target("logger", name)).build(root)
    flags = workload.trainer_flags(root, accelerator="cpu", devices=1, logger=logger, callbacks=[_KillAtStep()])
    try:
        workload.fit(flags, workload.TOTAL_STEPS)
    except Exception as error:
        print(describe(error), file=sys.stderr)
        raise


if __name__ == "__main__":
    _run_and_die(sys.argv[1], sys.argv[2])
