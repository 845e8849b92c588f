"""The CUDA accelerator passes the conformance kit; without a GPU only its contract checks run, the rest skip."""

from __future__ import annotations

import pytest

from trellis.testing import Subject, Target, checks_for, run_check

SUBJECT = Subject(Target.parse("accelerator:cuda"))
CHECKS = checks_for("accelerator")


@pytest.mark.parametrize("check", CHECKS, ids=[check.id for check in CHECKS])
def test_cuda_honours_the_accelerator_contract(check) -> None:
    run_check(check, SUBJECT)
