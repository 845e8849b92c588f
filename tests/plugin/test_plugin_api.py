"""`trellis.plugin` is the plugin API: exactly its `__all__`, light to import, the only way in for plugins."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

import trellis
import trellis.plugin
from support import run_python

REPOSITORY = Path(__file__).resolve().parents[2]
#: what plugin package code may import from the kernel.
PLUGIN_IMPORTS = ("trellis.plugin", "trellis.errors", "trellis.testing")
#: what a plugin's tests and scripts may use besides: the user API (the package's own names, its callbacks).
USER_API_MODULES = ("trellis.callbacks",)


def test_all_is_exactly_the_public_names_sorted():
    lazy = set(trellis.plugin._LAZY)
    public = {name for name in vars(trellis.plugin) if not name.startswith("_")} | lazy
    assert set(trellis.plugin.__all__) == public
    assert trellis.plugin.__all__ == sorted(trellis.plugin.__all__)
    assert set(dir(trellis.plugin)) >= public


def test_every_exported_name_resolves_to_the_kernel_object():
    from trellis.parallel import ParallelStrategy
    from trellis.roles.accelerator import Accelerator

    for name in trellis.plugin.__all__:
        assert getattr(trellis.plugin, name) is not None, name
    assert trellis.plugin.Accelerator is Accelerator
    assert trellis.plugin.ParallelStrategy is ParallelStrategy
    assert trellis.plugin.PLUGIN_API_VERSION == 1
    with pytest.raises(AttributeError, match="no attribute 'Trainer'"):
        trellis.plugin.Trainer  # noqa: B018  (the user API is not the plugin API)


def test_every_trellis_error_is_part_of_the_plugin_api():
    import trellis.errors

    errors = {name for name, value in vars(trellis.errors).items()
              if isinstance(value, type) and issubclass(value, trellis.errors.TrellisError)}
    assert errors <= set(trellis.plugin.__all__)


def test_importing_the_plugin_api_costs_nothing_beyond_import_trellis():
    result = run_python("""
        import sys
        import trellis
        before = set(sys.modules)
        import trellis.plugin
        print(sorted(set(sys.modules) - before))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['trellis.plugin']"


def test_roles_from_the_old_path_warn_with_the_new_import_and_still_work():
    with pytest.warns(DeprecationWarning, match=r"use `from trellis.plugin import Accelerator`") as record:
        from trellis.roles import Accelerator
    assert Accelerator is trellis.plugin.Accelerator
    assert len(record) == 1 and record[0].filename == __file__
    with pytest.raises(ImportError):
        from trellis.roles import NoSuchRole  # noqa: F401


def test_the_kernel_itself_never_triggers_the_deprecation():
    result = run_python("""
        import importlib, pkgutil, warnings
        warnings.simplefilter("error", DeprecationWarning)
        import trellis
        modules = [info.name for info in pkgutil.walk_packages(trellis.__path__, "trellis.")]
        for name in modules:
            importlib.import_module(name)
        print(len(modules), "modules")
    """)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) > 50


def _kernel_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of every kernel name a file imports or reaches as an attribute of `trellis`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "trellis"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "trellis":
            if node.module == "trellis":
                found += [(node.lineno, f"trellis.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trellis":
            found.append((node.lineno, f"trellis.{node.attr}"))
    return found


def _allowed(name: str, in_tests: bool) -> bool:
    if any(name == allowed or name.startswith(allowed + ".") for allowed in PLUGIN_IMPORTS):
        return True
    if not in_tests:
        return False
    if name == "trellis" or name.removeprefix("trellis.") in trellis.__all__:
        return True
    return any(name == allowed or name.startswith(allowed + ".") for allowed in USER_API_MODULES)


def test_plugins_import_the_kernel_only_through_the_plugin_api():
    offences = []
    for path in sorted((REPOSITORY / "plugins").rglob("*.py")):
        relative = path.relative_to(REPOSITORY)
        in_tests = "tests" in relative.parts or path.name == "conftest.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        offences += [f"{relative}:{line}: {name}"
                     for line, name in _kernel_imports(tree) if not _allowed(name, in_tests)]
    assert not offences, "plugins reach past trellis.plugin:\n" + "\n".join(offences)


def test_the_scan_tells_the_plugin_api_from_kernel_internals():
    source = """
import trellis
from trellis.plugin import Accelerator
from trellis.errors import ConfigurationError
from trellis.testing.processes import run
from trellis.callbacks import ModelCheckpoint
from trellis import Trainer, discovery
from trellis.roles import Logger
import trellis.utils.background
trellis.selection.detect_cluster_environment()
"""
    names = _kernel_imports(ast.parse(source))
    package_offences = [name for _, name in names if not _allowed(name, in_tests=False)]
    test_offences = [name for _, name in names if not _allowed(name, in_tests=True)]
    assert package_offences == ["trellis", "trellis.callbacks", "trellis.Trainer", "trellis.discovery", "trellis.roles",
                                "trellis.utils.background", "trellis.selection"]
    assert test_offences == ["trellis.discovery", "trellis.roles", "trellis.utils.background", "trellis.selection"]


def test_plugin_api_names_no_kernel_module_plugins_cannot_see():
    """Whatever the plugin API hands out is defined in the kernel, so one import line reaches all of it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        namespace: dict = {}
        exec("from trellis.plugin import *", namespace)
    assert set(trellis.plugin.__all__) <= set(namespace)
