"""The kit's logger resume check fails loggers that repeat rows on resume, mix runs or cannot be read back, and
passes the scaffolded logger unchanged.

The loggers are real installed distributions (dist-info and module on a fresh path), found by name in this
process and in the process the check kills, as a third party's logger would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from support import make_distribution
from trellis import discovery
from trellis.scaffold import scaffold
from trellis.testing import ConformanceFailure, Subject, Target, checks_for, run_check

pytestmark = pytest.mark.slow

#: Each keeps the old scaffold's shape: JSON lines appended to one file per run directory, read back as written.
BROKEN_LOGGERS = """
import json, os
from trellis.plugin import Logger

TRELLIS_PLUGIN_API = 1


class AppendingLogger(Logger):
    '''Fresh runs get their own directory, but a resume appends to the file as it is: rows after the checkpoint
    are written twice.'''

    name = "appends-on-resume"

    def __init__(self, save_dir="."):
        self.save_dir = save_dir
        self.run = f"run_{len(os.listdir(save_dir)) if os.path.isdir(save_dir) else 0}"

    @property
    def version(self):
        return self.run

    @property
    def log_dir(self):
        return os.path.join(self.save_dir, "appends", self.run)

    def log_metrics(self, metrics, step):
        os.makedirs(self.log_dir, exist_ok=True)
        with open(os.path.join(self.log_dir, "metrics.jsonl"), "a") as file:
            file.write(json.dumps({"step": step, **metrics}) + "\\n")

    def state_dict(self):
        return {"run": self.run}

    def load_state_dict(self, state):
        self.run = state["run"]

    def read_back(self):
        path = os.path.join(self.log_dir, "metrics.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as file:
            rows = [json.loads(line) for line in file]
        return [(row["step"], key, value) for row in rows for key, value in row.items() if key != "step"]


class SharedFileLogger(AppendingLogger):
    '''Every run writes run_0 (the old scaffold's fixed run id); resumes are cut back, fresh runs are mixed in.'''

    name = "one-file-for-all-runs"

    def __init__(self, save_dir="."):
        self.save_dir, self.run, self.rows = save_dir, "run_0", 0

    def log_metrics(self, metrics, step):
        super().log_metrics(metrics, step)
        self.rows += 1

    def state_dict(self):
        return {"run": self.run, "rows": self.rows}

    def load_state_dict(self, state):
        self.run, self.rows = state["run"], state["rows"]
        path = os.path.join(self.log_dir, "metrics.jsonl")
        with open(path) as file:
            kept = file.readlines()[: self.rows]
        with open(path, "w") as file:
            file.writelines(kept)


class WriteOnlyLogger(Logger):
    name = "write-only"

    def log_metrics(self, metrics, step):
        pass
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Iterator[str]:
    """The broken loggers and a scaffolded logger, installed for this process and the processes it starts."""
    root = tmp_path_factory.mktemp("loggers")
    site = root / "site"
    names = {"appends-on-resume": "AppendingLogger", "one-file-for-all-runs": "SharedFileLogger",
             "write-only": "WriteOnlyLogger"}
    make_distribution(site, "broken-loggers", {"trellis.loggers": {name: f"broken_loggers:{cls}"
                                                                   for name, cls in names.items()}},
                      {"broken_loggers.py": BROKEN_LOGGERS})
    project = scaffold("logger", "jsonl", root)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(site), str(project)]
    result = subprocess.run(pip, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        discovery.refresh()
        yield str(project)
    discovery.refresh()


def logger_resume(name: str) -> None:
    check = next(check for check in checks_for("logger") if check.id == "logger_resume")
    run_check(check, Subject(Target("logger", name)))


def test_rows_written_again_after_a_resume_fail_the_check(installed):
    with pytest.raises(ConformanceFailure, match=r"more than once: \[\(2, 'epoch'\), \(2, 'train_loss'\)"):
        logger_resume("appends-on-resume")


def test_a_fresh_fit_mixed_into_another_run_fails_the_check(installed):
    with pytest.raises(ConformanceFailure, match="reused version 'run_0' of a finished run"):
        logger_resume("one-file-for-all-runs")


def test_a_logger_that_cannot_be_read_back_is_told_what_to_implement(installed):
    with pytest.raises(ConformanceFailure, match=r"does not implement read_back\(\): return the \(step, name, value\)"):
        logger_resume("write-only")


def test_the_scaffolded_logger_passes_resume_restart_and_fresh_runs(installed):
    logger_resume("jsonl")


def test_the_scaffolded_logger_passes_its_own_tests_and_the_whole_kit(installed):
    result = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"], cwd=installed,
                            capture_output=True, text=True, timeout=600, env=os.environ)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "trellis-conformance::logger:jsonl::logger_resume PASSED" in result.stdout
