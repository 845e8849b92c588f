"""Callbacks by name, installed callback factories (run in every Trainer, with opt-outs), and what callbacks=
refuses."""

from __future__ import annotations

import pytest

from discovery.plugin_sources import TESTS_DIR
from support import TinyRegressor, loader, make_distribution, quiet_trainer, run_python
from trellis.errors import ConfigurationError

STEP_COUNTER = """
import trellis
from trellis.plugin import Callback

TRELLIS_PLUGIN_API = 1


class StepCounter(Callback):
    def __init__(self, label="installed"):
        self.label = label
        self.steps = 0

    def on_train_batch_end(self, trainer):
        self.steps += 1


def counters():
    return [StepCounter()]


def broken():
    raise RuntimeError("tracking server unreachable")


def not_a_callback():
    return object()
"""
FACTORIES = {"trellis.callback_factories": {"steps": "step_counter:counters"}}
REPORT = """
import sys
sys.path.insert(0, {tests!r})
from support import TinyRegressor, loader, quiet_trainer
{setup}
trainer = quiet_trainer(max_steps=3, enable_checkpointing=True, {flags})
trainer.fit(TinyRegressor(), loader())
print([(type(c).__name__, getattr(c, "label", None), getattr(c, "steps", None)) for c in trainer.callbacks
       if type(c).__name__ == "StepCounter"])
"""


def _run(tmp_path, flags: str = "", setup: str = "", env: dict[str, str] | None = None):
    return run_python(REPORT.format(tests=TESTS_DIR, flags=flags, setup=setup), tmp_path, env=env)


def test_an_installed_callback_factory_runs_in_every_trainer(tmp_path):
    make_distribution(tmp_path, "step-counter", FACTORIES, {"step_counter.py": STEP_COUNTER})
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('StepCounter', 'installed', 3)]"


@pytest.mark.parametrize("opt_out", [{"TRELLIS_DISABLE_PLUGIN_AUTOLOAD": "1"},
                                     {"TRELLIS_BLOCK_PLUGINS": "step-counter"},
                                     {"TRELLIS_BLOCK_PLUGINS": "steps"}])
def test_a_callback_factory_is_turned_off_by_the_kill_switch_or_the_block_list(tmp_path, opt_out):
    make_distribution(tmp_path, "step-counter", FACTORIES, {"step_counter.py": STEP_COUNTER})
    result = _run(tmp_path, env=opt_out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_callback_the_user_passes_replaces_the_factorys_of_the_same_type(tmp_path):
    make_distribution(tmp_path, "step-counter", FACTORIES, {"step_counter.py": STEP_COUNTER})
    result = _run(tmp_path, setup="from step_counter import StepCounter", flags="callbacks=[StepCounter('mine')]")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('StepCounter', 'mine', 3)]"


def test_a_failing_factory_is_skipped_with_a_warning_naming_its_distribution(tmp_path):
    factories = {"trellis.callback_factories": {"broken": "step_counter:broken", "odd": "step_counter:not_a_callback",
                                                "steps": "step_counter:counters"}}
    make_distribution(tmp_path, "step-counter", factories, {"step_counter.py": STEP_COUNTER}, version="0.2")
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('StepCounter', 'installed', 3)]"
    assert ("callback factory 'broken' from distribution step-counter 0.2 is skipped: RuntimeError: tracking server "
            "unreachable") in result.stderr
    assert "callback factory 'odd' from distribution step-counter 0.2 is skipped: TypeError: it returned object" in (
        result.stderr)


def test_a_named_callback_is_built_only_when_chosen(tmp_path):
    make_distribution(tmp_path, "step-counter", {"trellis.callbacks": {"steps": "step_counter:StepCounter",
                                                                      "odd": "step_counter:not_a_callback"}},
                      {"step_counter.py": STEP_COUNTER})
    assert _run(tmp_path).stdout.strip() == "[]"
    chosen = _run(tmp_path, flags="callbacks=['steps']")
    assert chosen.stdout.strip() == "[('StepCounter', 'installed', 3)]", chosen.stderr
    odd = _run(tmp_path, flags="callbacks=['odd']")
    assert odd.returncode != 0
    assert ("callback 'odd' from distribution step-counter 1.0 (step_counter:not_a_callback) built a object, "
            in odd.stderr)


class HooksWithoutBase:
    """Lightning-style hooks on an object that does not subclass trellis.Callback."""

    def __init__(self) -> None:
        self.calls = 0

    def on_train_batch_end(self, trainer):
        self.calls += 1


def test_a_hook_object_without_the_callback_base_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigurationError, match=r"implements on_train_batch_end but is not a trellis.Callback: "
                                                 r"subclass trellis.Callback .* or pass it in plugins=\[...\]"):
        quiet_trainer(callbacks=[HooksWithoutBase()], default_root_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="neither a trellis.Callback nor a callback name"):
        quiet_trainer(callbacks=[42], default_root_dir=tmp_path)


def test_the_same_hook_object_runs_as_a_plain_hook_plugin_through_a_checkpoint(tmp_path):
    hooks = HooksWithoutBase()
    trainer = quiet_trainer(plugins=[hooks], default_root_dir=tmp_path, max_steps=2)
    trainer.fit(TinyRegressor(), loader())
    trainer.save_checkpoint(tmp_path / "two.ckpt")
    assert hooks.calls == 2 and (tmp_path / "two.ckpt").is_file()
