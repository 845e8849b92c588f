"""Our default plugins pass the conformance kit that third parties run (trellis.testing)."""

from __future__ import annotations

import pytest

from trellis.testing import Subject, Target, checks_for, run_check

OWN_PLUGINS = ["accelerator:cpu", "precision:32-true", "logger:csv", "checkpoint_io:torch"]
SUBJECTS = {text: Subject(Target.parse(text)) for text in OWN_PLUGINS}
CASES = [(text, check) for text in OWN_PLUGINS for check in checks_for(Target.parse(text).role)]


@pytest.mark.parametrize(("plugin", "check"), CASES, ids=[f"{text}-{check.id}" for text, check in CASES])
def test_own_plugin_honours_its_role_contract(plugin, check):
    run_check(check, SUBJECTS[plugin])
