"""Which checks apply to which role, in the order they run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trellis.testing import (
    checkpoint_io_checks,
    contract_checks,
    logger_checks,
    precision_checks,
    role_checks,
    training_checks,
)
from trellis.testing.subject import Subject


@dataclass(frozen=True)
class Check:
    """One named contract check; `run` raises ConformanceFailure (what to fix) or ConformanceSkip (why not here)."""

    id: str
    run: Callable[[Subject, Path], None]

    @property
    def summary(self) -> str:
        return (self.run.__doc__ or self.id).strip().split("\n")[0]


_CONTRACT = [
    Check("entry_point", contract_checks.check_entry_point),
    Check("imports", contract_checks.check_imports),
    Check("descriptor", contract_checks.check_descriptor),
    Check("cheap_import", contract_checks.check_cheap_import),
]
_TRAIN = [Check("train", training_checks.check_train), Check("resume", training_checks.check_resume)]
_STATE = [Check("state_round_trip", role_checks.check_state_round_trip)]

CHECKS: dict[str, list[Check]] = {
    "accelerator": [
        *_CONTRACT,
        Check("availability", role_checks.check_availability),
        Check("parse_devices", role_checks.check_parse_devices),
        Check("device_placement", role_checks.check_device_placement),
        *_TRAIN,
        Check("ddp", training_checks.check_ddp),
    ],
    "strategy": [*_CONTRACT, *_TRAIN],
    "precision": [
        *_CONTRACT,
        *_STATE,
        *_TRAIN,
        Check("optimizer_step", precision_checks.check_optimizer_step),
        Check("ddp", precision_checks.check_ddp),
    ],
    "logger": [*_CONTRACT, *_STATE, *_TRAIN, Check("logger_resume", logger_checks.check_logger_resume)],
    "checkpoint_io": [
        *_CONTRACT,
        Check("checkpoint_round_trip", role_checks.check_checkpoint_round_trip),
        Check("safe_loading", role_checks.check_safe_loading),
        *_TRAIN,
        Check("kill_mid_save", checkpoint_io_checks.check_kill_mid_save),
    ],
    "cluster_environment": [*_CONTRACT, Check("detection", role_checks.check_detection)],
    "callback": [*_CONTRACT, *_STATE, *_TRAIN],
}


def checks_for(role: str) -> list[Check]:
    """The checks a plugin of `role` must pass."""
    return CHECKS[role]
