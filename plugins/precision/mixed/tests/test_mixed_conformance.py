"""Every mixed mode passes the conformance kit's precision checks, DDP over two CPU processes included.

fp8 builds only where its hardware and library are (a Hopper GPU and transformer_engine); elsewhere its
checks skip with what is missing.
"""

from __future__ import annotations

import pytest

from trellis.testing import Subject, Target, checks_for, run_check
from trellis_mixed.fp8 import unavailable_reason

MODES = ["16-mixed", "bf16-mixed", "fp8"]
SUBJECTS = {mode: Subject(Target.parse(f"precision:{mode}")) for mode in MODES}
#: the ddp check starts two processes: slow.
CASES = [pytest.param(mode, check, id=f"{mode}-{check.id}", marks=[pytest.mark.slow] if check.id == "ddp" else [])
         for mode in MODES for check in checks_for("precision")]
FP8_MISSING = unavailable_reason()


@pytest.mark.parametrize(("mode", "check"), CASES)
def test_mixed_mode_honours_the_precision_contract(mode, check) -> None:
    if mode == "fp8" and FP8_MISSING is not None:
        pytest.skip(f"fp8 needs a Hopper GPU and transformer_engine: {FP8_MISSING}")
    run_check(check, SUBJECTS[mode])
