"""16-mixed through trellis.Trainer: overflowed steps are skipped, the scale adapts and is checkpointed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis
from trellis.errors import ConfigurationError
from trellis_mixed import Float16Mixed


def loader(count: int = 64, batch_size: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(count, 16, generator=generator)
    return DataLoader(TensorDataset(inputs, inputs.sum(dim=1, keepdim=True)), batch_size=batch_size)


class Net(trellis.Module):
    """A two-layer net; after each batch it records whether the step moved the weights and the scale."""

    def __init__(self, automatic: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        self.automatic_optimization = automatic
        self.history: list[tuple[bool, float]] = []
        self._before: torch.Tensor | None = None

    def loss(self, batch) -> torch.Tensor:
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.net(inputs).float(), targets)

    def training_step(self, batch, batch_idx):
        self._before = self.net[0].weight.detach().clone()
        if self.automatic_optimization:
            return self.loss(batch)
        optimizer = self.optimizers()
        self.manual_backward(self.loss(batch))
        optimizer.step()
        optimizer.zero_grad()
        return None

    def on_train_batch_end(self, outputs, batch, batch_idx):
        moved = not torch.equal(self._before, self.net[0].weight)
        self.history.append((moved, self.trainer.precision_plugin.loss_scale))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(model: trellis.Module, tmp_path: Path, scaling: Float16Mixed, ckpt_path: Path | None = None,
        **flags) -> trellis.Trainer:
    flags = {"max_epochs": 1, **flags}
    trainer = trellis.Trainer(plugins=[scaling], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False, default_root_dir=tmp_path, **flags)
    trainer.fit(model, loader(), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("automatic", [True, False], ids=["automatic", "manual"])
def test_steps_whose_float16_gradients_overflow_are_skipped_and_the_scale_backs_off(automatic: bool,
                                                                                    tmp_path: Path) -> None:
    # Scaled by 2**24, the float16 activation gradients overflow to inf until the scale has backed off.
    model = Net(automatic)
    fit(model, tmp_path, Float16Mixed(init_scale=2.0**24), max_epochs=2)

    previous = 2.0**24
    for moved, scale in model.history:
        assert scale == (previous if moved else previous / 2), model.history
        previous = scale
    assert not model.history[0][0] and model.history[-1][0]
    assert sum(moved for moved, _ in model.history) >= 4
    assert previous <= 2.0**16


def test_the_scale_grows_after_growth_interval_good_steps(tmp_path: Path) -> None:
    model = Net()
    fit(model, tmp_path, Float16Mixed(init_scale=256.0, growth_interval=3))
    assert model.history == [(True, 256.0), (True, 256.0), (True, 512.0), (True, 512.0), (True, 512.0),
                             (True, 1024.0), (True, 1024.0), (True, 1024.0)]


def test_a_nan_gradient_skips_the_step_even_at_a_small_scale(tmp_path: Path) -> None:
    class PoisonedNet(Net):
        def on_after_backward(self):
            if self.trainer.global_step == 2:
                self.net[2].bias.grad.fill_(float("nan"))

    model = PoisonedNet()
    fit(model, tmp_path, Float16Mixed(init_scale=64.0))
    assert model.history[:4] == [(True, 64.0), (True, 64.0), (False, 32.0), (True, 32.0)]


def test_accumulation_and_clipping_match_a_hand_written_grad_scaler_loop(tmp_path: Path) -> None:
    reference = Net()
    optimizer = reference.configure_optimizers()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2)
    for index, batch in enumerate(loader()):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = reference.loss(batch)
        scaler.scale(loss / 2).backward()
        if index % 2 == 1:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()

    model = Net()
    trainer = fit(model, tmp_path, Float16Mixed(init_scale=2.0**12, growth_interval=2),
                  accumulate_grad_batches=2, gradient_clip_val=0.5)

    for trained, expected in zip(model.parameters(), reference.parameters()):
        assert torch.equal(trained, expected)
    assert trainer.precision_plugin.state_dict() == scaler.state_dict()
    assert trainer.global_step == 4


def test_manual_optimization_steps_through_the_scaler_like_automatic(tmp_path: Path) -> None:
    automatic, manual = Net(automatic=True), Net(automatic=False)
    fit(automatic, tmp_path / "automatic", Float16Mixed(init_scale=2.0**20))
    fit(manual, tmp_path / "manual", Float16Mixed(init_scale=2.0**20))
    for trained, expected in zip(manual.parameters(), automatic.parameters()):
        assert torch.equal(trained, expected)
    assert manual.history == automatic.history


def test_the_scaler_state_travels_in_checkpoints_and_resumes_exactly(tmp_path: Path) -> None:
    def scaling() -> Float16Mixed:
        return Float16Mixed(init_scale=2.0**18, growth_interval=2)

    uninterrupted = Net()
    fit(uninterrupted, tmp_path / "whole", scaling(), max_epochs=2)

    first_half = Net()
    trainer = fit(first_half, tmp_path / "first", scaling(), max_epochs=1)
    path = tmp_path / "half.ckpt"
    trainer.save_checkpoint(path)
    stored = torch.load(path, weights_only=True)["precision"]
    assert stored == trainer.precision_plugin.state_dict()
    assert stored["scale"] == first_half.history[-1][1] < 2.0**18

    second_half = Net()
    resumed_scaling = scaling()
    fit(second_half, tmp_path / "second", resumed_scaling, max_epochs=2, ckpt_path=path)

    assert first_half.history + second_half.history == uninterrupted.history
    for resumed, expected in zip(second_half.parameters(), uninterrupted.parameters()):
        assert torch.equal(resumed, expected)
    assert resumed_scaling.state_dict()["scale"] == uninterrupted.trainer.precision_plugin.loss_scale


@pytest.mark.parametrize("arguments", [{"init_scale": 0.0}, {"growth_factor": 1.0}, {"backoff_factor": 1.5},
                                       {"growth_interval": 0}])
def test_impossible_scaler_settings_are_refused(arguments: dict) -> None:
    with pytest.raises(ConfigurationError, match="growth_factor above 1"):
        Float16Mixed(**arguments)


def test_lbfgs_is_refused_with_the_alternatives(tmp_path: Path) -> None:
    class LBFGSNet(Net):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters())

    with pytest.raises(ConfigurationError, match="cannot step LBFGS.*bf16-mixed"):
        fit(LBFGSNet(), tmp_path, Float16Mixed())
