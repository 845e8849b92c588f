"""Every true mode passes the conformance kit's precision checks, DDP over two CPU processes included."""

from __future__ import annotations

import pytest

from trellis.testing import Subject, Target, checks_for, run_check

MODES = ["32-true", "64-true", "16-true", "bf16-true"]
SUBJECTS = {mode: Subject(Target.parse(f"precision:{mode}")) for mode in MODES}
#: the ddp check starts two processes: slow.
CASES = [pytest.param(mode, check, id=f"{mode}-{check.id}", marks=[pytest.mark.slow] if check.id == "ddp" else [])
         for mode in MODES for check in checks_for("precision")]


@pytest.mark.parametrize(("mode", "check"), CASES)
def test_true_mode_honours_the_precision_contract(mode, check) -> None:
    run_check(check, SUBJECTS[mode])
