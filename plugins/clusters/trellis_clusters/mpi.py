"""MPI launchers: OpenMPI (OMPI_COMM_WORLD_*) and MPICH / Intel MPI Hydra (PMI_*, MPI_LOCAL*)."""

from __future__ import annotations

import os

from trellis.errors import ConfigurationError
from trellis.plugin import ClusterEnvironment
from trellis_clusters._variables import all_set, check_layout, read_int

#: (launcher, global rank, world size, local rank, local size) variable names per MPI family.
FAMILIES = (
    ("OpenMPI (mpirun)", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MPICH/Intel MPI (mpiexec)", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
)
DEFAULT_PORT = 29500


def _family() -> tuple[str, str, str, str, str] | None:
    return next((family for family in FAMILIES if all_set(*family[1:])), None)


class MPIEnvironment(ClusterEnvironment):
    """Ranks from mpirun's variables; MASTER_ADDR must be exported across nodes (mpirun -x MASTER_ADDR)."""

    name = "mpi"
    auto_priority = 10

    @classmethod
    def detect(cls) -> bool:
        return _family() is not None

    def _variables(self) -> tuple[str, str, str, str, str]:
        family = _family()
        if family is None:
            raise ConfigurationError("no MPI rank variables are set: start the script with mpirun/mpiexec")
        return family

    @property
    def main_address(self) -> str:
        if "MASTER_ADDR" in os.environ:
            return os.environ["MASTER_ADDR"]
        launcher, _, world, _, local = self._variables()
        if read_int(world, launcher) == read_int(local, launcher):
            return "127.0.0.1"
        raise ConfigurationError(
            f"{launcher} started processes on several nodes but MASTER_ADDR is not set: export the first node's "
            "address to every rank (mpirun -x MASTER_ADDR=<host> -x MASTER_PORT=<port>)"
        )

    @property
    def main_port(self) -> int:
        return read_int("MASTER_PORT", "the user") if "MASTER_PORT" in os.environ else DEFAULT_PORT

    def world_size(self) -> int:
        launcher, _, world, _, _ = self._variables()
        return read_int(world, launcher)

    def global_rank(self) -> int:
        launcher, rank, _, _, _ = self._variables()
        return read_int(rank, launcher)

    def local_rank(self) -> int:
        launcher, _, _, local_rank, _ = self._variables()
        return read_int(local_rank, launcher)

    def node_rank(self) -> int:
        """Ranks fill nodes in order (mpirun's default --map-by slot), so the node is rank // ranks per node."""
        launcher, _, _, _, local = self._variables()
        return self.global_rank() // read_int(local, launcher)

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        launcher, _, _, _, local = self._variables()
        check_layout(launcher, self.world_size(), read_int(local, launcher), num_devices, num_nodes)
