"""The CUDA accelerator's generator state: saved for exact resume, restored to repeat the same draws."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis_cuda import CUDAAccelerator

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")
STEPS, CHECKPOINT_STEP = 8, 3


def test_a_process_that_never_used_cuda_saves_no_state_and_stays_off_the_gpu() -> None:
    code = ("import torch; from trellis_cuda import CUDAAccelerator; accelerator = CUDAAccelerator(); "
            "state = accelerator.rng_state(); accelerator.load_rng_state(state); "
            "print(state, torch.cuda.is_initialized())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["{}", "False"]


@pytest.mark.gpu
@needs_gpu
def test_restoring_a_saved_state_repeats_the_draws_on_every_gpu() -> None:
    accelerator = CUDAAccelerator()
    accelerator.setup_device(torch.device("cuda", 0))
    torch.rand(3, device="cuda")
    state = accelerator.rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # as a checkpoint holds it: loadable with weights_only
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    first = [torch.rand(5, device=torch.device("cuda", index)) for index in range(torch.cuda.device_count())]
    accelerator.load_rng_state(saved)
    again = [torch.rand(5, device=torch.device("cuda", index)) for index in range(torch.cuda.device_count())]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    accelerator.teardown()


class NoisyRegression(trellis.Module):
    """Dropout draws from the GPU's generator every step: a resume is exact only if that state travels."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Dropout(0.5), torch.nn.Linear(64, 1))

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.net(inputs), targets)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class SaveAt(trellis.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == CHECKPOINT_STEP:
            trainer.save_checkpoint(self.path)


def fit(root: Path, callbacks=(), ckpt_path: Path | None = None) -> dict[str, torch.Tensor]:
    trellis.seed_everything(11)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(STEPS * 8, 16, generator=generator)
    data = DataLoader(TensorDataset(inputs, inputs[:, :1]), batch_size=8)
    module = NoisyRegression()
    trainer = trellis.Trainer(accelerator="cuda", devices=1, max_steps=STEPS, logger=False, enable_progress_bar=False,
                              enable_checkpointing=False, enable_model_summary=False, callbacks=list(callbacks),
                              default_root_dir=root)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return {key: value.detach().cpu() for key, value in module.state_dict().items()}


@pytest.mark.gpu
@needs_gpu
def test_resumed_mid_epoch_with_dropout_on_the_gpu_training_ends_with_the_same_weights(tmp_path: Path) -> None:
    checkpoint = tmp_path / "mid.ckpt"
    straight = fit(tmp_path / "straight", [SaveAt(checkpoint)])
    assert checkpoint.exists()
    resumed = fit(tmp_path / "resumed", ckpt_path=checkpoint)
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)

