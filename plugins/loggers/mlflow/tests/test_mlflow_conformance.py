"""The MLflow logger passes the conformance kit that third parties run, resume contract included, against a
sqlite store of its own (the kit's processes inherit MLFLOW_TRACKING_URI)."""

from __future__ import annotations

import pytest

from trellis.testing import Subject, Target, checks_for, run_check

SUBJECT = Subject(Target.parse("logger:mlflow"))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow_store')}/mlflow.db"


@pytest.mark.parametrize("check", checks_for("logger"), ids=lambda check: check.id)
def test_mlflow_honours_the_logger_contract(check, store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    run_check(check, SUBJECT)
