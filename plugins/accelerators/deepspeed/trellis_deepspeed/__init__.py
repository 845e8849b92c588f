"""Trellis strategy plugin: DeepSpeed (ZeRO stages 1-3, CPU offload) with the Trainer's loop.

Importing this package does not import deepspeed; the strategy does when it runs.
"""

from __future__ import annotations

from trellis_deepspeed.checkpoint import convert_to_fp32_checkpoint, fp32_state_dict
from trellis_deepspeed.strategy import DeepSpeedStrategy

TRELLIS_PLUGIN_API = 1

__all__ = [
    "DeepSpeedStrategy",
    "convert_to_fp32_checkpoint",
    "fp32_state_dict",
    "stage_1",
    "stage_2",
    "stage_2_offload",
    "stage_3",
    "stage_3_offload",
]


def stage_1() -> DeepSpeedStrategy:
    """ZeRO stage 1: optimizer states partitioned over processes."""
    return DeepSpeedStrategy(stage=1)


def stage_2() -> DeepSpeedStrategy:
    """ZeRO stage 2: optimizer states and gradients partitioned."""
    return DeepSpeedStrategy(stage=2)


def stage_2_offload() -> DeepSpeedStrategy:
    """ZeRO stage 2 with optimizer states and steps on the CPU."""
    return DeepSpeedStrategy(stage=2, offload_optimizer=True)


def stage_3() -> DeepSpeedStrategy:
    """ZeRO stage 3: optimizer states, gradients and parameters partitioned."""
    return DeepSpeedStrategy(stage=3)


def stage_3_offload() -> DeepSpeedStrategy:
    """ZeRO stage 3 with optimizer states and parameters kept on the CPU."""
    return DeepSpeedStrategy(stage=3, offload_optimizer=True, offload_parameters=True)
