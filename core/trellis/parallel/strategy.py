"""The base of strategies over torch.distributed: processes, ranks, the process group and collectives.

DDP, FSDP and DeepSpeed differ in how they wrap the model; how they get their processes (the cluster's
launcher, re-running the script, or spawning), join the group and talk across it is this class, and a
third party's strategy for its own device gets the same by subclassing it.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, ClassVar, TypeVar

import torch

from trellis.errors import ConfigurationError
from trellis.parallel import collectives
from trellis.parallel.environment import LocalEnvironment
from trellis.parallel.ports import free_port
from trellis.roles.cluster_environment import ClusterEnvironment
from trellis.roles.strategy import Launcher, Strategy

T = TypeVar("T")
#: torch's own default collective timeout.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


class ParallelStrategy(Strategy):
    """One process per device over `devices` x `num_nodes`, joined in a torch.distributed process group.

    Processes come from the cluster launcher that started this one (torchrun, srun, mpirun, ...) or,
    when none is detected, from re-running this script for the other local ranks (`start_method` None)
    or from torch.multiprocessing (`start_method` "spawn" or "fork"). The process-group backend is the
    accelerator's.
    """

    #: None: re-run the script for the other ranks; "spawn"/"fork": torch.multiprocessing.
    start_method: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        timeout: float | datetime.timedelta = DEFAULT_TIMEOUT,
        cluster_environment: ClusterEnvironment | None = None,
    ) -> None:
        super().__init__()
        self.timeout = timeout if isinstance(timeout, datetime.timedelta) else datetime.timedelta(seconds=timeout)
        self.cluster_environment = cluster_environment
        self._launcher: Launcher | None = None

    # -- wiring -----------------------------------------------------------------------------
    def connect(self, accelerator, precision, checkpoint_io, devices, num_nodes) -> None:  # noqa: ANN001
        super().connect(accelerator, precision, checkpoint_io, devices, num_nodes)
        if accelerator.process_group_backend is None:
            raise ConfigurationError(
                f"strategy={self.name!r} needs a process-group backend, and accelerator {accelerator.name!r} declares "
                "none (its process_group_backend is None): choose another accelerator, or set process_group_backend "
                "on it"
            )
        if num_nodes < 1:
            raise ConfigurationError(f"num_nodes={num_nodes}: pass 1 or more")
        if self.cluster_environment is None:
            self.cluster_environment = self.choose_environment()
        self.cluster_environment.validate_settings(len(devices), num_nodes)

    def choose_environment(self) -> ClusterEnvironment:
        """The environment that launched this process, or a LocalEnvironment for processes started here."""
        from trellis.selection import detect_cluster_environment

        local = LocalEnvironment(len(self.devices), self.num_nodes)
        if local.launched():
            return local
        detected = detect_cluster_environment()
        if detected is not None and self.start_method is not None:
            raise ConfigurationError(
                f"strategy={self.name!r} starts its own processes, but {detected.name} already started this one: "
                "use strategy='ddp'"
            )
        return detected if detected is not None else local

    @property
    def launcher(self) -> Launcher | None:
        assert self.cluster_environment is not None  # chosen in connect()
        if self.cluster_environment.creates_processes_externally:
            return None
        if self._launcher is None:
            self._launcher = self._make_launcher()
        return self._launcher

    def _make_launcher(self) -> Launcher | None:
        if self.start_method is None:
            from trellis.parallel.script_launcher import ScriptLauncher

            return ScriptLauncher(len(self.devices), self.num_nodes) if self.world_size > 1 else None
        from trellis.parallel.spawn_launcher import SpawnLauncher

        if self.num_nodes != 1:
            raise ConfigurationError(
                f"strategy={self.name!r} runs on one machine; for num_nodes={self.num_nodes} use strategy='ddp' under "
                "torchrun or srun"
            )
        return SpawnLauncher(len(self.devices), self.start_method)

    def setup_environment(self) -> None:
        """Set up this process's device and join the process group (once per process)."""
        from trellis.parallel.process_group import join_process_group
        from trellis.parallel.script_launcher import end_at_first_failure, follow_launcher

        super().setup_environment()
        if torch.distributed.is_initialized():
            return
        environment = self.cluster_environment
        assert environment is not None and self.accelerator is not None  # chosen in connect()
        if isinstance(environment, LocalEnvironment):
            follow_launcher()
            os.environ.setdefault("MASTER_ADDR", environment.main_address)
            if "MASTER_PORT" not in os.environ:  # a world of one, nobody launched: pick the port here
                os.environ["MASTER_PORT"] = str(free_port(os.environ["MASTER_ADDR"]))
        else:
            os.environ.setdefault("MASTER_ADDR", environment.main_address)
            os.environ.setdefault("MASTER_PORT", str(environment.main_port))
        join_process_group(self.accelerator.process_group_backend, self.global_rank, self.world_size, self.timeout)
        if isinstance(environment, LocalEnvironment):
            end_at_first_failure(self.global_rank)

    # -- topology ---------------------------------------------------------------------------
    @property
    def global_rank(self) -> int:
        return self.cluster_environment.global_rank() if self.cluster_environment else 0

    @property
    def local_rank(self) -> int:
        return self.cluster_environment.local_rank() if self.cluster_environment else 0

    @property
    def node_rank(self) -> int:
        return self.cluster_environment.node_rank() if self.cluster_environment else 0

    @property
    def world_size(self) -> int:
        return self.cluster_environment.world_size() if self.cluster_environment else 1

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        return {"num_replicas": self.world_size, "rank": self.global_rank}

    # -- collectives --------------------------------------------------------------------------
    def reduce(self, value: Any, op: str = "mean") -> Any:
        return collectives.reduce(value, self.root_device, op)

    def all_gather(self, tensor: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
        return collectives.all_gather(tensor, self.root_device, sync_grads)

    def broadcast(self, obj: T, src: int = 0) -> T:
        return collectives.broadcast(obj, src)

    def barrier(self, name: str | None = None) -> None:
        collectives.barrier()
