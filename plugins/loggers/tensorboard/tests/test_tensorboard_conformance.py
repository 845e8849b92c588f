"""The TensorBoard logger passes the conformance kit that third parties run, resume contract included."""

from __future__ import annotations

import pytest

from trellis.testing import Subject, Target, checks_for, run_check

SUBJECT = Subject(Target.parse("logger:tensorboard"))


@pytest.mark.parametrize("check", checks_for("logger"), ids=lambda check: check.id)
def test_tensorboard_honours_the_logger_contract(check):
    run_check(check, SUBJECT)
