"""Source of third-party plugin modules that the discovery, selection and report tests install as real distributions."""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = str(Path(__file__).resolve().parents[1])

NPU_MODULE = """
import torch
from trellis.plugin import Accelerator

TRELLIS_PLUGIN_API = 1


class NPU(Accelerator):
    name = "npu"
    device_type = "cpu"
    process_group_backend = "gloo"
    auto_priority = 5

    @classmethod
    def is_available(cls):
        return True

    @classmethod
    def device_count(cls):
        return 1

    def device(self, index):
        return torch.device("cpu")
"""

#: an accelerator whose availability check itself crashes (a vendor SDK raising instead of returning False).
RAISING_NPU_MODULE = NPU_MODULE.replace("        return True\n", "        raise RuntimeError('driver exploded')\n", 1)

#: a cluster environment whose detect() raises.
RAISING_ENVIRONMENT_MODULE = """
from trellis.plugin import ClusterEnvironment

TRELLIS_PLUGIN_API = 1


class Flaky(ClusterEnvironment):
    name = "flaky"
    auto_priority = 100

    @classmethod
    def detect(cls):
        raise KeyError("FLAKY_JOB_ID")
"""

TRAIN_THREE_STEPS = """
import sys
sys.path.insert(0, {tests!r})
from support import TinyRegressor, loader, quiet_trainer
trainer = quiet_trainer(max_steps=3, **{flags})
trainer.fit(TinyRegressor(), loader())
print(type(trainer.accelerator).__name__, trainer.global_step)
"""


def train_three_steps(**flags: object) -> str:
    """A script that trains three steps with `flags` and prints the accelerator's class and the step."""
    return TRAIN_THREE_STEPS.format(tests=TESTS_DIR, flags=repr(flags))
