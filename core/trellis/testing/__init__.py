"""The plugin conformance kit: a pytest plugin that checks a plugin honours its role's contract.

Enable it with `pytest -p trellis.testing --trellis-plugin accelerator:acme`, or in pyproject.toml:

    [tool.pytest.ini_options]
    addopts = "-p trellis.testing"
    trellis_plugins = ["accelerator:acme"]

Every check is also callable without pytest's collection (see `checks_for` and `run_check`).
"""

from trellis.testing.plugin import configured_targets, pytest_addoption, pytest_collection_modifyitems, run_check
from trellis.testing.registry import Check, checks_for
from trellis.testing.subject import ConformanceFailure, ConformanceSkip, Subject, Target

__all__ = [
    "Check",
    "ConformanceFailure",
    "ConformanceSkip",
    "Subject",
    "Target",
    "checks_for",
    "configured_targets",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "run_check",
]
