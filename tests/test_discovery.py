"""Entry-point discovery with real installed distributions, each case in a fresh interpreter."""

from __future__ import annotations

import json

from support import make_distribution, run_python

NPU_MODULE = """
import torch
from trellis.roles import Accelerator

class NPU(Accelerator):
    name = "npu"
    device_type = "cpu"
    process_group_backend = "gloo"
    auto_priority = 5

    @classmethod
    def is_available(cls):
        return True

    @classmethod
    def device_count(cls):
        return 1

    def device(self, index):
        return torch.device("cpu")
"""
TRAIN_WITH_NPU = """
import sys
sys.path.insert(0, {tests!r})
from support import TinyRegressor, loader, quiet_trainer
trainer = quiet_trainer(accelerator="npu", max_steps=3)
trainer.fit(TinyRegressor(), loader())
print(type(trainer.accelerator).__name__, trainer.global_step)
"""


def _tests_dir() -> str:
    import pathlib

    return str(pathlib.Path(__file__).parent)


def test_third_party_accelerator_found_by_name_and_trains(tmp_path):
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:NPU"}}, {"acme_npu.py": NPU_MODULE})
    result = run_python(TRAIN_WITH_NPU.format(tests=_tests_dir()), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["NPU", "3"]


def test_auto_prefers_the_available_accelerator_with_highest_priority(tmp_path):
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:NPU"}}, {"acme_npu.py": NPU_MODULE})
    result = run_python(
        "import trellis; print(type(trellis.Trainer(logger=False).accelerator).__name__)", tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("NPU")


def test_broken_plugin_reported_with_distribution_when_chosen_and_others_keep_working(tmp_path):
    make_distribution(tmp_path, "broken-npu", {"trellis.accelerators": {"npu": "broken_npu:NPU"}},
                      {"broken_npu.py": "import vendor_sdk_that_is_missing\n"}, version="0.3")
    chosen = run_python("import trellis; trellis.Trainer(accelerator='npu', logger=False)", tmp_path)
    assert chosen.returncode != 0
    assert "broken-npu 0.3" in chosen.stderr and "vendor_sdk_that_is_missing" in chosen.stderr
    others = run_python("import trellis; t = trellis.Trainer(logger=False); print(type(t.accelerator).__name__)", tmp_path)
    assert others.returncode == 0, others.stderr
    assert others.stdout.strip().endswith("CPUAccelerator")


def test_two_distributions_claiming_one_name_is_an_error_naming_both(tmp_path):
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:NPU"}}, {"acme_npu.py": NPU_MODULE})
    make_distribution(tmp_path, "other-npu", {"trellis.accelerators": {"npu": "other_npu:NPU"}},
                      {"other_npu.py": NPU_MODULE}, version="2.0")
    result = run_python("import trellis; trellis.Trainer(accelerator='npu', logger=False)", tmp_path)
    assert result.returncode != 0
    assert "PluginConflictError" in result.stderr
    assert "acme-npu 1.0" in result.stderr and "other-npu 2.0" in result.stderr


def test_unknown_name_lists_installed_names_and_the_distribution_to_install():
    result = run_python("import trellis; trellis.Trainer(strategy='deepspeed_unknown_typo', logger=False)")
    assert "Installed strategy names:" in result.stderr
    result = run_python("""
        import trellis, trellis.discovery as d
        print(d.not_found_message('logger', 'wandb') if 'wandb' not in d.names('logger') else 'pip install trellis-wandb')
    """)
    assert "pip install trellis-wandb" in result.stdout


def test_disabling_autoload_hides_plugins_but_objects_still_work():
    code = f"""
        import sys
        sys.path.insert(0, {_tests_dir()!r})
        from support import TinyRegressor, loader, quiet_trainer
        import trellis, trellis.discovery as d
        from trellis_cpu import CPUAccelerator
        from trellis_true import Float32
        from trellis_torch import TorchCheckpointIO
        print("names", d.names("accelerator"))
        try:
            quiet_trainer()
        except trellis.errors.ConfigurationError as error:
            print("refused:", error)
        trainer = quiet_trainer(plugins=[CPUAccelerator(), Float32(), TorchCheckpointIO()], max_steps=2)
        trainer.fit(TinyRegressor(), loader())
        print("steps", trainer.global_step)
    """
    result = run_python(code, env={"TRELLIS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0, result.stderr
    assert "names []" in result.stdout
    assert "refused:" in result.stdout
    assert "steps 2" in result.stdout


def test_blocking_one_plugin_by_name(tmp_path):
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:NPU"}}, {"acme_npu.py": NPU_MODULE})
    result = run_python("import trellis; trellis.Trainer(accelerator='npu', logger=False)", tmp_path,
                        env={"TRELLIS_BLOCK_PLUGINS": "npu"})
    assert result.returncode != 0 and "blocked by TRELLIS_BLOCK_PLUGINS" in result.stderr
    auto = run_python("import trellis; print(type(trellis.Trainer(logger=False).accelerator).__name__)", tmp_path,
                      env={"TRELLIS_BLOCK_PLUGINS": "acme-npu"})
    assert auto.stdout.strip().endswith("CPUAccelerator"), auto.stderr


def test_plugins_command_lists_distributions_roles_availability_and_load_errors(tmp_path):
    make_distribution(tmp_path, "acme-npu", {"trellis.accelerators": {"npu": "acme_npu:NPU"}}, {"acme_npu.py": NPU_MODULE})
    make_distribution(tmp_path, "broken-logger", {"trellis.loggers": {"brokenlog": "broken_logger:Logger"}},
                      {"broken_logger.py": "raise RuntimeError('bad install')\n"})
    result = run_python("from trellis.cli import main; main(['plugins', '--json', '--check'])", tmp_path)
    assert result.returncode == 0, result.stderr
    records = {record["distribution"]: record for record in json.loads(result.stdout)}
    assert records["acme-npu"]["provides"] == {"accelerator": ["npu"]}
    assert records["acme-npu"]["available"] == {"npu": True}
    assert records["trellis-cpu"]["provides"] == {"accelerator": ["cpu"]}
    assert "bad install" in records["broken-logger"]["errors"][0]
    listing = run_python("from trellis.cli import main; main(['plugins'])", tmp_path)
    assert "acme-npu 1.0" in listing.stdout and "accelerator: npu" in listing.stdout
    assert "bad install" not in listing.stdout  # without --check nothing is imported
