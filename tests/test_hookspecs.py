"""The hook surface is written once: every specification is a Callback method, has a Module form or is
callback-only, is listed in docs/hooks.md, and is called by some run."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest
import torch

import trellis
from support import TinyRegressor, loader, quiet_trainer
from trellis.hookspecs import CALLBACK_ONLY_HOOKS, HOOK_NAMES, HookName, LifecycleHooks
from trellis.module_hooks import ModuleHooks
from trellis.stages import PREDICT, TEST, TRAIN, VALIDATION

DOC = Path(__file__).parent.parent / "docs" / "hooks.md"


def test_hook_name_type_lists_exactly_the_specifications():
    assert set(typing.get_args(HookName)) == HOOK_NAMES


@pytest.mark.parametrize("hook", sorted(HOOK_NAMES))
def test_callback_inherits_every_specification_as_a_free_default(hook):
    method = getattr(trellis.Callback, hook)
    assert method is getattr(LifecycleHooks, hook)
    assert method._trellis_default_hook


@pytest.mark.parametrize("hook", sorted(HOOK_NAMES))
def test_every_hook_has_a_module_form_or_is_callback_only(hook):
    if hook in CALLBACK_ONLY_HOOKS:
        assert not hasattr(ModuleHooks, hook)
        return
    module_arguments = list(inspect.signature(getattr(ModuleHooks, hook)).parameters)[1:]
    spec_arguments = list(inspect.signature(getattr(LifecycleHooks, hook)).parameters)[1:]
    assert set(module_arguments) <= set(spec_arguments), f"ModuleHooks.{hook} takes arguments the hook never passes"


def test_module_hooks_are_all_specifications():
    own = {name for name, value in vars(ModuleHooks).items() if callable(value) and not name.startswith("_")}
    assert own <= HOOK_NAMES


@pytest.mark.parametrize("hook", sorted(HOOK_NAMES))
def test_docs_list_every_hook_with_its_arguments(hook):
    arguments = ", ".join(list(inspect.signature(getattr(LifecycleHooks, hook)).parameters)[1:])
    assert f"| `{hook}` | {arguments} |" in DOC.read_text()


@pytest.mark.parametrize("stage", [TRAIN, VALIDATION, TEST, PREDICT])
def test_stage_records_name_real_hooks(stage):
    for event in ("start", "end", "epoch_start", "epoch_end", "batch_start", "batch_end"):
        assert stage.hook(event) in HOOK_NAMES


class Evaluates(TinyRegressor):
    def test_step(self, batch, batch_idx):
        return self.validation_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        return self.net(batch)


class Fails(TinyRegressor):
    def training_step(self, batch, batch_idx):
        raise RuntimeError("stop here")


def test_some_run_calls_every_hook(tmp_path):
    called: set[str] = set()

    def record(name):
        def hook(self):
            called.add(name)
        return hook

    recorder = type("Recorder", (trellis.Callback,), {name: record(name) for name in HOOK_NAMES})()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[recorder],
                            default_root_dir=tmp_path)
    model = Evaluates()
    trainer.fit(model, loader(64), loader(32))
    trainer.save_checkpoint(tmp_path / "done.ckpt")
    quiet_trainer(max_epochs=2, limit_train_batches=2, callbacks=[recorder]).fit(
        TinyRegressor(), loader(64), ckpt_path=tmp_path / "done.ckpt")
    trainer.validate(model, loader(32))
    trainer.test(model, loader(32))
    trainer.predict(model, [torch.zeros(2, 8)])
    with pytest.raises(RuntimeError, match="stop here"):
        quiet_trainer(max_steps=1, callbacks=[recorder]).fit(Fails(), loader(32))
    assert called == HOOK_NAMES
