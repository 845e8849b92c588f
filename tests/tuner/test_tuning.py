"""trellis.tuner: the learning-rate finder and the batch-size finder, each running real short fits."""

from __future__ import annotations

import csv
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from support import TinyRegressor, loader, quiet_trainer, regression_data
from trellis.errors import ConfigurationError
from trellis.tuner import Tuner
from trellis.tuner.batch_size_scaling import resident_bytes


def test_lr_find_sweeps_exponentially_suggests_a_rate_and_restores_the_weights():
    model = TinyRegressor(lr=0.05)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    result = Tuner(quiet_trainer()).lr_find(model, train_dataloaders=loader(512, batch_size=16), min_lr=1e-4,
                                            max_lr=1.0, num_training=60, early_stop_threshold=None)
    rates = result.results["lr"]
    assert len(rates) == len(result.results["loss"]) == 60  # spans epochs when the loader is shorter
    assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1.0)
    assert rates[1] / rates[0] == pytest.approx(rates[-1] / rates[-2])
    suggestion = result.suggestion()
    assert 1e-4 < suggestion < 1.0
    assert model.hparams.lr == suggestion  # update_attr writes the hparam configure_optimizers reads
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert model._trainer is None


def test_lr_find_linear_mode_spaces_rates_evenly_and_leaves_the_model_alone_without_update_attr():
    model = TinyRegressor(lr=0.05)
    result = Tuner(quiet_trainer()).lr_find(model, train_dataloaders=loader(256), min_lr=0.01, max_lr=0.1,
                                            num_training=10, mode="linear", update_attr=False)
    assert result.results["lr"] == pytest.approx([0.01 + 0.01 * step for step in range(10)])
    assert model.hparams.lr == 0.05


def test_lr_find_stops_early_when_the_loss_diverges():
    result = Tuner(quiet_trainer()).lr_find(TinyRegressor(), train_dataloaders=loader(512, batch_size=8),
                                            min_lr=1e-3, max_lr=1e4, num_training=100)
    losses = result.results["loss"]
    assert 2 < len(losses) < 100
    assert not losses[-1] <= 4.0 * min(losses)  # it stopped at the first point past the threshold (or non-finite)


@pytest.fixture(scope="module")
def curve():
    return Tuner(quiet_trainer()).lr_find(TinyRegressor(), train_dataloaders=loader(256), num_training=20,
                                          update_attr=False)


def test_lr_find_plot_without_matplotlib_writes_the_curve_as_csv(curve, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on a machine without it
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    written = curve.plot(tmp_path / "lr_curve.png")
    assert written == tmp_path / "lr_curve.csv"
    assert "matplotlib is not installed" in capsys.readouterr().out
    with open(written, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [float(row["lr"]) for row in rows] == pytest.approx(curve.results["lr"])
    assert [float(row["loss"]) for row in rows] == pytest.approx(curve.results["loss"])


def test_lr_find_plot_draws_a_png_with_matplotlib(curve, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the CSV fallback is tested above)")
    written = curve.plot(tmp_path / "lr_curve.png")
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_find_needs_a_sensible_range():
    with pytest.raises(ConfigurationError, match="0 < min_lr < max_lr"):
        Tuner(quiet_trainer()).lr_find(TinyRegressor(), train_dataloaders=loader(), min_lr=1.0, max_lr=0.1)


def test_lr_find_suggestion_is_none_with_too_few_points():
    result = Tuner(quiet_trainer()).lr_find(TinyRegressor(), train_dataloaders=loader(), num_training=5,
                                            update_attr=False)
    with pytest.warns(UserWarning, match="too few finite losses"):
        assert result.suggestion() is None


GIB = 2**30


class HungryRegressor(TinyRegressor):
    """Reserves `bytes_per_sample` of scratch memory per sample each step (untouched, so it costs no RAM
    until the allocator refuses): the CPU allocator's real out-of-memory error past the machine's limit."""

    def __init__(self, batch_size: int = 2, bytes_per_sample: int = GIB) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch, batch_idx):
        scratch = torch.empty(len(batch[0]) * self.hparams.bytes_per_sample, dtype=torch.uint8)
        del scratch
        return super().training_step(batch, batch_idx)

    def train_dataloader(self):
        return DataLoader(regression_data(2**16), batch_size=self.hparams.batch_size)


def allocates(samples: int) -> bool:
    try:
        torch.empty(samples * HungryRegressor().hparams.bytes_per_sample, dtype=torch.uint8)
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("mode", ["power", "binsearch"])
def test_scale_batch_size_finds_the_largest_size_the_allocator_grants(mode):
    model = HungryRegressor()
    found = Tuner(quiet_trainer()).scale_batch_size(model, mode=mode, steps_per_trial=1, max_trials=30)
    assert model.hparams.batch_size == found
    assert allocates(found) and not allocates(2 * found if mode == "power" else found + 1)


def test_scale_batch_size_stops_at_the_dataset_size():
    class SmallData(HungryRegressor):
        def train_dataloader(self):
            return DataLoader(regression_data(40), batch_size=self.hparams.batch_size)

    model = SmallData(bytes_per_sample=1)
    assert Tuner(quiet_trainer()).scale_batch_size(model, steps_per_trial=1) == 64


class WideRegressor(TinyRegressor):
    """Activations of 1 MiB per sample (a 1024-wide copy of each 256-float row), touched for real."""

    def __init__(self, batch_size: int = 2) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.scale = torch.nn.Parameter(torch.ones(256))

    def training_step(self, batch, batch_idx):
        inputs = batch[0].repeat(1, 32)  # (batch, 256)
        wide = (inputs * self.scale).unsqueeze(1).expand(-1, 1024, -1).contiguous()  # (batch, 1024, 256)
        return wide.square().mean()

    def train_dataloader(self):
        return DataLoader(regression_data(4096), batch_size=self.batch_size)


def test_scale_batch_size_respects_a_memory_cap_on_cpu():
    model = WideRegressor()
    cap = resident_bytes() / 2**20 + 200  # room for about 200 one-MiB samples on top of what runs now
    found = Tuner(quiet_trainer()).scale_batch_size(model, steps_per_trial=1, max_memory_mb=cap)
    assert model.batch_size == found
    assert 16 <= found <= 256


def test_scale_batch_size_needs_an_attribute_to_tune():
    with pytest.raises(ConfigurationError, match="found no `batch_size`"):
        Tuner(quiet_trainer()).scale_batch_size(TinyRegressor())


def test_scale_batch_size_restores_the_value_when_a_trial_fails_for_another_reason():
    class Broken(WideRegressor):
        def training_step(self, batch, batch_idx):
            raise ValueError("a bug in training_step")

    model = Broken(batch_size=7)
    with pytest.raises(ValueError, match="a bug"):
        Tuner(quiet_trainer()).scale_batch_size(model)
    assert model.batch_size == 7
