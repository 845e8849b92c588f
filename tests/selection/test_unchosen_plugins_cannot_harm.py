"""A default Trainer survives any raising, malformed or clashing third-party plugin that nobody chose.

Each case installs real distributions on a fresh path and runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from discovery.plugin_sources import (
    NPU_MODULE,
    RAISING_ENVIRONMENT_MODULE,
    RAISING_NPU_MODULE,
    TESTS_DIR,
    train_three_steps,
)
from support import make_distribution, run_python

PREEMPTION_JOB = Path(TESTS_DIR) / "preemption_job.py"
PREEMPTED_EXIT_CODE = 75


def test_an_availability_check_that_raises_is_skipped_with_one_warning(tmp_path):
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:NPU"}},
                      {"acme_npu.py": RAISING_NPU_MODULE}, version="0.9")
    result = run_python(train_three_steps(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["CPUAccelerator", "3"]
    warning = ("accelerator plugin 'npu' from distribution acme-npu 0.9 is skipped: RuntimeError: driver exploded. "
               "Nothing chose it by name")
    assert result.stderr.count(warning) == 1


def test_an_entry_point_that_is_not_a_class_is_skipped_by_auto_and_explained_when_chosen(tmp_path):
    module = NPU_MODULE + "\ndef make_npu():\n    return NPU()\n"
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:make_npu"}},
                      {"acme_npu.py": module})
    auto = run_python(train_three_steps(), tmp_path)
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.split()[-2:] == ["CPUAccelerator", "3"]
    assert "accelerator='auto' skips 'npu'" in auto.stderr and "acme-npu 1.0" in auto.stderr
    chosen = run_python("import trellis; trellis.Trainer(accelerator='npu', logger=False)", tmp_path)
    assert chosen.returncode != 0
    assert ("accelerator plugin 'npu' from distribution acme-npu 1.0 points at <function make_npu" in chosen.stderr
            and "not a subclass of trellis.plugin.Accelerator" in chosen.stderr)


def test_a_name_two_third_parties_claim_is_skipped_by_auto(tmp_path):
    for distribution in ("acme-npu", "other-npu"):
        module = distribution.replace("-", "_")
        make_distribution(tmp_path, distribution, {"trellis.accelerators": {"npu": f"{module}:NPU"}},
                          {f"{module}.py": NPU_MODULE})
    result = run_python(train_three_steps(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["CPUAccelerator", "3"]
    assert "accelerator='auto' skips 'npu': accelerator name 'npu' is claimed by two distributions" in result.stderr


def test_auto_logs_what_it_chose_and_why_it_passed_over_the_others(tmp_path):
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:NPU"}},
                      {"acme_npu.py": NPU_MODULE})
    result = run_python("""
        import logging
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        import trellis
        trellis.Trainer(logger=False, enable_progress_bar=False)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("trellis.selection:"))
    assert "accelerator='auto' chose 'npu' (acme-npu 1.0, auto_priority 5)" in line
    assert "'cpu' (trellis-cpu 0.1.0): lower auto_priority 0" in line
    assert "'cuda' (trellis-cuda 0.1.0): unavailable: " in line  # the CPU-only machine this runs on


def test_a_cluster_environment_whose_detect_raises_does_not_stop_a_run(tmp_path):
    make_distribution(tmp_path, "flaky-env", {"trellis.cluster_environments": {"flaky": "flaky_env:Flaky"}},
                      {"flaky_env.py": RAISING_ENVIRONMENT_MODULE})
    result = run_python("""
        from trellis.selection import detect_cluster_environment
        print("detected", detect_cluster_environment())
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "detected None" in result.stdout
    assert ("cluster_environment plugin 'flaky' from distribution flaky-env 1.0 is skipped: KeyError: 'FLAKY_JOB_ID'"
            in result.stderr)


def test_preemption_still_exits_75_beside_a_raising_cluster_environment(tmp_path):
    make_distribution(tmp_path / "site", "flaky-env", {"trellis.cluster_environments": {"flaky": "flaky_env:Flaky"}},
                      {"flaky_env.py": RAISING_ENVIRONMENT_MODULE})
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), TESTS_DIR])}
    job = subprocess.Popen([sys.executable, str(PREEMPTION_JOB), str(tmp_path / "run")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=environment)
    for line in job.stdout:
        if line.strip() == "step 3":
            job.send_signal(signal.SIGTERM)
            break
    output, errors = job.communicate(timeout=180)
    assert job.returncode == PREEMPTED_EXIT_CODE, errors
    assert "received SIGTERM" in output and "flaky-env 1.0 is skipped" in errors


def test_plugin_objects_that_fill_no_role_and_implement_no_hook_are_refused():
    result = run_python("""
        import trellis

        class Timer:
            def on_train_start(self, trainer):
                pass

        trellis.Trainer(logger=False, plugins=[Timer()])  # a plain hook plugin is fine
        try:
            trellis.Trainer(logger=False, plugins=[object()])
        except trellis.errors.ConfigurationError as error:
            print(error)
    """)
    assert result.returncode == 0, result.stderr
    assert "fills no plugin role" in result.stdout and "implements no hook" in result.stdout
