"""The kit's precision checks catch plugins that break optimizer_step's contract or DDP's gradient sync.

The broken plugins are a real installed distribution (dist-info and module on a fresh path), found by name in
this process and in the DDP ranks the check starts, as a third party's plugin would be.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support import make_distribution
from trellis import discovery
from trellis.testing import ConformanceFailure, Subject, Target, checks_for, run_check

BROKEN_PRECISIONS = """
import torch
from trellis.plugin import Precision

TRELLIS_PLUGIN_API = 1


class MasterWeightsBFloat16(Precision):
    '''bf16 parameters stepped through float32 masters by swapping parameter.data: DDP's hooks are dropped.'''

    name = "bf16-master-swap"
    param_dtype = torch.bfloat16

    def convert_module(self, module):
        return module.to(torch.bfloat16)

    def convert_input(self, batch):
        inputs, targets = batch
        return inputs.to(torch.bfloat16), targets.to(torch.bfloat16)

    def optimizer_step(self, optimizer, closure=None):
        result = closure() if closure is not None else None
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        for parameter in parameters:
            parameter.data = parameter.data.float()
            if parameter.grad is not None:
                parameter.grad = parameter.grad.float()
        optimizer.step()
        for parameter in parameters:
            parameter.data = parameter.data.to(torch.bfloat16)
        return result


class ClosureIgnored(Precision):
    name = "closure-ignored"

    def optimizer_step(self, optimizer, closure=None):
        return optimizer.step()


class ClosureTwice(Precision):
    name = "closure-twice"

    def optimizer_step(self, optimizer, closure=None):
        if closure is not None:
            closure()
        return optimizer.step(closure)
"""


@pytest.fixture
def broken_precisions(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install the broken plugins for this process and the processes it starts."""
    site = tmp_path / "site"
    names = {"bf16-master-swap": "MasterWeightsBFloat16", "closure-ignored": "ClosureIgnored",
             "closure-twice": "ClosureTwice"}
    make_distribution(site, "broken-precisions",
                      {"trellis.precision": {name: f"broken_precisions:{cls}" for name, cls in names.items()}},
                      {"broken_precisions.py": BROKEN_PRECISIONS})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    discovery.refresh()
    yield
    monkeypatch.undo()
    discovery.refresh()


def check(check_id: str):
    return next(check for check in checks_for("precision") if check.id == check_id)


def test_changing_a_parameter_dtype_in_optimizer_step_fails_the_ddp_check(broken_precisions) -> None:
    with pytest.raises(ConformanceFailure, match="the ranks hold different parameters") as failure:
        run_check(check("ddp"), Subject(Target.parse("precision:bf16-master-swap")))
    assert "gradients stopped being all-reduced" in str(failure.value)
    assert "Change dtypes in convert_module() only" in str(failure.value)


def test_changing_a_parameter_dtype_in_optimizer_step_fails_in_one_process_too(broken_precisions) -> None:
    with pytest.raises(ConformanceFailure, match="'layer.weight' is not the tensor it was: it was replaced"):
        run_check(check("optimizer_step"), Subject(Target.parse("precision:bf16-master-swap")))


@pytest.mark.parametrize(("name", "runs"), [("closure-ignored", 0), ("closure-twice", 2)])
def test_a_closure_not_run_exactly_once_fails(broken_precisions, name: str, runs: int) -> None:
    with pytest.raises(ConformanceFailure, match=rf"ran the closure {runs} times: run it once"):
        run_check(check("optimizer_step"), Subject(Target.parse(f"precision:{name}")))

