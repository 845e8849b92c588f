"""The plugin module of a scaffold, per role. Each one installs, passes the conformance kit and runs as is."""

ACCELERATOR = '''"""The ${name} accelerator for Trellis.

Until the ${name} runtime is wired in, the plugin computes on CPU tensors, so that it installs, passes the
conformance kit and trains at once. Replace each TODO with the device's calls.
"""

from __future__ import annotations

import os

import torch

from trellis.plugin import Accelerator

TRELLIS_PLUGIN_API = ${plugin_api}

#: how many stand-in devices (all of them the host CPU) to pretend to have; set it to 2 to try DDP.
STANDIN_DEVICES_VARIABLE = "${env_prefix}_STANDIN_DEVICES"


class ${cls}(Accelerator):
    """${name} devices. Class attributes are the descriptor the kernel reads without building devices."""

    name = "${name}"
    #: TODO: the torch device type of your tensors (the name your runtime registers with torch).
    device_type = "cpu"
    #: TODO: the torch.distributed backend of your collectives library; None when DDP cannot run.
    process_group_backend = "gloo"
    #: TODO: raise above 0 (the CPU's) once the device is real, so that accelerator="auto" prefers it.
    auto_priority = -1

    @classmethod
    def is_available(cls) -> bool:
        # TODO: import the runtime here, not at module level, and ask it:
        #     try:
        #         import ${package}_runtime
        #     except ImportError:
        #         return False
        #     return ${package}_runtime.device_count() > 0
        return cls.device_count() > 0

    @classmethod
    def unavailable_reason(cls) -> str:
        return "no ${name} device was found: install the ${name} runtime and check that its driver sees a device"

    @classmethod
    def device_count(cls) -> int:
        # TODO: return the runtime's device count.
        return int(os.environ.get(STANDIN_DEVICES_VARIABLE, "1"))

    def device(self, index: int) -> torch.device:
        # TODO: return torch.device(self.device_type, index)
        return torch.device("cpu")

    def setup_device(self, device: torch.device) -> None:
        # TODO: select the device for this process (e.g. ${package}_runtime.set_device(device.index)).
        pass

    def device_stats(self, device: torch.device) -> dict[str, float]:
        # TODO: memory and utilisation figures from the runtime.
        return {}
'''

STRATEGY = '''"""The ${name} strategy for Trellis: how work is spread over processes and devices.

It starts as the single-process strategy; override what yours changes (launcher, setup_environment,
wrap_module, the collectives reduce/all_gather/broadcast/barrier, which rank writes checkpoints).
"""

from __future__ import annotations

import torch

from trellis.plugin import Strategy

TRELLIS_PLUGIN_API = ${plugin_api}


class ${cls}(Strategy):
    """One process on one device until you override more."""

    name = "${name}"

    def wrap_module(self, module: torch.nn.Module) -> torch.nn.Module:
        # TODO: wrap the module the way your strategy runs it (a DDP-like wrapper, a sharding engine).
        return module
'''

PRECISION = '''"""The ${name} precision for Trellis: module conversion, forward context and loss scaling."""

from __future__ import annotations

import contextlib

import torch

from trellis.plugin import Precision

TRELLIS_PLUGIN_API = ${plugin_api}


class ${cls}(Precision):
    """Full float32 until you change the dtypes and the forward context."""

    name = "${name}"
    #: TODO: dtype parameters (and optimizer state) are kept in.
    param_dtype = torch.float32
    #: TODO: dtype autocast computes in, or None for no autocast.
    compute_dtype = None

    def forward_context(self, device_type: str) -> contextlib.AbstractContextManager:
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.compute_dtype)
'''

