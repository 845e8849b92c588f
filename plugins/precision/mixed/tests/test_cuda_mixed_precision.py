"""16-mixed and bf16-mixed on a CUDA GPU: autocast on the accelerator's device type, scaling on the GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


class Recorder(trellis.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(32, 32)
        self.seen: set[tuple[str, torch.dtype]] = set()
        self.scales: list[float] = []

    def training_step(self, batch, batch_idx):
        output = self.layer(batch[0])
        self.seen.add((output.device.type, output.dtype))
        return output.float().pow(2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.scales.append(self.trainer.precision_plugin.state_dict().get("scale", 0.0))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize(("precision", "dtype"), [("16-mixed", torch.float16), ("bf16-mixed", torch.bfloat16)])
def test_mixed_precision_autocasts_on_the_gpu(precision: str, dtype: torch.dtype, tmp_path: Path) -> None:
    data = DataLoader(TensorDataset(torch.randn(64, 32)), batch_size=16)
    model = Recorder()
    trainer = trellis.Trainer(accelerator="cuda", devices=1, precision=precision, max_epochs=1, logger=False,
                              enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert model.seen == {("cuda", dtype)}
    assert model.layer.weight.dtype == torch.float32
    if precision == "16-mixed":
        assert model.scales == [2.0**16] * 4
