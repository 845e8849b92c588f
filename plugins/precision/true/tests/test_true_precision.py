"""True modes through trellis.Trainer: parameters, inputs, new tensors and optimizer state in one dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis_true import BFloat16, Float16, Float32, Float64


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(48, 6, generator=generator)
    return DataLoader(TensorDataset(inputs, inputs.sum(dim=1, keepdim=True)), batch_size=12)


class Recorder(trellis.Module):
    """Records the dtypes of what training_step receives and creates, and every loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(6, 1)
        self.seen: set[tuple[str, torch.dtype]] = set()
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        offset = torch.zeros(1)  # created in the step: takes the mode's dtype
        prediction = self.layer(inputs) + offset
        self.seen |= {("input", inputs.dtype), ("created", offset.dtype), ("output", prediction.dtype)}
        loss = torch.nn.functional.mse_loss(prediction, targets)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def fit(precision, tmp_path: Path, max_epochs: int = 1) -> tuple[Recorder, trellis.Trainer]:
    model = Recorder()
    trainer = trellis.Trainer(precision=precision, max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, loader())
    return model, trainer


@pytest.mark.parametrize(("precision", "dtype"), [
    ("64-true", torch.float64), (64, torch.float64), ("16-true", torch.float16), ("bf16-true", torch.bfloat16),
])
def test_true_modes_train_with_everything_in_their_dtype(precision, dtype: torch.dtype, tmp_path: Path) -> None:
    model, trainer = fit(precision, tmp_path, max_epochs=3)
    assert model.seen == {("input", dtype), ("created", dtype), ("output", dtype)}
    assert {parameter.dtype for parameter in model.parameters()} == {dtype}
    assert trainer.optimizers[0].state[model.layer.weight]["exp_avg"].dtype == dtype
    assert model.losses[-1] < model.losses[0]
    assert torch.get_default_dtype() == torch.float32, "the step's default dtype leaked out of the step"


def test_64_true_trains_exactly_like_a_hand_written_float64_loop(tmp_path: Path) -> None:
    reference = Recorder().double()
    optimizer = reference.configure_optimizers()
    for inputs, targets in loader():
        loss = torch.nn.functional.mse_loss(reference.layer(inputs.double()), targets.double())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    model, _ = fit("64-true", tmp_path)
    assert torch.equal(model.layer.weight, reference.layer.weight)
    assert torch.equal(model.layer.bias, reference.layer.bias)


def test_32_true_is_the_plain_loop_and_the_default(tmp_path: Path) -> None:
    model, trainer = fit("32-true", tmp_path)
    assert isinstance(trellis.Trainer(logger=False, default_root_dir=tmp_path).precision_plugin, Float32)
    assert model.seen == {("input", torch.float32), ("created", torch.float32), ("output", torch.float32)}
    assert trainer.precision_plugin.state_dict() == {}


@pytest.mark.parametrize(("spelling", "cls"), [
    (32, Float32), ("32", Float32), (64, Float64), ("64", Float64), ("16-true", Float16), ("bf16-true", BFloat16),
])
def test_every_spelling_resolves_to_its_mode(spelling, cls: type, tmp_path: Path) -> None:
    plugin = trellis.Trainer(precision=spelling, logger=False, default_root_dir=tmp_path).precision_plugin
    assert type(plugin) is cls
    assert plugin.param_dtype == {Float32: torch.float32, Float64: torch.float64, Float16: torch.float16,
                                  BFloat16: torch.bfloat16}[cls]
    assert plugin.compute_dtype is None


def test_integer_inputs_keep_their_dtype() -> None:
    batch = {"tokens": torch.arange(4), "weights": torch.ones(4)}
    converted = Float64().convert_input(batch)
    assert converted["tokens"].dtype == torch.int64 and converted["weights"].dtype == torch.float64
