"""Checks of the precision contract: optimizer_step with and without a closure, and training under DDP.

DDP all-reduces gradients from hooks that torch keeps on each parameter. A precision plugin that replaces a
parameter's tensor or changes its dtype after the strategy wrapped the module drops those hooks without an
error, and the ranks drift apart; these checks catch that in one process and over two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import torch

from trellis import discovery
from trellis.errors import ConfigurationError
from trellis.roles.precision import Precision
from trellis.testing import processes, workload
from trellis.testing.ddp_worker import ReportWeights
from trellis.testing.subject import ConformanceFailure, ConformanceSkip, Subject, describe
from trellis.testing.training_checks import DDP_DEVICES as DDP_PROCESSES
from trellis.testing.training_checks import DDP_TIMEOUT_S

#: a loss-scaling plugin skips its first steps while the scale backs off from an overflowing start.
STEP_ATTEMPTS = 8
#: the script each DDP rank runs; DDP starts the second rank by re-running it, as it does a user's script.
DDP_SCRIPT = """\
import sys
from trellis.testing.precision_checks import train_under_ddp
train_under_ddp(sys.argv[1], sys.argv[2])
"""
IN_PLACE_ADVICE = (
    "DDP all-reduces gradients from hooks on each parameter, which torch drops when a parameter's tensor is "
    "replaced or its dtype changes after the strategy wrapped the module. Change dtypes in convert_module() only, "
    "keep master copies in tensors of your own, and write results back in place (parameter.copy_(master))"
)


def check_optimizer_step(subject: Subject, tmp_path: Path) -> None:
    """optimizer_step runs a closure once and returns its result, steps on present gradients without one, in place."""
    precision = _build(subject)
    for with_closure in (True, False):
        module, optimizer, batch = _converted_regression(precision)
        parameters = dict(module.named_parameters())
        before = {name: (parameter.dtype, parameter.data_ptr(), parameter.detach().clone())
                  for name, parameter in parameters.items()}
        for _ in range(STEP_ATTEMPTS):
            if with_closure:
                _step_with_closure(precision, module, optimizer, batch)
            else:
                optimizer.zero_grad()
                precision.backward(_loss(precision, module, batch), module)
                _call(precision, "optimizer_step", optimizer, None)
            _require_same_parameters(module, parameters, before)
            if any(not torch.equal(parameters[name], values) for name, (_, _, values) in before.items()):
                break
        else:
            how = "a closure that runs forward and backward" if with_closure else "closure=None after backward"
            raise ConformanceFailure(
                f"{STEP_ATTEMPTS} calls of optimizer_step(optimizer, {how}) left the parameters unchanged: step the "
                "optimizer (a loss-scaling plugin may skip a step whose gradients overflowed, not every step)"
            )


def check_ddp(subject: Subject, tmp_path: Path) -> None:
    """Two CPU processes train with the precision under strategy="ddp" and end with identical parameters."""
    if "ddp" not in discovery.names("strategy"):
        raise ConformanceSkip(
            "the 'ddp' strategy is not installed (distribution trellis-ddp): pip install trellis-ddp to run this check"
        )
    _build(subject)
    script = tmp_path / "train_ddp.py"
    script.write_text(DDP_SCRIPT)
    try:
        result = processes.run([sys.executable, str(script), subject.name, str(tmp_path)], timeout=DDP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConformanceFailure(
            f"DDP over {DDP_PROCESSES} CPU processes with precision={subject.name!r} did not finish in "
            f"{DDP_TIMEOUT_S} s: a rank is stuck in a collective, which happens when the ranks stop running the same "
            "steps (a step skipped on one rank only, a collective inside a precision method)"
        ) from None
    refusals = sorted(tmp_path.glob("refused*.txt"))
    if refusals:
        raise ConformanceSkip(f"{subject.target} refuses DDP on CPU: {refusals[0].read_text()}")
    reports = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    if result.returncode != 0 or len(reports) != DDP_PROCESSES:
        raise ConformanceFailure(
            f"strategy='ddp', devices={DDP_PROCESSES} on CPU with precision={subject.name!r} failed (exit "
            f"{result.returncode}, {len(reports)} of {DDP_PROCESSES} ranks finished):\n{result.stderr.strip()[-3000:]}"
        )
    first, *others = reports
    differences = {
        key: max(abs(a - b) for a, b in zip(first["weights"][key], other["weights"][key]))
        for other in others for key in first["weights"] if other["weights"][key] != first["weights"][key]
    }
    if differences:
        raise ConformanceFailure(
            f"after {workload.TOTAL_STEPS} steps of DDP with precision={subject.name!r} the ranks hold different "
            f"parameters (largest differences {differences}): their gradients stopped being all-reduced, with no "
            f"error. {IN_PLACE_ADVICE}"
        )


def train_under_ddp(precision: str, out_dir: str) -> None:
    """One rank of check_ddp's run; a ConfigurationError (the plugin refuses this setup) is written, not raised."""
    out = Path(out_dir)
    flags = workload.trainer_flags(out, accelerator="cpu", strategy="ddp", devices=DDP_PROCESSES,
                                   precision=precision, callbacks=[ReportWeights(out)])
    try:
        workload.fit(flags, workload.TOTAL_STEPS)
    except ConfigurationError as error:
        (out / f"refused{os.environ.get('RANK', '0')}.txt").write_text(str(error))


