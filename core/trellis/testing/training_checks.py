"""Checks that run the plugin for real through trellis.Trainer: a short fit, an exact resume, DDP over gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trellis import discovery
from trellis.callbacks.base import Callback
from trellis.errors import ConfigurationError
from trellis.testing import workload
from trellis.testing.subject import ConformanceFailure, ConformanceSkip, Subject, failure_from

DDP_DEVICES = 2
MID_EPOCH_CHECKPOINT = "mid_epoch.ckpt"
DDP_TIMEOUT_S = 240


def role_flags(subject: Subject, root_dir: Path) -> dict[str, Any]:
    """Trainer flags that put the plugin under test into the run; every other role stays on CPU defaults."""
    name = subject.name
    flags: dict[str, Any] = {"accelerator": "cpu", "devices": 1}
    if subject.role == "accelerator":
        flags["accelerator"] = name
    elif subject.role == "strategy":
        flags["strategy"] = name
    elif subject.role == "precision":
        flags["precision"] = name
    elif subject.role == "checkpoint_io":
        flags["plugins"] = [subject.build()]
    elif subject.role == "logger":
        flags["logger"] = _recording_logger(subject, root_dir)
    elif subject.role == "callback":
        flags["callbacks"] = [subject.build()]
    return workload.trainer_flags(root_dir, **flags)


def check_train(subject: Subject, tmp_path: Path) -> None:
    """A short fit through Trainer updates the weights and keeps them finite, on the plugin's device and dtype."""
    subject.require_available()
    result = _uninterrupted_run(subject)
    trainer, module = result.trainer, result.module
    if trainer.global_step != workload.TOTAL_STEPS:
        raise ConformanceFailure(
            f"fit(max_steps={workload.TOTAL_STEPS}) with {subject.target} "
            f"stopped at global_step={trainer.global_step}: "
            "every training batch must end in one optimizer step"
        )
    weights = result.final_weights()
    if not all(torch.isfinite(value.float()).all() for value in weights.values()):
        raise ConformanceFailure(f"training with {subject.target} made the weights non-finite: {weights}")
    if all(torch.equal(weights[key], result.initial_weights[key].to(weights[key].dtype)) for key in weights):
        raise ConformanceFailure(
            f"training with {subject.target} left the weights unchanged: backward and optimizer_step must reach "
            "the parameters"
        )
    parameter = module.layer.weight
    if subject.role == "accelerator" and parameter.device.type != trainer.accelerator.device_type:
        raise ConformanceFailure(
            f"after fit the parameters are on {parameter.device}, not on the accelerator's device_type "
            f"{trainer.accelerator.device_type!r}: device() must return the device that setup moves the module to"
        )
    if subject.role == "precision" and parameter.dtype != trainer.precision_plugin.param_dtype:
        raise ConformanceFailure(
            f"after fit the parameters are {parameter.dtype}, "
            f"but param_dtype is {trainer.precision_plugin.param_dtype}: "
            "convert_module() must bring the module into param_dtype"
        )
    if subject.role == "logger":
        _check_logger_received(subject, trainer.logger)


def check_resume(subject: Subject, tmp_path: Path) -> None:
    """Saved mid-epoch and resumed, training ends with the same weights as a run never interrupted."""
    subject.require_available()
    uninterrupted = _uninterrupted_run(subject)
    path = uninterrupted.trainer.default_root_dir + f"/{MID_EPOCH_CHECKPOINT}"
    resumed = _run(subject, tmp_path / "resumed", workload.TOTAL_STEPS, ckpt_path=path)
    if resumed.trainer.global_step != workload.TOTAL_STEPS:
        raise ConformanceFailure(
            f"resumed from step {workload.STEPS_BEFORE_CHECKPOINT}, the run with {subject.target} ended at "
            f"global_step={resumed.trainer.global_step}, not {workload.TOTAL_STEPS}"
        )
    expected, actual = uninterrupted.final_weights(), resumed.final_weights()
    differences = {key: float((actual[key].double() - expected[key].double()).abs().max()) for key in expected}
    if any(differences.values()):
        raise ConformanceFailure(
            f"with {subject.target}, a run saved at step {workload.STEPS_BEFORE_CHECKPOINT} and resumed ends with "
            f"weights that differ from an uninterrupted run (largest differences {differences}). Everything that "
            "changes the next step must travel in the checkpoint: state_dict()/load_state_dict() of the plugin, "
            "and deterministic device kernels"
        )


