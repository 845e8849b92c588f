"""DDPStrategy's torch options, each trained for real by two gloo processes against hand-written DDP.

One run of scripts/ddp_options.py trains every case in the same two processes; each rank reports what it saw.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import trellis
from trellis.errors import ConfigurationError
from trellis.testing.processes import LAUNCHER_VARIABLES, run
from trellis_ddp.strategy import DDPStrategy

SCRIPTS = Path(__file__).parent / "scripts"
OPTIONS = SCRIPTS / "ddp_options.py"
sys.path.insert(0, str(SCRIPTS))

STEPS = 16  # 64 samples / (2 ranks x batches of 4) x 2 epochs


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp_options") / "report"
    result = run([sys.executable, str(OPTIONS), str(out), "options"])
    assert result.returncode == 0, result.stderr[-4000:]
    return [torch.load(f"{out}.rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_accumulation_syncs_once_per_step_and_matches_a_no_sync_loop_bit_for_bit(ranks: list[dict]) -> None:
    for report in ranks:
        trained, by_hand = report["accumulated"], report["accumulated_by_hand"]
        assert trained["global_step"] == STEPS // 2
        assert trained["allreduces"] == by_hand["allreduces"] == STEPS // 2  # the first micro-batch ran in no_sync
        assert_same_weights(trained["weights"], by_hand["weights"])
    assert_same_weights(ranks[0]["accumulated"]["weights"], ranks[1]["accumulated"]["weights"])


@pytest.mark.parametrize("option", ["find_unused_parameters", "static_graph"])
def test_a_model_with_an_unused_branch_trains_under_the_option_like_plain_ddp(ranks: list[dict], option: str) -> None:
    for report in ranks:
        trained = report[option]
        assert trained["options"] == {"find_unused_parameters": option == "find_unused_parameters",
                                      "static_graph": option == "static_graph"}
        assert trained["global_step"] == trained["allreduces"] == STEPS
        assert not trained["unused_changed"]
        assert_same_weights(trained["weights"], report["by_hand"]["weights"])


def test_a_model_with_an_unused_branch_fails_without_find_unused_parameters(tmp_path: Path) -> None:
    result = run([sys.executable, str(OPTIONS), str(tmp_path / "report"), "unused"], timeout=60)
    assert result.returncode != 0
    assert "parameters that were not used in producing loss" in result.stderr
    assert "find_unused_parameters=True" in result.stderr


class BatchNormed(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))


def connected(monkeypatch: pytest.MonkeyPatch, **options: Any) -> DDPStrategy:
    """A DDP strategy wired to the CPU accelerator in this process (no process group: nothing is wrapped)."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    trainer = trellis.Trainer(accelerator="cpu", strategy=DDPStrategy(**options), devices=2, logger=False)
    return trainer.strategy


def test_sync_batchnorm_converts_batchnorm_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    synced, plain = connected(monkeypatch, sync_batchnorm=True), connected(monkeypatch)
    synced.setup(BatchNormed(), None)
    plain.setup(BatchNormed(), None)
    assert isinstance(synced.module.net[1], torch.nn.SyncBatchNorm)
    assert type(plain.module.net[1]) is torch.nn.BatchNorm1d


def test_sync_batchnorm_training_on_the_cpu_is_refused_before_the_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's SyncBatchNorm raises in forward on CPU tensors; the strategy says so at setup, with the fix."""
    with pytest.raises(ConfigurationError, match="torch's SyncBatchNorm trains only on cuda, hpu, xpu") as error:
        connected(monkeypatch, sync_batchnorm=True).setup(BatchNormed(), lambda: None)
    assert "on 'cpu': drop sync_batchnorm" in str(error.value)
