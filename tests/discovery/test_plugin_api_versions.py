"""A plugin declares the plugin API it was built for; the kernel refuses one it does not provide, and only that one."""

from __future__ import annotations

import trellis.plugin
from discovery.plugin_sources import NPU_MODULE, train_three_steps
from support import make_distribution, run_python

NPU_ENTRY = {"trellis.accelerators": {"npu": "acme_npu:NPU"}}
FUTURE_NPU = NPU_MODULE.replace("TRELLIS_PLUGIN_API = 1", "TRELLIS_PLUGIN_API = 99")
#: written against the import paths of trellis 0.1.0, before declarations existed.
UNDECLARED_OLD_STYLE_NPU = NPU_MODULE.replace("TRELLIS_PLUGIN_API = 1\n", "").replace(
    "from trellis.plugin import Accelerator", "from trellis.roles import Accelerator")


def test_the_in_tree_plugins_declare_the_current_version():
    import trellis_cpu
    import trellis_ddp.strategy  # noqa: F401  (entry points in submodules inherit their package's declaration)
    from trellis.discovery import declared_plugin_api

    assert trellis_cpu.TRELLIS_PLUGIN_API == trellis.plugin.PLUGIN_API_VERSION
    assert declared_plugin_api("trellis_ddp.strategy") == ("trellis_ddp", trellis.plugin.PLUGIN_API_VERSION)


def test_a_plugin_built_for_a_newer_api_is_refused_naming_distribution_and_versions(tmp_path):
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": FUTURE_NPU}, version="3.1")
    result = run_python("import trellis; trellis.Trainer(accelerator='npu', logger=False)", tmp_path)
    assert result.returncode != 0
    assert "PluginLoadError" in result.stderr
    assert ("distribution acme-npu 3.1 was built for Trellis plugin API 99, newer than trellis 0.1.0 provides "
            "(1 to 1): upgrade trellis") in result.stderr


def test_a_refused_plugin_harms_nothing_else(tmp_path):
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": FUTURE_NPU}, version="3.1")
    result = run_python(train_three_steps(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["CPUAccelerator", "3"]
    assert "'npu'" in result.stderr and "plugin API 99" in result.stderr  # auto said why it skipped it


def test_a_declaration_that_is_not_a_version_is_refused(tmp_path):
    module = NPU_MODULE.replace("TRELLIS_PLUGIN_API = 1", "TRELLIS_PLUGIN_API = '1.0'")
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": module})
    result = run_python("import trellis; trellis.Trainer(accelerator='npu', logger=False)", tmp_path)
    assert result.returncode != 0
    assert ("declares TRELLIS_PLUGIN_API = '1.0' in acme_npu, which is not a plugin API version (an int)"
            in result.stderr)


def test_an_undeclared_plugin_on_the_old_import_paths_keeps_working_with_warnings_naming_the_fix(tmp_path):
    make_distribution(tmp_path, "acme-npu", NPU_ENTRY, {"acme_npu.py": UNDECLARED_OLD_STYLE_NPU})
    script = train_three_steps(accelerator="npu") + "import trellis\ntrellis.Trainer(accelerator='npu', logger=False)\n"
    result = run_python("import warnings; warnings.simplefilter('default')\n" + script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["NPU", "3"]
    undeclared = ("distribution acme-npu 1.0 does not declare the Trellis plugin API it was built for; it is treated "
                  "as built for plugin API 1. Its author adds `TRELLIS_PLUGIN_API = 1` to acme_npu.py")
    assert result.stderr.count(undeclared) == 1  # once, though the plugin was loaded by two Trainers
    assert "use `from trellis.plugin import Accelerator`" in result.stderr
