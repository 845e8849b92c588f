"""The kernel's shape: a line budget for its runtime code, a small Trainer facade, loops that never import it.

A repository-shape test (it mirrors no module): it reads the source files, it runs nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

KERNEL = Path(__file__).resolve().parent.parent / "core" / "trellis"

#: Not runtime code: the authoring kit (counted apart), the command-line tools and the user add-ons.
AUTHORING_KIT = ("testing", "scaffold.py", "scaffold_templates")
COMMAND_LINE_TOOLS = ("cli.py", "config_cli", "porting", "plugin_report.py")
USER_ADD_ONS = ("demos", "utilities", "tuner")

#: Non-blank, non-comment lines of the kernel's runtime code: 10,345 when this budget was set, rounded up to the
#: next 250. When a change needs more, first look for what can go (dead code, a helper that belongs in a plugin,
#: an add-on living in the runtime); raise the budget by 250 only when the growth is worth it, and say why in the
#: commit message.
RUNTIME_LINE_BUDGET = 10_500
TRAINER_MAX_LINES = 300


def _code_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#"))


def _top_level(path: Path) -> str:
    return path.relative_to(KERNEL).parts[0]


def test_the_kernel_runtime_code_stays_within_its_line_budget():
    files = sorted(KERNEL.rglob("*.py"))
    outside = AUTHORING_KIT + COMMAND_LINE_TOOLS + USER_ADD_ONS
    runtime = sum(_code_lines(path) for path in files if _top_level(path) not in outside)
    kit = sum(_code_lines(path) for path in files if _top_level(path) in AUTHORING_KIT)
    assert runtime <= RUNTIME_LINE_BUDGET, (
        f"the kernel's runtime code has {runtime} non-blank, non-comment lines, over its budget of "
        f"{RUNTIME_LINE_BUDGET} (the authoring kit, counted apart, has {kit}): see RUNTIME_LINE_BUDGET"
    )


def test_the_trainer_is_a_small_facade():
    lines = len((KERNEL / "trainer.py").read_text().splitlines())
    assert lines <= TRAINER_MAX_LINES, (
        f"trellis/trainer.py has {lines} lines, more than {TRAINER_MAX_LINES}: flags belong in settings.py, "
        "per-step services with the loops, read-only views in trainer_properties.py"
    )


def _package(path: Path) -> str:
    return ".".join(["trellis", *path.relative_to(KERNEL).parent.parts])


def _imported_modules(tree: ast.Module, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in a module of `package`, relative imports resolved, names included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_no_loop_imports_the_trainer():
    loops = sorted((KERNEL / "loops").rglob("*.py"))
    assert loops, "trellis/loops/ holds no modules"
    offences = sorted({
        f"{path.relative_to(KERNEL.parent)}:{line}"
        for path in loops
        for line, module in _imported_modules(ast.parse(path.read_text(), filename=str(path)), _package(path))
        if module == "trellis.trainer" or module.startswith("trellis.trainer.")
    })
    assert not offences, (
        f"{len(offences)} import(s) of trellis.trainer in the loops (they receive a Run instead):\n"
        + "\n".join(offences)
    )