LOGGER = '''"""The ${name} logger for Trellis. It writes JSON lines until you send metrics to your backend."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from trellis.plugin import Logger, RunDirectory, global_rank

TRELLIS_PLUGIN_API = ${plugin_api}
METRICS_FILE = "metrics.jsonl"


class ${cls}(Logger):
    """Metrics as one JSON object per line in <save_dir>/${name}/run_N/metrics.jsonl, one run_N per fit.

    The resume contract (docs/plugins.md, "Logger"), which the conformance kit checks: a checkpoint names the
    run and counts its rows; a resumed fit cuts the file back to those rows and appends; a fresh fit gets the
    next run_N (or takes over a run killed before its first checkpoint), so no row is ever written twice.
    """

    name = "${name}"

    def __init__(self, save_dir: str | os.PathLike = ".", version: int | str | None = None) -> None:
        self.save_dir = os.fspath(save_dir)
        self._run = RunDirectory(self.save_dir, "${name}", version, owned=(METRICS_FILE,), prefix="run_")
        self._rows = 0

    @property
    def version(self) -> int | str:
        return self._run.version

    @property
    def log_dir(self) -> str:
        return self._run.path

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        # TODO: send to your backend. This runs on the training thread: a backend that can be slow or fail
        # should only queue here and send from a thread (the in-tree loggers share
        # trellis.utils.background.BackgroundDelivery for that).
        self._run.claim()
        with open(os.path.join(self.log_dir, METRICS_FILE), "a") as file:
            file.write(json.dumps({"step": step, **{key: float(value) for key, value in metrics.items()}}) + "\\n")
        self._rows += 1

    def finalize(self, status: str) -> None:
        self._run.release(status)

    def state_dict(self) -> dict[str, Any]:
        self._run.mark_checkpointed()
        return {"version": self.version, "rows": self._rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the checkpoint's run without the rows written after it (the resumed fit logs them again)."""
        self._run.continue_run(state["version"])
        self._rows = state["rows"]
        path = os.path.join(self.log_dir, METRICS_FILE)
        if global_rank() == 0 and os.path.exists(path):
            with open(path) as file:
                kept = file.readlines()[: self._rows]
            with open(path, "w") as file:
                file.writelines(kept)

    def read_back(self) -> list[tuple[int, str, float]]:
        """What the backend holds for this run, for the kit (TODO: query your backend)."""
        path = os.path.join(self.log_dir, METRICS_FILE)
        if not os.path.exists(path):
            return []
        with open(path) as file:
            records = [json.loads(line) for line in file]
        return [(record["step"], key, value) for record in records for key, value in record.items() if key != "step"]
'''

CHECKPOINT_IO = '''"""The ${name} checkpoint IO for Trellis: atomic writes, safe (weights-only) loads."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

from trellis.plugin import CheckpointIO, PathLike

TRELLIS_PLUGIN_API = ${plugin_api}


class ${cls}(CheckpointIO):
    """A local file written beside its target and renamed into place; replace the storage calls with yours."""

    name = "${name}"

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(descriptor, "wb") as file:
            torch.save(checkpoint, file)
        os.replace(temporary, path)

    def load_checkpoint(self, path: PathLike, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
        return torch.load(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: PathLike) -> None:
        if os.path.exists(path):
            os.unlink(path)

    def exists(self, path: PathLike) -> bool:
        return os.path.exists(path)
'''

CLUSTER_ENVIRONMENT = '''"""The ${name} cluster environment for Trellis: ranks and rendezvous from the ${name} launcher."""

from __future__ import annotations

import os

from trellis.plugin import ClusterEnvironment

TRELLIS_PLUGIN_API = ${plugin_api}

# TODO: the variables your launcher sets.
WORLD_SIZE, RANK = "${env_prefix}_WORLD_SIZE", "${env_prefix}_RANK"
LOCAL_RANK, NODE_RANK = "${env_prefix}_LOCAL_RANK", "${env_prefix}_NODE_RANK"
ADDRESS, PORT = "${env_prefix}_MASTER_ADDR", "${env_prefix}_MASTER_PORT"


class ${cls}(ClusterEnvironment):
    """Detected when the launcher's variables are set."""

    name = "${name}"
    auto_priority = 1

    @classmethod
    def detect(cls) -> bool:
        return all(variable in os.environ for variable in (WORLD_SIZE, RANK))

    @property
    def main_address(self) -> str:
        return os.environ.get(ADDRESS, "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get(PORT, "29500"))

    def world_size(self) -> int:
        return int(os.environ[WORLD_SIZE])

    def global_rank(self) -> int:
        return int(os.environ[RANK])

    def local_rank(self) -> int:
        return int(os.environ.get(LOCAL_RANK, "0"))

    def node_rank(self) -> int:
        return int(os.environ.get(NODE_RANK, "0"))
'''  # noqa: E501 (the template's first line is the generated module's docstring)

CALLBACK = '''"""The ${name} callback for Trellis: hooks into the loops, with state that travels in checkpoints."""

from __future__ import annotations

from typing import Any

import trellis

TRELLIS_PLUGIN_API = ${plugin_api}


class ${cls}(trellis.Callback):
    """Counts optimizer steps; replace with what your callback does (hooks are listed in docs/hooks.md)."""

    def __init__(self) -> None:
        self.steps_seen = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.steps_seen += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps_seen": self.steps_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_seen = state["steps_seen"]
'''

MODULES = {
    "accelerator": ACCELERATOR,
    "strategy": STRATEGY,
    "precision": PRECISION,
    "logger": LOGGER,
    "checkpoint_io": CHECKPOINT_IO,
    "cluster_environment": CLUSTER_ENVIRONMENT,
    "callback": CALLBACK,
}
