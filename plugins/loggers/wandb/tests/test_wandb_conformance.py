"""The wandb logger (offline) passes the conformance kit that third parties run, resume contract included."""

from __future__ import annotations

import pytest

from trellis.testing import Subject, Target, checks_for, run_check

SUBJECT = Subject(Target.parse("logger:wandb"))


@pytest.mark.parametrize("check", checks_for("logger"), ids=lambda check: check.id)
def test_wandb_honours_the_logger_contract(check, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    run_check(check, SUBJECT)
