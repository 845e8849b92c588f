"""`trellis new-plugin`: what it writes, and the names it refuses."""

from __future__ import annotations

import re
import tomllib

import pytest

import trellis
from trellis.errors import ConfigurationError
from trellis.scaffold import main, scaffold


@pytest.mark.parametrize(("role", "name", "owner"), [
    ("logger", "csv", "trellis-csv 0.1.0"),           # installed here, under the same role
    ("accelerator", "gpu", "trellis-cuda 0.1.0"),     # an alias is a name too
    ("precision", "bf16-mixed", "trellis-mixed 0.1.0"),
])
def test_refuses_a_name_an_installed_distribution_provides(tmp_path, role, name, owner):
    with pytest.raises(ConfigurationError, match=f"name '{name}' is already provided by {owner}: .* Choose another"):
        scaffold(role, name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_refuses_a_distribution_name_that_is_installed_for_another_role(tmp_path):
    with pytest.raises(ConfigurationError, match=r"the distribution trellis-csv is already installed \(0\.1\.0\): "
                                                 "installing the scaffold would replace it"):
        scaffold("accelerator", "csv", tmp_path)


def test_the_command_exits_2_with_the_reason(tmp_path, capsys):
    assert main(["--role", "logger", "tensorboard", "--dir", str(tmp_path)]) == 2
    assert "name 'tensorboard' is already provided by trellis-tensorboard" in capsys.readouterr().err


def test_writes_a_gitignore_and_depends_on_the_compatible_trellis_releases(tmp_path):
    root = scaffold("accelerator", "acme", tmp_path)
    ignored = (root / ".gitignore").read_text().splitlines()
    assert {"__pycache__/", "*.egg-info/", "build/", "dist/", "lightning_logs/"} <= set(ignored)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    major, minor = trellis.__version__.split(".")[:2]
    assert project["dependencies"] == [f"trellis>={major}.{minor},<{major}.{int(minor) + 1}"]


def test_generated_tests_import_the_kernel_only_through_the_plugin_api(tmp_path):
    roles = ("accelerator", "strategy", "precision", "logger", "checkpoint_io", "cluster_environment", "callback")
    for index, role in enumerate(roles):
        tests = next((scaffold(role, f"acme-{index}", tmp_path) / "tests").glob("test_*.py")).read_text()
        kernel_imports = [line for line in tests.splitlines() if re.match(r"(from|import) trellis(\.| |$)", line)]
        assert kernel_imports and all(re.match(r"import trellis$|from trellis\.(plugin|testing)[. ]", line)
                                      for line in kernel_imports), kernel_imports