def _build(subject: Subject) -> Precision:
    """The plugin built as the kernel builds it by name; one that refuses this machine skips the check."""
    try:
        return subject.build()
    except ConformanceFailure as failure:
        if isinstance(failure.__cause__, ConfigurationError):
            raise ConformanceSkip(f"{subject.target} cannot be built here: {failure.__cause__}") from None
        raise


def _converted_regression(precision: Precision) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """The kit's tiny model, converted as a strategy converts it, its SGD optimizer and a converted batch."""
    torch.manual_seed(7)
    module = _call(precision, "convert_module", workload.TinyRegression())
    optimizer = module.configure_optimizers()
    batch = _call(precision, "convert_input", next(iter(workload.make_loader())))
    return module, optimizer, batch


def _loss(precision: Precision, module: torch.nn.Module, batch: Any) -> torch.Tensor:
    """TinyRegression's training loss, forward inside the precision's context as the strategy runs it."""
    inputs, targets = batch
    try:
        context = precision.forward_context("cpu")
    except ConfigurationError as error:
        raise ConformanceSkip(f"{type(precision).__qualname__} cannot run on CPU: {error}") from None
    layer = cast(torch.nn.Linear, module.layer)  # TinyRegression's
    with context:
        return torch.nn.functional.mse_loss(layer(inputs), targets.to(layer.weight.dtype))


def _step_with_closure(
    precision: Precision, module: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Any
) -> None:
    """One optimizer_step given a closure, as manual optimization passes it: the closure must run exactly once."""
    losses: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _loss(precision, module, batch)
        precision.backward(loss, module)
        losses.append(loss)
        return loss

    result = _call(precision, "optimizer_step", optimizer, closure)
    if len(losses) != 1:
        raise ConformanceFailure(
            f"optimizer_step(SGD, closure) ran the closure {len(losses)} times: run it once (pass it to "
            "optimizer.step(closure), or call it yourself and then optimizer.step()); the closure runs forward and "
            "backward, so a second run adds its gradients again and none leaves them empty"
        )
    if result is not losses[0]:
        raise ConformanceFailure(
            f"optimizer_step(optimizer, closure) returned {result!r}, not the closure's loss: return what the "
            "closure returned, as optimizer.step(closure) does (manual optimization hands it back to training_step)"
        )


def _require_same_parameters(
    module: torch.nn.Module,
    parameters: dict[str, torch.nn.Parameter],
    before: dict[str, tuple[torch.dtype, int, torch.Tensor]],
) -> None:
    """The module holds the same parameter objects, in the same dtype and storage, as before the step."""
    for name, parameter in module.named_parameters():
        dtype, pointer, _ = before[name]
        if parameter is not parameters[name] or parameter.dtype != dtype or parameter.data_ptr() != pointer:
            change = (
                f"its dtype changed from {dtype} to {parameter.dtype}" if parameter.dtype != dtype
                else "it was replaced by another tensor"
            )
            raise ConformanceFailure(
                f"after optimizer_step the parameter {name!r} is not the tensor it was: {change}. {IN_PLACE_ADVICE}"
            )


def _call(target: Any, method: str, *args: Any) -> Any:
    """Call a plugin method; an error becomes a failure naming it (a ConfigurationError a skip: refused here)."""
    try:
        return getattr(target, method)(*args)
    except ConfigurationError as error:
        raise ConformanceSkip(f"{type(target).__qualname__}.{method}() refuses this setup: {error}") from None
    except (ConformanceFailure, ConformanceSkip):
        raise
    except Exception as error:
        raise ConformanceFailure(f"{type(target).__qualname__}.{method}() raised {describe(error)}") from error
