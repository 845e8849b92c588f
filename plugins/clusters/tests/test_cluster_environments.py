"""Each cluster environment, read from the variables its launcher sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from trellis.errors import ConfigurationError
from trellis.plugin import detect_cluster_environment
from trellis_clusters.kubeflow import KubeflowEnvironment
from trellis_clusters.lsf import LSFEnvironment
from trellis_clusters.mpi import MPIEnvironment
from trellis_clusters.slurm import SLURMEnvironment, first_host
from trellis_clusters.torchelastic import TorchElasticEnvironment

#: what torchrun --nnodes=2 --nproc-per-node=2 sets in its worker of global rank 3.
TORCHRUN = {"RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4",
            "ROLE_RANK": "3", "MASTER_ADDR": "10.1.0.5", "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "none"}
#: what srun sets in task 5 of `sbatch --nodes=2 --ntasks-per-node=4`.
SLURM = {"SLURM_JOB_ID": "481516", "SLURM_JOB_NAME": "train.sh", "SLURM_NTASKS": "8", "SLURM_PROCID": "5",
         "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_NTASKS_PER_NODE": "4",
         "SLURM_NODELIST": "gpu[017-018]", "SLURM_JOB_NODELIST": "gpu[017-018]"}
#: a Kubeflow PyTorchJob worker pod (replica 2 of 3).
KUBEFLOW = {"KUBERNETES_PORT": "tcp://10.96.0.1:443", "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456",
            "WORLD_SIZE": "3", "RANK": "2"}
#: OpenMPI's mpirun -np 4 --npernode 2, rank 2.
OPENMPI = {"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
#: MPICH/Intel MPI Hydra, mpiexec -n 2 on one host, rank 1.
MPICH = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
ALL_VARIABLES = {*TORCHRUN, *SLURM, *KUBEFLOW, *OPENMPI, *MPICH, "LSB_JOBID", "LSB_DJOB_RANKFILE",
                 "JSM_NAMESPACE_RANK", "JSM_NAMESPACE_LOCAL_RANK", "JSM_NAMESPACE_SIZE", "LSB_HOSTS_THIS",
                 "TRELLIS_DDP_LAUNCHED"}


@pytest.fixture(autouse=True)
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def set_all(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def ranks(environment) -> tuple:  # noqa: ANN001
    return (environment.global_rank(), environment.local_rank(), environment.node_rank(), environment.world_size(),
            environment.main_address, environment.main_port)


def test_nothing_is_detected_outside_a_launcher() -> None:
    assert detect_cluster_environment() is None


def test_torchelastic(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, TORCHRUN)
    environment = detect_cluster_environment()
    assert isinstance(environment, TorchElasticEnvironment)
    assert ranks(environment) == (3, 1, 1, 4, "10.1.0.5", 29400)
    environment.validate_settings(num_devices=2, num_nodes=2)
    with pytest.raises(ConfigurationError, match="started 4 processes in all .* num_nodes=1 = 2"):
        environment.validate_settings(num_devices=2, num_nodes=1)


def test_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, SLURM)
    environment = detect_cluster_environment()
    assert isinstance(environment, SLURMEnvironment)
    assert ranks(environment) == (5, 1, 1, 8, "gpu017", 15000 + 1516)
    environment.validate_settings(num_devices=4, num_nodes=2)
    with pytest.raises(ConfigurationError, match="started 4 processes per node but the Trainer has devices=2"):
        environment.validate_settings(num_devices=2, num_nodes=4)


def test_slurm_main_address_and_port_can_be_set_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, {**SLURM, "MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "12345"})
    assert ranks(SLURMEnvironment())[4:] == ("10.0.0.9", 12345)


@pytest.mark.parametrize(("nodelist", "host"), [
    ("gpu[017-018]", "gpu017"), ("node7", "node7"), ("a[3,5-9],b1", "a3"), ("login1,login2", "login1"),
    ("rack1-n[08-12]", "rack1-n08"),
])
def test_slurm_first_host_of_a_compressed_node_list(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


def test_an_interactive_slurm_allocation_is_not_a_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, {**SLURM, "SLURM_JOB_NAME": "bash"})
    assert detect_cluster_environment() is None


def test_torchrun_inside_slurm_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, {**SLURM, **TORCHRUN})
    assert isinstance(detect_cluster_environment(), TorchElasticEnvironment)


def test_kubeflow(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, KUBEFLOW)
    environment = detect_cluster_environment()
    assert isinstance(environment, KubeflowEnvironment)
    assert ranks(environment) == (2, 0, 2, 3, "job-master-0", 23456)
    environment.validate_settings(num_devices=1, num_nodes=3)


def test_lsf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rankfile = tmp_path / "rankfile"
    rankfile.write_text("batch1\nnodeA\nnodeA\nnodeB\nnodeB\n")  # first line: the launch node
    set_all(monkeypatch, {"LSB_JOBID": "7781", "LSB_DJOB_RANKFILE": str(rankfile), "JSM_NAMESPACE_RANK": "3",
                          "JSM_NAMESPACE_LOCAL_RANK": "1", "JSM_NAMESPACE_SIZE": "4", "LSB_HOSTS_THIS": "nodeB"})
    environment = detect_cluster_environment()
    assert isinstance(environment, LSFEnvironment)
    assert ranks(environment) == (3, 1, 1, 4, "nodeA", 15000 + 7781)


def test_openmpi(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, {**OPENMPI, "MASTER_ADDR": "head", "MASTER_PORT": "4000"})
    environment = detect_cluster_environment()
    assert isinstance(environment, MPIEnvironment)
    assert ranks(environment) == (2, 0, 1, 4, "head", 4000)


def test_mpi_across_nodes_needs_master_addr(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, OPENMPI)
    with pytest.raises(ConfigurationError, match="mpirun -x MASTER_ADDR"):
        _ = MPIEnvironment().main_address


def test_mpich_on_one_node(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, MPICH)
    assert ranks(detect_cluster_environment()) == (1, 1, 0, 2, "127.0.0.1", 29500)


def test_a_non_integer_rank_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    set_all(monkeypatch, {**TORCHRUN, "RANK": "three"})
    with pytest.raises(ConfigurationError, match="RANK='three' set by torchrun is not an integer"):
        TorchElasticEnvironment().global_rank()
