"""Choosing and configuring the DDP strategies, without starting processes."""

from __future__ import annotations

import datetime

import pytest

import trellis
from trellis.errors import ConfigurationError
from trellis.plugin import Accelerator, LocalEnvironment, ScriptLauncher, SpawnLauncher
from trellis.testing.processes import LAUNCHER_VARIABLES
from trellis_ddp.strategy import DDPStrategy

TORCHRUN = {"RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4",
            "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "job"}


@pytest.fixture(autouse=True)
def no_outer_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*TORCHRUN, *LAUNCHER_VARIABLES, "SLURM_NTASKS", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK",
                 "KUBERNETES_PORT", "LSB_JOBID"]:
        monkeypatch.delenv(name, raising=False)


def trainer(**flags) -> trellis.Trainer:
    return trellis.Trainer(accelerator="cpu", logger=False, **flags)


def test_ddp_by_name_launches_itself_from_the_script_when_no_cluster_started_it() -> None:
    strategy = trainer(strategy="ddp", devices=2).strategy
    assert isinstance(strategy, DDPStrategy)
    assert isinstance(strategy.cluster_environment, LocalEnvironment)
    assert isinstance(strategy.launcher, ScriptLauncher)
    assert strategy.world_size == 2 and strategy.global_rank == 0
    assert strategy.distributed_sampler_kwargs == {"num_replicas": 2, "rank": 0}


def test_auto_strategy_with_several_devices_is_ddp() -> None:
    assert trainer(devices=2).strategy.name == "ddp"


@pytest.mark.parametrize(("name", "method"), [("ddp_spawn", "spawn"), ("ddp_notebook", "fork")])
def test_spawn_strategies_use_torch_multiprocessing(name: str, method: str) -> None:
    launcher = trainer(strategy=name, devices=2).strategy.launcher
    assert isinstance(launcher, SpawnLauncher) and launcher.start_method == method


def test_under_torchrun_ddp_attaches_and_reads_its_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    strategy = trainer(strategy="ddp", devices=2, num_nodes=2).strategy
    assert strategy.cluster_environment.name == "torchelastic"
    assert strategy.launcher is None
    assert (strategy.global_rank, strategy.local_rank, strategy.node_rank, strategy.world_size) == (3, 1, 1, 4)


def test_a_launcher_that_disagrees_with_the_trainer_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="torchrun started 2 processes per node but the Trainer has devices=1"):
        trainer(strategy="ddp", devices=1, num_nodes=2)


def test_spawning_inside_a_cluster_launch_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="use strategy='ddp'"):
        trainer(strategy="ddp_spawn", devices=2, num_nodes=2)


def test_an_accelerator_without_a_process_group_backend_is_refused() -> None:
    class NoCollectives(Accelerator):
        name = "abacus"
        device_type = "cpu"

        @classmethod
        def is_available(cls) -> bool:
            return True

        @classmethod
        def device_count(cls) -> int:
            return 2

    with pytest.raises(ConfigurationError, match="accelerator 'abacus' declares none"):
        trellis.Trainer(accelerator=NoCollectives(), strategy="ddp", devices=2, logger=False)


def test_a_third_party_accelerator_gets_ddp_over_its_declared_backend() -> None:
    class Npu(Accelerator):
        name = "npu"
        device_type = "cpu"
        process_group_backend = "hccl"

        @classmethod
        def is_available(cls) -> bool:
            return True

        @classmethod
        def device_count(cls) -> int:
            return 4

    strategy = trellis.Trainer(accelerator=Npu(), strategy="ddp", devices=4, logger=False).strategy
    assert strategy.accelerator.process_group_backend == "hccl" and strategy.world_size == 4


def test_the_collective_timeout_takes_seconds_or_a_timedelta() -> None:
    assert DDPStrategy(timeout=90).timeout == datetime.timedelta(seconds=90)
    assert DDPStrategy().timeout == datetime.timedelta(minutes=30)
