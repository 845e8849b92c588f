"""The tests of a scaffold, per role; the conformance kit runs beside them (see pyproject.toml)."""

HEADER = '''"""Tests of the ${name} ${role_words} plugin; the Trellis conformance kit checks its contract too."""

from __future__ import annotations

${third_party_imports}import trellis
from trellis.plugin import load_plugin, plugin_names
${kit_imports}from trellis.testing.workload import TinyRegression, make_loader, trainer_flags

from ${package} import ${cls}


def test_installed_under_its_name():
    assert "${name}" in plugin_names("${role}")
    assert load_plugin("${role}", "${name}") is ${cls}
'''

TRAIN = '''

def test_trains_with_${ident}(tmp_path):
    trellis.seed_everything(0)
    module = TinyRegression()
    trainer = trellis.Trainer(max_steps=3, **trainer_flags(tmp_path, ${flags}))
    trainer.fit(module, make_loader())
    assert trainer.global_step == 3
'''

BODIES = {
    "accelerator": TRAIN + '''

def test_trainer_runs_on_${ident}_devices(tmp_path):
    trainer = trellis.Trainer(**trainer_flags(tmp_path, accelerator="${name}", devices=1))
    assert isinstance(trainer.accelerator, ${cls})
    assert trainer.strategy.root_device == ${cls}().device(0)


@pytest.mark.skipif(
    ${cls}.device_count() < 2,
    reason="DDP needs two ${name} devices: run `${env_prefix}_STANDIN_DEVICES=2 pytest` to train on two stand-in "
    "devices (the host CPU) until the ${name} runtime is wired in",
)
def test_ddp_keeps_the_ranks_identical():
    ddp = next(check for check in checks_for("accelerator") if check.id == "ddp")
    run_check(ddp, Subject(Target.parse("accelerator:${name}")))
''',
    "strategy": TRAIN,
    "precision": TRAIN,
    "logger": TRAIN + '''

def test_metrics_reach_the_backend(tmp_path):
    logger = ${cls}(save_dir=tmp_path)
    trainer = trellis.Trainer(max_steps=2, **trainer_flags(tmp_path, accelerator="cpu", logger=logger))
    trainer.fit(TinyRegression(), make_loader())
    lines = (tmp_path / "${name}" / "run_0" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 2 and '"train_loss"' in lines[0]
''',
    "checkpoint_io": TRAIN + '''

def test_resumes_from_its_own_checkpoint(tmp_path):
    trainer = trellis.Trainer(max_steps=2, **trainer_flags(tmp_path, accelerator="cpu", plugins=[${cls}()]))
    trainer.fit(TinyRegression(), make_loader())
    trainer.save_checkpoint(tmp_path / "two.ckpt")
    assert ${cls}().load_checkpoint(tmp_path / "two.ckpt")["global_step"] == 2
''',
    "cluster_environment": '''

def test_detected_only_inside_its_launcher(monkeypatch):
    from ${package} import RANK, WORLD_SIZE

    monkeypatch.delenv(WORLD_SIZE, raising=False)
    assert not ${cls}.detect()
    monkeypatch.setenv(WORLD_SIZE, "4")
    monkeypatch.setenv(RANK, "3")
    assert ${cls}.detect()
    assert (${cls}().world_size(), ${cls}().global_rank()) == (4, 3)
''',
    "callback": TRAIN + '''

def test_sees_every_step(tmp_path):
    callback = ${cls}()
    trainer = trellis.Trainer(max_steps=3, **trainer_flags(tmp_path, accelerator="cpu", callbacks=[callback]))
    trainer.fit(TinyRegression(), make_loader())
    assert callback.steps_seen == 3
''',
}

#: imports only some roles' tests use: (before `import trellis`, the kit's beside the workload's).
IMPORTS = {"accelerator": ("import pytest\n\n", "from trellis.testing import Subject, Target, checks_for, run_check\n")}

#: Trainer flags that choose the plugin, per role, for the TRAIN test.
TRAIN_FLAGS = {
    "accelerator": 'accelerator="${name}", devices=1',
    "strategy": 'accelerator="cpu", devices=1, strategy="${name}"',
    "precision": 'accelerator="cpu", precision="${name}"',
    "logger": 'accelerator="cpu", logger="${name}"',
    "checkpoint_io": 'accelerator="cpu", plugins=[${cls}()]',
    "callback": 'accelerator="cpu", callbacks=["${name}"]',
}