class SaveMidEpoch(Callback):
    """Saves a checkpoint after step STEPS_BEFORE_CHECKPOINT, as a ModelCheckpoint would, while training goes on."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == workload.STEPS_BEFORE_CHECKPOINT:
            trainer.save_checkpoint(os.path.join(trainer.default_root_dir, MID_EPOCH_CHECKPOINT))


def check_ddp(subject: Subject, tmp_path: Path) -> None:
    """DDP over the accelerator's process-group backend: two processes end with identical weights."""
    subject.require_available()
    cls = subject.plugin_class()
    if cls.process_group_backend is None:
        raise ConformanceSkip(f"accelerator {subject.name!r} declares no process_group_backend, so no DDP run")
    if "ddp" not in discovery.names("strategy"):
        raise ConformanceSkip(
            "the 'ddp' strategy is not installed (distribution trellis-ddp): pip install trellis-ddp to run this check"
        )
    if cls.device_count() < DDP_DEVICES:
        raise ConformanceSkip(f"DDP needs {DDP_DEVICES} {subject.name} devices; this machine has {cls.device_count()}")
    command = [sys.executable, "-m", "trellis.testing.ddp_worker", subject.name, str(tmp_path)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=DDP_TIMEOUT_S, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        raise ConformanceFailure(
            f"DDP with accelerator={subject.name!r}, devices={DDP_DEVICES} did not finish in {DDP_TIMEOUT_S} s: a rank "
            f"is stuck; check that process_group_backend={cls.process_group_backend!r} is registered with "
            "torch.distributed and that setup_device() selects a distinct device per local rank"
        ) from None
    ranks = sorted(tmp_path.glob("rank*.json"))
    if result.returncode != 0 or len(ranks) != DDP_DEVICES:
        raise ConformanceFailure(
            f"DDP with accelerator={subject.name!r}, strategy='ddp', devices={DDP_DEVICES} failed (exit "
            f"{result.returncode}, {len(ranks)} of {DDP_DEVICES} ranks finished):\n{result.stderr.strip()[-3000:]}"
        )
    reports = [json.loads(path.read_text()) for path in ranks]
    if sorted(report["global_rank"] for report in reports) != list(range(DDP_DEVICES)) or any(
        report["world_size"] != DDP_DEVICES for report in reports
    ):
        raise ConformanceFailure(
            f"DDP ranks reported {reports}: expected global ranks 0..{DDP_DEVICES - 1} of world size {DDP_DEVICES}"
        )
    if any(report["weights"] != reports[0]["weights"] for report in reports):
        raise ConformanceFailure(
            f"after DDP training the ranks hold different weights {[report['weights'] for report in reports]}: "
            "gradients were not all-reduced; check process_group_backend and device()"
        )


def _uninterrupted_run(subject: Subject) -> workload.RunResult:
    """The full run, saving a checkpoint mid-epoch on the way; shared by the train and resume checks."""
    if "uninterrupted" not in subject.cache:
        subject.cache["uninterrupted"] = _run(
            subject, subject.scratch_dir() / "uninterrupted", workload.TOTAL_STEPS, extra_callbacks=[SaveMidEpoch()]
        )
    return subject.cache["uninterrupted"]


def _run(
    subject: Subject, root_dir: Path, max_steps: int, ckpt_path: str | None = None, extra_callbacks: Sequence[Any] = ()
) -> workload.RunResult:
    """A seeded fit; a precision or strategy that refuses one CPU device when chosen skips, any other error fails."""
    os.makedirs(root_dir, exist_ok=True)
    flags = role_flags(subject, root_dir)
    flags["callbacks"] = [*flags.get("callbacks", []), *extra_callbacks]
    try:
        run = workload.prepare(flags, max_steps)
    except ConfigurationError as error:
        if subject.role in ("precision", "strategy"):
            raise ConformanceSkip(f"{subject.target} cannot run on one CPU device: {error}") from None
        raise failure_from(f"Trainer(...) with {subject.target}", error) from error
    except Exception as error:
        raise failure_from(f"Trainer(...) with {subject.target}", error) from error
    try:
        return run.fit(ckpt_path)
    except Exception as error:
        raise failure_from(f"Trainer.fit with {subject.target}", error) from error


def _recording_logger(subject: Subject, root_dir: Path) -> Any:
    """The logger, built as the kernel builds it by name, recording what the Trainer hands it."""
    logger = subject.build(root_dir)
    logger.conformance_calls = {"metrics": [], "finalize": []}
    log_metrics, finalize = logger.log_metrics, logger.finalize

    def recording_log_metrics(metrics: Any, step: int) -> Any:
        logger.conformance_calls["metrics"].append((dict(metrics), step))
        return log_metrics(metrics, step=step)

    def recording_finalize(status: str) -> Any:
        logger.conformance_calls["finalize"].append(status)
        return finalize(status)

    logger.log_metrics, logger.finalize = recording_log_metrics, recording_finalize
    return logger


def _check_logger_received(subject: Subject, logger: Any) -> None:
    calls = logger.conformance_calls
    steps = [step for metrics, step in calls["metrics"] if "train_loss" in metrics]
    if not steps:
        raise ConformanceFailure(
            f"the Trainer logged train_loss through {subject.target}, but log_metrics never received it: "
            f"{calls['metrics']!r}"
        )
    if calls["finalize"] != ["success"]:
        raise ConformanceFailure(
            f"finalize() was called with {calls['finalize']!r} after a successful fit, not ['success']"
        )
