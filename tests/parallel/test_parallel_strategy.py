"""trellis.parallel.ParallelStrategy: what a third party's distributed strategy inherits (launching from a plain
python start, the process group, collectives), with real processes over gloo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import trellis
from trellis.errors import ConfigurationError
from trellis.parallel import LocalEnvironment, ParallelStrategy, ScriptLauncher, SpawnLauncher
from trellis.testing.processes import LAUNCHER_VARIABLES, run

SCRIPT = Path(__file__).parent / "scripts" / "third_party_strategy.py"


class Plain(ParallelStrategy):
    name = "plain_parallel"


class Forked(ParallelStrategy):
    name = "forked_parallel"
    start_method = "fork"


@pytest.fixture(autouse=True)
def no_outer_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_subclass_gets_a_launcher_ranks_and_a_local_environment() -> None:
    strategy = trellis.Trainer(accelerator="cpu", strategy=Plain(), devices=2, logger=False).strategy
    assert isinstance(strategy.cluster_environment, LocalEnvironment)
    assert isinstance(strategy.launcher, ScriptLauncher)
    assert (strategy.world_size, strategy.global_rank, strategy.distributed_sampler_kwargs) == (
        2, 0, {"num_replicas": 2, "rank": 0})


def test_a_world_of_one_launches_nothing_and_a_start_method_spawns() -> None:
    assert trellis.Trainer(accelerator="cpu", strategy=Plain(), devices=1, logger=False).strategy.launcher is None
    forked = trellis.Trainer(accelerator="cpu", strategy=Forked(), devices=2, logger=False).strategy
    assert isinstance(forked.launcher, SpawnLauncher) and forked.launcher.start_method == "fork"


def test_collectives_of_one_process_give_its_own_values() -> None:
    strategy = trellis.Trainer(accelerator="cpu", strategy=Plain(), devices=1, logger=False).strategy
    assert float(strategy.reduce(3.0)) == 3.0 and strategy.broadcast("x") == "x"
    with pytest.raises(ConfigurationError, match="reduce op 'median' is unknown"):
        strategy.reduce(1.0, "median")


def test_a_third_party_strategy_trains_two_processes_from_a_plain_start(tmp_path: Path) -> None:
    result = run([sys.executable, str(SCRIPT), str(tmp_path)], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert rank0["pid"] != rank1["pid"]
    for report in (rank0, rank1):
        assert (report["sum"], report["max"], report["gathered"]) == (3.0, 2.0, [0, 1])
        assert report["broadcast"] == {"from": 1}
    assert rank0["weights"] == rank1["weights"]  # the averaged gradients kept the replicas identical
