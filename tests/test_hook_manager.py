"""Hooks are pluggy hooks: validated when registered, called by name, free when unimplemented."""

from __future__ import annotations

import pytest
import torch

import trellis
from support import TinyRegressor, loader, quiet_trainer
from trellis.errors import HookValidationError
from trellis.hook_manager import HookManager


class Recorder(trellis.Callback):
    def __init__(self, label: str, calls: list) -> None:
        self.label, self.calls = label, calls

    def on_train_epoch_start(self, trainer):
        self.calls.append((self.label, "on_train_epoch_start", trainer.current_epoch))

    def on_train_batch_end(self, outputs, batch_idx):
        self.calls.append((self.label, "on_train_batch_end", batch_idx, isinstance(outputs, torch.Tensor)))


def test_misspelled_hook_name_is_refused_with_the_nearest_real_one():
    class Typo(trellis.Callback):
        def on_train_epoch_ned(self, trainer, pl_module):
            pass

    with pytest.raises(HookValidationError, match="did you mean 'on_train_epoch_end'"):
        quiet_trainer(callbacks=[Typo()])


def test_arguments_named_otherwise_are_passed_in_the_hooks_order_as_lightning_does(tmp_path):
    seen = []

    class Positional(trellis.Callback):
        def on_train_batch_end(self, tr, module, outs, b, i):
            seen.append((tr is trainer, isinstance(module, TinyRegressor), isinstance(outs, torch.Tensor), i))

        def on_train_epoch_end(self, trainer, *args):
            seen.append(("epoch end", len(args)))

    class LoadsAnonymously(TinyRegressor):
        def on_load_checkpoint(self, _):
            seen.append(("loaded", sorted(_)[:2]))

    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, callbacks=[Positional()], default_root_dir=tmp_path)
    trainer.fit(LoadsAnonymously(), loader())
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    quiet_trainer(max_epochs=2, limit_train_batches=2).fit(LoadsAnonymously(), loader(), ckpt_path=tmp_path / "a.ckpt")
    assert seen == [(True, True, True, 0), (True, True, True, 1), ("epoch end", 1), ("loaded", ["callbacks", "epoch"])]


def test_module_hook_typo_is_refused_at_fit():
    class TypoModule(TinyRegressor):
        def on_validaton_epoch_end(self):
            pass

    with pytest.raises(HookValidationError, match="on_validation_epoch_end"):
        quiet_trainer(max_steps=1).fit(TypoModule(), loader())


def test_hooks_receive_only_the_arguments_they_name_in_registration_order():
    calls: list = []
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, callbacks=[Recorder("a", calls), Recorder("b", calls)])
    trainer.fit(TinyRegressor(), loader())
    assert calls == [
        ("a", "on_train_epoch_start", 0), ("b", "on_train_epoch_start", 0),
        ("a", "on_train_batch_end", 0, True), ("b", "on_train_batch_end", 0, True),
        ("a", "on_train_batch_end", 1, True), ("b", "on_train_batch_end", 1, True),
    ]


def test_defaulted_stage_argument_is_passed():
    stages = []

    class ClassicSetup(TinyRegressor):
        def setup(self, stage=None):
            stages.append(stage)

    quiet_trainer(max_steps=1).fit(ClassicSetup(), loader())
    assert stages == ["fit"]


def test_unimplemented_hooks_have_no_caller_on_the_step_path():
    manager = HookManager()
    manager.register_in_call_order([trellis.Callback(), TinyRegressor()])
    assert manager.callers == {}
    manager.register(Recorder("a", []))
    assert set(manager.callers) == {"on_train_epoch_start", "on_train_batch_end"}


def test_plain_objects_in_plugins_implement_hooks():
    seen = []

    class EpochCounter:
        def on_train_epoch_end(self, trainer):
            seen.append(trainer.current_epoch)

    quiet_trainer(max_epochs=3, plugins=[EpochCounter()]).fit(TinyRegressor(), loader(64))
    assert seen == [0, 1, 2]


def test_callback_only_hooks_reach_callbacks_never_the_module_and_on_exception_the_datamodule():
    import trellis
    from support import TinyRegressor, loader, quiet_trainer

    calls: list[str] = []

    class Recorded(TinyRegressor):
        def on_sanity_check_start(self) -> None:  # the user's own method, as in Lightning
            calls.append("module.on_sanity_check_start")

        def training_step(self, batch, batch_idx):
            raise RuntimeError("stop")

    class Data(trellis.DataModule):
        def train_dataloader(self):
            return loader()

        def val_dataloader(self):
            return loader()

        def on_exception(self, exception) -> None:
            calls.append(f"datamodule.on_exception {exception}")

    class Seen(trellis.Callback):
        def on_sanity_check_start(self, trainer, pl_module) -> None:
            calls.append("callback.on_sanity_check_start")

    with pytest.raises(RuntimeError, match="stop"):
        quiet_trainer(max_epochs=1, callbacks=[Seen()]).fit(Recorded(), datamodule=Data())
    assert calls == ["callback.on_sanity_check_start", "datamodule.on_exception stop"]
