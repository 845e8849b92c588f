"""Precision modes on a CUDA GPU: parameters and computation in each mode's dtypes, and the model learns."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import trellis

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from cuda_fit import BATCH, CopyTransformer, copy_data  # noqa: E402

STEPS = 60
#: mode -> (parameter dtype, dtype the layers compute in)
MODES = {
    "32-true": (torch.float32, torch.float32),
    "16-mixed": (torch.float32, torch.float16),
    "bf16-mixed": (torch.float32, torch.bfloat16),
    "bf16-true": (torch.bfloat16, torch.bfloat16),
}

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("mode", list(MODES))
def test_mode_trains_a_transformer_on_the_gpu_in_its_dtypes(mode: str, tmp_path: Path) -> None:
    trainer = trellis.Trainer(accelerator="cuda", devices=1, precision=mode, max_steps=STEPS, logger=False,
                              enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                              default_root_dir=tmp_path)
    module = CopyTransformer()
    trainer.fit(module, DataLoader(copy_data(STEPS), batch_size=BATCH))
    param_dtype, compute_dtype = MODES[mode]
    parameter = next(module.parameters())
    assert (parameter.device.type, parameter.dtype) == ("cuda", param_dtype)
    assert module.compute_dtypes == {str(compute_dtype)}
    assert len(module.losses) == STEPS and sum(module.losses[-5:]) < 0.25 * sum(module.losses[:5])
