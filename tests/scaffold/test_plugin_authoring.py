"""A stranger's afternoon: scaffold an accelerator plugin, install it, pass the kit, train with it by name.

The scaffolds are pip-installed into a temporary --target folder put on PYTHONPATH of subprocesses, so the
shared environment is never changed. Two broken variants are installed beside the good one: they fail the
conformance kit with messages that say what to fix, and they do not disturb the good plugin.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from trellis.scaffold import scaffold

pytestmark = pytest.mark.slow

TIMEOUT_S = 240


@dataclass
class Installed:
    good: Path
    broken_import: Path
    missing_method: Path
    env: dict[str, str]


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def break_with_module_level_import(root: Path) -> None:
    """The classic mistake: the backend SDK imported at module level, and it is not installed."""
    module = root / "trellis_acme_broken_import" / "__init__.py"
    module.write_text(module.read_text().replace("import torch\n", "import torch\nimport acme_runtime\n", 1))


def break_by_deleting_device_count(root: Path) -> None:
    module = root / "trellis_acme_no_count" / "__init__.py"
    source = module.read_text()
    broken = re.sub(r"    @classmethod\n    def device_count.*?\n\n(?=    def )", "", source, flags=re.S)
    assert broken != source
    module.write_text(broken)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("authoring")
    good = scaffold("accelerator", "acme", root)
    broken_import = scaffold("accelerator", "acme-broken-import", root)
    break_with_module_level_import(broken_import)
    missing_method = scaffold("accelerator", "acme-no-count", root)
    break_by_deleting_device_count(missing_method)
    site = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(site), str(good), str(broken_import), str(missing_method)]
    result = run(pip, root, dict(os.environ))
    assert result.returncode == 0, result.stderr
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TRELLIS_BLOCK_PLUGINS": ""}
    return Installed(good, broken_import, missing_method, env)


def test_scaffold_passes_its_own_tests_and_the_conformance_kit_unchanged(installed):
    result = run([sys.executable, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider"], installed.good, installed.env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for check in ("entry_point", "imports", "descriptor", "cheap_import", "availability", "parse_devices",
                  "device_placement", "train", "resume"):
        assert f"trellis-conformance::accelerator:acme::{check} PASSED" in result.stdout
    assert "test_trains_with_acme PASSED" in result.stdout
    assert "trellis-conformance::accelerator:acme::ddp" in result.stdout  # passes, or skips saying why
    assert "SKIPPED" in result.stdout
    assert "run `ACME_STANDIN_DEVICES=2 pytest` to train on two stand-in" in result.stdout


def test_the_skip_reason_of_the_ddp_test_is_a_recipe_that_works(installed):
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "ddp_keeps_the_ranks_identical"]
    result = run(command, installed.good, {**installed.env, "ACME_STANDIN_DEVICES": "2"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


SCRIPT = """
import json, tempfile
import trellis
from trellis.cli import main
from trellis.testing.workload import TinyRegression, make_loader, trainer_flags

trainer = trellis.Trainer(max_steps=3, **trainer_flags(tempfile.mkdtemp(), accelerator="acme", devices=1))
trainer.fit(TinyRegression(), make_loader())
print(json.dumps({"accelerator": type(trainer.accelerator).__module__, "step": trainer.global_step}))
main(["plugins"])
"""


def test_trains_by_name_and_is_listed_beside_broken_plugins(installed):
    result = run([sys.executable, "-c", SCRIPT], installed.good, installed.env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    run_report = json.loads(next(line for line in lines if line.startswith("{")))
    assert run_report == {"accelerator": "trellis_acme", "step": 3}
    listing = "\n".join(lines)
    assert re.search(r"trellis-acme 0\.1\.0\n\s+accelerator: acme\b", listing), listing
    assert "trellis-acme-broken-import" in listing and "trellis-acme-no-count" in listing


def test_broken_plugins_fail_the_kit_with_what_to_fix(installed, tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    command = [sys.executable, "-m", "pytest", "-p", "trellis.testing", "-p", "no:cacheprovider", "-q",
               "--trellis-plugin", "accelerator:acme-broken-import", "--trellis-plugin", "accelerator:acme-no-count"]
    result = run(command, tmp_path, installed.env)
    output = result.stdout
    assert result.returncode == 1, output[-3000:]
    assert "accelerator:acme-broken-import does not pass 'imports'" in output
    assert "ModuleNotFoundError: No module named 'acme_runtime'" in output
    assert "import backend libraries (device SDKs, service clients) inside the methods that use them" in output
    assert "accelerator:acme-no-count does not pass 'descriptor'" in output
    assert (
        "AcmeNoCountAccelerator does not implement device_count(), which trellis.plugin.Accelerator requires: How many "
        "devices this process can see. Define `@classmethod def device_count(cls) -> int` in trellis_acme_no_count."
    ) in output
    assert re.search(r"\d+ failed, \d+ passed", output)
