"""fp8 through Transformer Engine: refused with the reason off Hopper, trained with on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.errors import ConfigurationError
from trellis_mixed.fp8 import unavailable_reason

REASON = unavailable_reason()


@pytest.mark.skipif(REASON is None, reason="fp8 is available here; the refusal cannot be seen")
@pytest.mark.parametrize("spelling", ["transformer-engine", "fp8"])
def test_fp8_without_the_hardware_or_library_is_refused_with_what_is_missing(spelling: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        trellis.Trainer(precision=spelling, logger=False, default_root_dir=tmp_path)
    message = str(raised.value)
    assert "unavailable here" in message and REASON in message
    assert "Hopper" in message and "bf16-mixed" in message


class Block(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.LayerNorm(128), torch.nn.GELU(),
                                       torch.nn.Linear(128, 16))

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.net(inputs).float(), targets)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"fp8 needs a Hopper GPU and transformer_engine: {REASON}")
def test_fp8_replaces_layers_with_transformer_engine_and_trains(tmp_path: Path) -> None:
    import transformer_engine.pytorch as te

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 64, generator=generator)
    data = DataLoader(TensorDataset(inputs, inputs[:, :16] * 2.0), batch_size=64)
    model = Block()
    trainer = trellis.Trainer(accelerator="cuda", devices=1, precision="fp8", max_epochs=5, logger=False,
                              enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert isinstance(model.net[0], te.Linear) and isinstance(model.net[1], te.LayerNorm)
    assert model.net[0].weight.dtype == torch.bfloat16
    assert model.losses[-1] < 0.5 * model.losses[0]
