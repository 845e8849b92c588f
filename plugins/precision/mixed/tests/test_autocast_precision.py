"""bf16-mixed through trellis.Trainer: matmuls in bfloat16 under autocast, parameters and updates in float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.errors import ConfigurationError
from trellis_mixed import BFloat16Mixed, Float16Mixed


def regression_data(count: int = 64) -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(count, 8, generator=generator)
    return TensorDataset(inputs, inputs @ torch.randn(8, 1, generator=generator))


class Regressor(trellis.Module):
    """Records the dtypes it sees inside training_step and validation_step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        self.seen: dict[str, torch.dtype] = {}

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        prediction = self.layer(inputs)
        self.seen.update(train_matmul=prediction.dtype, weight=self.layer.weight.dtype)
        return torch.nn.functional.mse_loss(prediction.float(), targets)

    def validation_step(self, batch, batch_idx):
        self.seen["validation_matmul"] = self.layer(batch[0]).dtype

    def on_before_optimizer_step(self, optimizer):
        self.seen["gradient"] = self.layer.weight.grad.dtype

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def fit(model: trellis.Module, tmp_path: Path, **flags) -> trellis.Trainer:
    data = DataLoader(regression_data(), batch_size=16)
    trainer = trellis.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False, default_root_dir=tmp_path, **flags)
    trainer.fit(model, data, data)
    return trainer


@pytest.mark.parametrize("spelling", ["bf16-mixed", "bf16"])
def test_bf16_mixed_computes_in_bfloat16_and_keeps_float32_parameters(spelling: str, tmp_path: Path) -> None:
    model = Regressor()
    trainer = fit(model, tmp_path, precision=spelling)
    assert isinstance(trainer.precision_plugin, BFloat16Mixed)
    assert model.seen == {
        "train_matmul": torch.bfloat16,
        "validation_matmul": torch.bfloat16,
        "weight": torch.float32,
        "gradient": torch.float32,
    }
    optimizer_state = trainer.optimizers[0].state[model.layer.weight]
    assert optimizer_state["exp_avg"].dtype == torch.float32
    assert torch.get_default_dtype() == torch.float32


def test_bf16_mixed_trains_exactly_like_a_hand_written_autocast_loop(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Regressor()
    torch.manual_seed(0)
    reference = Regressor()
    optimizer = reference.configure_optimizers()
    for inputs, targets in DataLoader(regression_data(), batch_size=16):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(reference.layer(inputs).float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    fit(model, tmp_path, precision="bf16-mixed", num_sanity_val_steps=0)

    assert torch.equal(model.layer.weight, reference.layer.weight)
    assert torch.equal(model.layer.bias, reference.layer.bias)


@pytest.mark.parametrize("spelling", ["16-mixed", "16", 16])
def test_16_mixed_spellings_choose_loss_scaled_float16(spelling, tmp_path: Path) -> None:
    trainer = trellis.Trainer(precision=spelling, logger=False, default_root_dir=tmp_path)
    assert isinstance(trainer.precision_plugin, Float16Mixed)
    assert (trainer.precision_plugin.param_dtype, trainer.precision_plugin.compute_dtype) == (
        torch.float32, torch.float16)


def test_a_device_type_torch_cannot_autocast_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigurationError, match="cannot autocast.*'32-true'"):
        BFloat16Mixed().forward_context("meta")
