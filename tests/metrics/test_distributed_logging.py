"""self.log over two real processes (gloo on CPU): sync_dist reduces through the strategy, torchmetrics syncs itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from trellis.testing.processes import run

SCRIPT = Path(__file__).parent / "scripts" / "ddp_logging.py"


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    prefix = tmp_path_factory.mktemp("ddp") / "report"
    result = run([sys.executable, str(SCRIPT), str(prefix)], timeout=120)
    assert result.returncode == 0, result.stderr
    return [json.loads(path.read_text()) for path in sorted(prefix.parent.glob("report.rank*.json"))]


def test_sync_dist_reduces_over_both_processes_and_local_values_stay_local(reports):
    first, second = reports
    everything = first["logged"] + second["logged"]
    weighted_mean = sum(value * size for value, size in everything) / sum(size for _, size in everything)
    for report in reports:
        callback = report["callback"]
        assert callback["synced_epoch"] == pytest.approx(weighted_mean)
        assert callback["peak"] == max(value for value, _ in everything)
        mine = report["logged"]
        assert callback["local"] == pytest.approx(sum(value * size for value, size in mine) / sum(s for _, s in mine))
    last_steps = [first["logged"][-1][0], second["logged"][-1][0]]
    assert first["callback"]["synced_step"] == pytest.approx(sum(last_steps) / 2)  # the mean of both processes


def test_a_torchmetrics_metric_syncs_its_epoch_value_itself(reports):
    values = [value for report in reports for value, _ in report["logged"]]
    for report in reports:
        assert report["callback"]["metric_epoch"] == pytest.approx(sum(values) / len(values))
        assert report["callback"]["metric_step"] == pytest.approx(report["logged"][-1][0])  # this process's own
