"""Entry-point discovery with real installed distributions, each case in a fresh interpreter."""

from __future__ import annotations

from discovery.plugin_sources import NPU_MODULE, TESTS_DIR, train_three_steps
from support import make_distribution, run_python

NPU_ENTRY = {"trellis.accelerators": {"npu": "acme_npu:NPU"}}


def test_third_party_accelerator_found_by_name_and_trains(tmp_path):
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": NPU_MODULE})
    result = run_python(train_three_steps(accelerator="npu"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["NPU", "3"]


def test_auto_prefers_the_available_accelerator_with_highest_priority(tmp_path):
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": NPU_MODULE})
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
    others = run_python("import trellis; t = trellis.Trainer(logger=False); print(type(t.accelerator).__name__)",
                        tmp_path)
    assert others.returncode == 0, others.stderr
    assert others.stdout.strip().endswith("CPUAccelerator")


def test_two_distributions_claiming_a_chosen_name_is_an_error_naming_both(tmp_path):
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": NPU_MODULE})
    make_distribution(tmp_path, "other-npu", {"trellis.accelerators": {"npu": "other_npu:NPU"}},
                      {"other_npu.py": NPU_MODULE}, version="2.0")
    result = run_python("import trellis; trellis.Trainer(accelerator='npu', logger=False)", tmp_path)
    assert result.returncode != 0
    assert "PluginConflictError" in result.stderr
    assert "acme-npu 1.0" in result.stderr and "other-npu 2.0" in result.stderr


def test_a_well_known_name_stays_with_its_distribution_when_another_claims_it(tmp_path):
    """A third party claiming "csv" cannot replace (or break) the CSV logger (the dependency-free default)."""
    hijack = "from trellis.plugin import Logger\nTRELLIS_PLUGIN_API = 1\nclass Hijack(Logger):\n    pass\n"
    make_distribution(tmp_path, "csv-hijack", {"trellis.loggers": {"csv": "csv_hijack:Hijack"}},
                      {"csv_hijack.py": hijack})
    result = run_python("""
        import tempfile, trellis
        trainer = trellis.Trainer(logger="csv", default_root_dir=tempfile.mkdtemp(), enable_progress_bar=False)
        print(type(trainer.logger).__module__)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "trellis_csv"
    assert ("logger name 'csv' belongs to trellis-csv 0.1.0; csv-hijack 1.0 claims it too and is ignored"
            in result.stderr)
    assert result.stderr.count("csv-hijack 1.0 claims it") == 1


def test_unknown_name_lists_installed_names_suggests_the_closest_and_the_distribution_to_install():
    result = run_python("import trellis; trellis.Trainer(strategy='dpp', logger=False)")
    assert "Installed strategy names:" in result.stderr
    assert "Did you mean 'ddp'?" in result.stderr
    result = run_python("""
        import trellis, trellis.discovery as d
        installed = 'wandb' in d.names('logger')
        print('pip install trellis-wandb' if installed else d.not_found_message('logger', 'wandb'))
    """)
    assert "pip install trellis-wandb" in result.stdout


def test_disabling_autoload_keeps_the_kernels_defaults_and_hides_everything_else(tmp_path):
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": NPU_MODULE})
    code = f"""
        import sys, tempfile
        sys.path.insert(0, {TESTS_DIR!r})
        from support import TinyRegressor, loader
        import trellis, trellis.discovery as d
        print("accelerators", d.names("accelerator"))
        root = tempfile.mkdtemp()
        trainer = trellis.Trainer(max_steps=2, default_root_dir=root, enable_progress_bar=False)
        trainer.fit(TinyRegressor(), loader())
        print("trained", type(trainer.accelerator).__name__, type(trainer.logger).__name__, trainer.global_step)
        trainer.save_checkpoint(root + "/two.ckpt")
        print("loaded", type(TinyRegressor.load_from_checkpoint(root + "/two.ckpt")).__name__)
        try:
            trellis.Trainer(accelerator="npu", logger=False)
        except trellis.errors.ConfigurationError as error:
            print("refused:", error)
    """
    result = run_python(code, tmp_path, env={"TRELLIS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0, result.stderr
    assert "accelerators ['cpu']" in result.stdout
    assert "trained CPUAccelerator CSVLogger 2" in result.stdout
    assert "loaded TinyRegressor" in result.stdout
    refusal = result.stdout.split("refused:")[1]
    assert "Plugin discovery is off (TRELLIS_DISABLE_PLUGIN_AUTOLOAD is set): pass the plugin object" in refusal
    assert "pip install" not in refusal


def test_disabling_autoload_with_the_defaults_blocked_names_the_object_to_pass():
    result = run_python("import trellis; trellis.Trainer(logger=False)",
                        env={"TRELLIS_DISABLE_PLUGIN_AUTOLOAD": "1", "TRELLIS_BLOCK_PLUGINS": "trellis-cpu"})
    assert result.returncode != 0
    assert "Trainer(accelerator=CPUAccelerator())" in result.stderr
    assert "pip install trellis-cpu" not in result.stderr  # it is installed, only blocked


def test_blocking_one_plugin_by_name(tmp_path):
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": NPU_MODULE})
    result = run_python("import trellis; trellis.Trainer(accelerator='npu', logger=False)", tmp_path,
                        env={"TRELLIS_BLOCK_PLUGINS": "npu"})
    assert result.returncode != 0 and "blocked by TRELLIS_BLOCK_PLUGINS" in result.stderr
    auto = run_python("import trellis; print(type(trellis.Trainer(logger=False).accelerator).__name__)", tmp_path,
                      env={"TRELLIS_BLOCK_PLUGINS": "acme-npu"})
    assert auto.stdout.strip().endswith("CPUAccelerator"), auto.stderr


def test_a_block_list_entry_that_matches_nothing_is_reported_with_the_closest_name(tmp_path):
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": NPU_MODULE})
    result = run_python("import trellis; print(type(trellis.Trainer(logger=False).accelerator).__name__)", tmp_path,
                        env={"TRELLIS_BLOCK_PLUGINS": "acme-nup"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("NPU")  # nothing was blocked
    assert ("TRELLIS_BLOCK_PLUGINS names 'acme-nup', which is no installed plugin or distribution, so it blocks "
            "nothing: did you mean 'acme-npu'?") in result.stderr
    assert result.stderr.count("TRELLIS_BLOCK_PLUGINS names") == 1


def test_the_distributions_kept_with_discovery_off_are_the_ones_the_kernel_depends_on():
    import re
    import tomllib
    from pathlib import Path

    from trellis.discovery import KERNEL_DISTRIBUTIONS

    project = tomllib.loads((Path(TESTS_DIR).parent / "pyproject.toml").read_text())["project"]
    required = {re.split(r"[<>=!~;\[ ]", requirement)[0] for requirement in project["dependencies"]}
    assert KERNEL_DISTRIBUTIONS == {name for name in required if name.startswith("trellis-")}
