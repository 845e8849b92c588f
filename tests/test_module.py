"""trellis.Module's own API as Lightning's LightningModule has it: trainer state, device and dtype, freezing,
printing, all_gather, and modules whose attributes shadow torch.nn.Module methods."""

from __future__ import annotations

import types

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset, random_split

import trellis
from support import TinyRegressor, loader, quiet_trainer
from trellis.errors import ConfigurationError


def test_a_detached_module_has_no_trainer_and_neutral_state():
    module = TinyRegressor()
    with pytest.raises(RuntimeError, match="TinyRegressor is not attached to a Trainer"):
        _ = module.trainer
    assert (module.current_epoch, module.global_step, module.global_rank, module.local_rank) == (0, 0, 0, 0)
    assert module.logger is None and module.loggers == []


def test_during_fit_the_module_and_its_child_modules_see_the_trainer():
    seen = []

    class Child(TinyRegressor):
        pass

    class Parent(TinyRegressor):
        def __init__(self):
            super().__init__()
            self.child = Child()

        def training_step(self, batch, batch_idx):
            seen.append((self.current_epoch, self.global_step, self.child.trainer is self.trainer))
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(max_epochs=2, limit_train_batches=2)
    trainer.fit(Parent(), loader())
    assert seen == [(0, 0, True), (0, 1, True), (1, 2, True), (1, 3, True)]


def test_loggers_are_the_trainer_s(tmp_path):
    module = TinyRegressor()
    trainer = trellis.Trainer(max_steps=1, default_root_dir=tmp_path, enable_progress_bar=False,
                              enable_model_summary=False)
    trainer.fit(module, loader())
    assert module.logger is trainer.logger is trainer.loggers[0] and module.loggers == trainer.loggers


def test_device_and_dtype_follow_moves_and_conversions_of_the_module_and_its_submodules():
    class Inner(trellis.Module):  # no parameters: known anyway
        pass

    class Outer(trellis.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()
            self.layer = torch.nn.Linear(2, 2)

    outer = Outer()
    assert (outer.device, outer.dtype) == (torch.device("cpu"), torch.float32)
    assert outer.to(torch.float64) is outer
    assert (outer.dtype, outer.inner.dtype, outer.layer.weight.dtype) == (torch.float64, torch.float64, torch.float64)
    assert outer.half().dtype == torch.float16 and outer.inner.dtype == torch.float16
    assert outer.float().dtype == torch.float32 and outer.double().dtype == torch.float64
    assert outer.bfloat16().dtype == torch.bfloat16 and outer.type(torch.float32).dtype == torch.float32
    assert outer.to("cpu", torch.float64).device == torch.device("cpu") and outer.inner.dtype == torch.float64
    assert not outer.on_gpu
    with pytest.raises(RuntimeError, match=r"module.to\(torch.float16\)"):
        outer.dtype = torch.float16


def test_the_trainer_s_precision_is_the_module_s_dtype():
    dtypes = []

    class Recorded(TinyRegressor):
        def on_train_start(self):
            dtypes.append(self.dtype)

    quiet_trainer(max_steps=1, precision="64-true").fit(Recorded(), loader())
    assert dtypes == [torch.float64]


def test_a_subclass_may_turn_automatic_optimization_off_as_a_class_attribute():
    class Manual(TinyRegressor):
        automatic_optimization = False

    assert not Manual().automatic_optimization
    module = TinyRegressor()
    module.automatic_optimization = False
    assert not module.automatic_optimization


def test_freeze_and_unfreeze_switch_gradients_and_mode():
    module = TinyRegressor()
    assert module.freeze() is module
    assert not module.training and not any(parameter.requires_grad for parameter in module.parameters())
    assert module.unfreeze() is module
    assert module.training and all(parameter.requires_grad for parameter in module.parameters())


def test_print_speaks_on_global_rank_zero_only(capsys):
    module = TinyRegressor()
    module.print("detached", 1)
    module._trainer = types.SimpleNamespace(global_rank=1, progress_bar_callback=None)
    module.print("rank one")
    module._trainer = types.SimpleNamespace(global_rank=0, progress_bar_callback=None)
    module.print("rank zero", end="!\n")
    assert capsys.readouterr().out == "detached 1\nrank zero!\n"


def test_all_gather_in_one_process_returns_the_data_as_tensors_with_gradients_when_asked():
    gathered = []

    class Gathering(TinyRegressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            gathered.append(self.all_gather({"loss": loss, "count": 3, "pair": [1.5, loss]}))
            synced = self.all_gather(loss, sync_grads=True)
            assert synced.grad_fn is not None  # gradients flow back through the gather
            with pytest.raises(ConfigurationError, match="group"):
                self.all_gather(loss, group=object())
            return synced

    quiet_trainer(max_steps=1).fit(Gathering(), loader())
    result = gathered[0]
    assert result["loss"].shape == () and torch.equal(result["count"], torch.tensor(3))
    assert torch.equal(result["pair"][0], torch.tensor(1.5)) and torch.equal(result["pair"][1], result["loss"])
    detached = TinyRegressor().all_gather({"count": 3, "tensor": torch.ones(2)})  # without a Trainer: one process
    assert torch.equal(detached["count"], torch.tensor(3)) and torch.equal(detached["tensor"], torch.ones(2))


def test_example_input_array_is_kept():
    module = TinyRegressor()
    assert module.example_input_array is None
    module.example_input_array = torch.zeros(1, 8)
    assert torch.equal(module.example_input_array, torch.zeros(1, 8))


class ShadowingSplits(trellis.Module):
    """The seed notebook's pattern: dataset splits named like torch.nn.Module methods."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(8, 1)
        self.dropout = torch.nn.Dropout(0.1)
        self.modes: list[bool] = []

    def forward(self, x):
        return self.layer(self.dropout(x))

    def prepare_data(self):
        generator = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(40, 8, generator=generator), torch.randn(40, 1, generator=generator))
        self.train, self.val, self.test, self.eval = random_split(data, [10, 10, 10, 10], generator=generator)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=5)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=5)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=5)

    def predict_dataloader(self):
        return DataLoader(self.eval, batch_size=5)

    def training_step(self, batch, batch_idx):
        self.modes.append(self.training)
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        self.modes.append(self.training)
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        self.modes.append(self.training)
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_attributes_named_train_val_test_eval_never_break_the_framework(tmp_path):
    module = ShadowingSplits()
    trainer = trellis.Trainer(max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False,
                              enable_model_summary=True, num_sanity_val_steps=1)
    trainer.fit(module)
    assert module.modes == [False] + [True] * 2 + [False] * 2
    module.modes.clear()
    trainer.validate(module, verbose=False)
    trainer.test(module, verbose=False)
    predictions = trainer.predict(module)
    assert module.modes == [False] * 6 and len(predictions) == 2
    assert module.freeze() is module and not module.training
    module.unfreeze()
    restored = ShadowingSplits.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert torch.equal(restored.layer.weight, module.layer.weight)
    assert isinstance(module.train, torch.utils.data.Subset)
