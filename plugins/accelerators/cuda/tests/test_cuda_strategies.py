"""Distributed strategies on CUDA GPUs: DDP and FSDP over nccl on every visible GPU, DeepSpeed ZeRO 2 and 3.

Each run is a real script (scripts/cuda_fit.py) in processes of its own, as a user starts it: DDP and FSDP
start their other ranks themselves; DeepSpeed on more than one GPU is started with torchrun.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from trellis.testing.processes import run

SCRIPTS = Path(__file__).parent / "scripts"
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
TIMEOUT_S = 300
STEPS = 40

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPUS == 0, reason="needs a CUDA GPU; this machine has none")]


def fit(out: Path, strategy: str, precision: str = "32-true", torchrun: bool = False) -> list[dict[str, Any]]:
    """Train on every visible GPU; every rank's report, after checking that each ran on its own GPU."""
    arguments = [str(SCRIPTS / "cuda_fit.py"), "--out", str(out), "--strategy", strategy, "--devices", str(GPUS),
                 "--precision", precision, "--steps", str(STEPS)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={GPUS}"]
    result = run([*launcher, *arguments] if torchrun else [sys.executable, *arguments], timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-4000:]
    reports = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(GPUS)]
    assert [(report["world_size"], report["device_type"]) for report in reports] == [(GPUS, "cuda")] * GPUS
    return reports


def learned(report: dict[str, Any]) -> bool:
    """The copy task is learnt: the last losses are a small fraction of the first."""
    losses = report["losses"]
    return len(losses) == STEPS and sum(losses[-5:]) < 0.25 * sum(losses[:5])


def saved_weights_load_into_a_fresh_model(checkpoint: Path) -> bool:
    sys.path.insert(0, str(SCRIPTS))
    from cuda_fit import CopyTransformer

    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    CopyTransformer().load_state_dict(saved["state_dict"])
    return saved["global_step"] == STEPS


def test_ddp_over_nccl_on_every_visible_gpu_keeps_the_ranks_identical(tmp_path: Path) -> None:
    reports = fit(tmp_path, "ddp")
    assert {report["backend"] for report in reports} == {"nccl"}
    assert len({report["digest"] for report in reports}) == 1
    assert all(learned(report) for report in reports)
    assert saved_weights_load_into_a_fresh_model(tmp_path / "final.ckpt")


def test_fsdp_over_nccl_on_every_visible_gpu_trains_and_saves_full_weights(tmp_path: Path) -> None:
    reports = fit(tmp_path, "fsdp", precision="bf16-mixed")
    assert {report["backend"] for report in reports} == {"nccl"}
    assert {report["param_dtype"] for report in reports} == {"torch.float32"}
    assert len({report["digest"] for report in reports}) == 1  # the gathered weights agree on every rank
    assert all(learned(report) for report in reports)
    assert saved_weights_load_into_a_fresh_model(tmp_path / "final.ckpt")


@pytest.mark.parametrize("stage", [2, 3], ids=["deepspeed_stage_2", "deepspeed_stage_3"])
def test_deepspeed_zero_in_bf16_on_every_visible_gpu_learns(stage: int, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install trellis-deepspeed)")
    reports = fit(tmp_path, f"deepspeed_stage_{stage}", precision="bf16-mixed", torchrun=GPUS > 1)
    assert all(learned(report) for report in reports)
    if stage == 2:  # replicated weights: every rank holds the same
        assert len({report["digest"] for report in reports}) == 1
    assert (tmp_path / "final.ckpt").is_dir()
