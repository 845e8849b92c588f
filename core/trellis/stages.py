"""What a Trainer is doing: the entry point, its status and the running loop, as Lightning names them.

Each loop stage is one record (its step method, loader method, limit flag and hook names), so the
loops and the Trainer never translate between spellings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import cast

from trellis.hookspecs import HookName


class TrainerFn(str, Enum):
    """The entry point being run."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class TrainerStatus(str, Enum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


class RunningStage(str, Enum):
    """The loop running now (the sanity check is validation before training)."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


@dataclass
class TrainerState:
    fn: TrainerFn | None = None
    status: TrainerStatus = TrainerStatus.INITIALIZING
    stage: RunningStage | None = None

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED


@dataclass(frozen=True)
class LoopStage:
    """One loop's names: `name` is also where its metrics aggregate and the infix of its hooks."""

    name: str
    running_stage: RunningStage
    step_method: str
    loader_method: str
    limit_flag: str

    def hook(self, event: str) -> HookName:
        """`on_{name}_{event}`: "start", "end", "epoch_start", "batch_end", ..."""
        return cast(HookName, f"on_{self.name}_{event}")


TRAIN = LoopStage("train", RunningStage.TRAINING, "training_step", "train_dataloader", "limit_train_batches")
VALIDATION = LoopStage("validation", RunningStage.VALIDATING, "validation_step", "val_dataloader", "limit_val_batches")
TEST = LoopStage("test", RunningStage.TESTING, "test_step", "test_dataloader", "limit_test_batches")
PREDICT = LoopStage("predict", RunningStage.PREDICTING, "predict_step", "predict_dataloader", "limit_predict_batches")


@dataclass(frozen=True)
class EntryPoint:
    """A Trainer entry point: what it runs, and the setup/teardown stage name hooks receive."""

    fn: TrainerFn
    loop: LoopStage

    @property
    def verb(self) -> str:
        return self.fn.value


FIT = EntryPoint(TrainerFn.FITTING, TRAIN)
VALIDATE = EntryPoint(TrainerFn.VALIDATING, VALIDATION)
TEST_ENTRY = EntryPoint(TrainerFn.TESTING, TEST)
PREDICT_ENTRY = EntryPoint(TrainerFn.PREDICTING, PREDICT)
