"""Checkpoint IO under SIGKILL, with real processes: a save killed at any moment costs nothing already saved.

A run saves ever newer versions of a 32 MB checkpoint until it is killed in the middle of one (a kill that
lands between two saves is not counted, and another follows; an asynchronous IO, whose save_checkpoint returns
before it writes, gets its kills counted anyway after MAX_MISSED_KILLS such misses). A new run
then resumes: it loads the checkpoint, which must be complete (its weights all equal its version) and no
older than the last save that had returned, and saves once. After that, the directory must hold no more
than one save leaves there: whatever a killed save left behind (temporary files, staging directories) is
gone once the next run has started. That run then saves on until it is killed in turn.
"""

from __future__ import annotations

import os
import random
import selectors
import subprocess
import sys
import time
from pathlib import Path

from trellis.testing.processes import kill_group
from trellis.testing.subject import ConformanceFailure, Subject

KILLS = 3
MAX_MISSED_KILLS = 10
WEIGHTS = 8_000_000  # float32 values: 32 MB, so that most of the writer's time is spent writing
START_TIMEOUT_S = 120

#: one run: resume from the checkpoint (report what it holds) unless "fresh", save the next version, wait for a
#: line on stdin, then save ever newer versions until killed, printing "saving N" as it calls save_checkpoint
#: and "saved N" once that returned.
_RUN = """
import sys, torch
from trellis.testing.subject import Subject, Target
io = Subject(Target.parse(sys.argv[1])).build()
path = sys.argv[2]
def save(version, announce=False):
    checkpoint = {"state_dict": {"weight": torch.full((%d,), float(version))}, "version": version}
    if announce:
        print("saving", version, flush=True)
    io.save_checkpoint(checkpoint, path)
version = 0
if sys.argv[3] == "resume":
    try:
        loaded = io.load_checkpoint(path)
        weight = loaded["state_dict"]["weight"]
        complete = weight.shape == (%d,) and bool((weight == float(loaded["version"])).all())
        print("loaded", loaded["version"], "complete" if complete else "torn", flush=True)
    except Exception as error:
        print("error", type(error).__name__, str(error).replace(chr(10), " "), flush=True)
        raise SystemExit(0)
    version = loaded["version"]
save(version + 1)
io.teardown()  # written, also by an asynchronous IO
print("saved", version + 1, flush=True)
sys.stdin.readline()
for version in range(version + 2, 10**9):
    save(version, announce=True)
    print("saved", version, flush=True)
""" % (WEIGHTS, WEIGHTS)  # noqa: UP031 (a script template: its dict braces would need escaping in format())


def check_kill_mid_save(subject: Subject, tmp_path: Path) -> None:
    """A save killed by SIGKILL leaves the previous checkpoint complete and loadable; the next run removes its
    leftovers."""
    name = subject.target
    path = tmp_path / "checkpoints" / "model.ckpt"
    rng = random.Random(15)
    run = _start(subject, path, "fresh")
    _read_lines(run, 1, f"a first save with {name}")
    entries_of_one_save = len(os.listdir(path.parent))
    kill = missed = 0
    while kill < KILLS:
        returned, landed = _kill_mid_save(run, rng.uniform(0.0, 0.05), f"a run saving with {name}")
        if landed or missed == MAX_MISSED_KILLS:
            kill += 1
        else:
            missed += 1
        run = _start(subject, path, "resume")
        try:
            kind, *report = _read_lines(run, 1, f"a restarted run of {name}")[0].split(" ", 1)
            if kind == "error":
                raise ConformanceFailure(
                    f"after a save of {name} was killed (SIGKILL, kill {kill} of {KILLS}), load_checkpoint raised "
                    f"{report[0]}. A killed save must leave the previous checkpoint whole: write into a temporary "
                    "file or directory and move it over the target in one rename (os.replace) once it is complete"
                )
            version, state = report[0].split()
            if state == "torn":
                raise ConformanceFailure(
                    f"after a save of {name} was killed (SIGKILL), the checkpoint loaded with weights that do not "
                    f"match its version {version}: a torn file. Write into a temporary file and rename it over the "
                    "target only once complete, so a reader sees the old checkpoint or the new one"
                )
            if int(version) < returned - 1:
                raise ConformanceFailure(
                    f"after a save of {name} was killed, the checkpoint holds version {version}, but the save of "
                    f"version {returned} had already returned: a save that returned must not be lost by a later one"
                )
            _read_lines(run, 1, f"the first save of a restarted run of {name}")
            entries = sorted(os.listdir(path.parent))
            if len(entries) > entries_of_one_save:
                raise ConformanceFailure(
                    f"after a killed save and a restarted run (a load, then a save) with {name}, the directory holds "
                    f"{entries}, where one save leaves {entries_of_one_save} entries: remove what killed saves left "
                    "(your own temporary names only, never other files or a save another process is still "
                    "writing) when a run loads a checkpoint or first saves into a directory"
                )
        except BaseException:
            kill_group(run.pid)
            run.wait(timeout=60)
            raise
    kill_group(run.pid)
    run.wait(timeout=60)


def _kill_mid_save(run: subprocess.Popen, delay: float, what: str) -> tuple[int, bool]:
    """Let the run save on; once a save returned, kill it `delay` s into the next save. The last version whose
    save returned, and whether the kill landed inside save_checkpoint (no save returned after it was called)."""
    assert run.stdin is not None and run.stdout is not None  # pipes
    returned = None
    try:
        run.stdin.write("go\n")
        run.stdin.flush()
        while True:
            kind, version = _read_lines(run, 1, what)[0].split()
            if kind == "saved":
                returned = int(version)
            elif returned is not None:
                break
        time.sleep(delay)
    finally:
        kill_group(run.pid)
        run.wait(timeout=60)
    later = [int(line.split()[1]) for line in run.stdout.read().splitlines() if line.startswith("saved")]
    return max([returned, *later]), not later


def _start(subject: Subject, path: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _RUN, str(subject.target), str(path), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _read_lines(process: subprocess.Popen, count: int, what: str) -> list[str]:
    """`count` lines of the process's output, or a failure with its error output."""
    lines: list[str] = []
    assert process.stdout is not None and process.stderr is not None  # pipes
    deadline = time.monotonic() + START_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while len(lines) < count:
            remaining = deadline - time.monotonic()
            line = process.stdout.readline() if remaining > 0 and selector.select(remaining) else ""
            if not line:
                timed_out = process.poll() is None
                kill_group(process.pid)
                process.wait(timeout=60)
                errors = f"no output within {START_TIMEOUT_S} s" if timed_out else process.stderr.read()[-3000:]
                raise ConformanceFailure(f"{what} ended before it saved or loaded: {errors}")
            lines.append(line.strip())
    return lines

