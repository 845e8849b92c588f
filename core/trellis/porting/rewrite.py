"""Porting one Python source from Lightning to Trellis, keeping its layout and comments.

Imports of Lightning modules and names are rewritten to their Trellis homes (mapping.py), uses of renamed
names follow (`LightningModule` -> `Module`), attribute chains on Lightning module aliases become Trellis paths
(`pl.callbacks.EarlyStopping` -> `trellis.callbacks.EarlyStopping`), and cosmetic Lightning-only calls are
replaced by a comment. What has no Trellis counterpart is left as it was and reported with its line.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from trellis.porting.mapping import Dropped, Mapped, MappedModule, Resolution, Unmapped, is_lightning, resolve

NOTE = "trellis port:"
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
           ast.GeneratorExp)


@dataclass(frozen=True)
class Finding:
    """Something the port could not map, at a 1-based line."""

    line: int
    message: str


@dataclass
class _Binding:
    """A name bound to a Lightning module (`import lightning as L`, `from lightning.pytorch import loggers`)."""

    path: str
    statement: ast.stmt
    alias: ast.alias
    modules: list[str] = field(default_factory=list)
    used: bool = False
    keep: bool = False


def port_source(text: str) -> tuple[str, list[Finding]]:
    """The Trellis version of a Lightning program's source, and what could not be mapped."""
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        return text, [Finding(error.lineno or 1, f"not ported: Python cannot parse this file ({error.msg})")]
    return _Porter(text, tree).run()


class _Porter:
    def __init__(self, text: str, tree: ast.Module) -> None:
        self.text, self.tree = text, tree
        self.data = text.encode("utf-8")
        self.line_starts = [0] + [match.end() for match in re.finditer(rb"\n", self.data)]
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.findings: list[Finding] = []
        self.edits: list[tuple[int, int, str]] = []
        self.bindings: dict[str, _Binding] = {}
        self.renames: dict[str, str] = {}
        self.dropped: dict[str, str] = {}
        self.dropped_statements: dict[ast.stmt, str] = {}
        self.bound_elsewhere = self._names_bound_outside_lightning_imports()

    # -- driving ---------------------------------------------------------------------------------
    def run(self) -> tuple[str, list[Finding]]:
        imports = [node for node in ast.walk(self.tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   and _lightning_import(node)]
        plans = {node: self._plan_import(node) for node in imports}
        self._rewrite_uses()
        for node, plan in plans.items():
            self._emit_import(node, plan)
        for statement, note in self.dropped_statements.items():
            self._replace_statement(statement, [f"# {NOTE} removed {self._segment(statement).strip()} ({note})"])
        return self._apply(), sorted(set(self.findings), key=lambda finding: finding.line)

    # -- imports ---------------------------------------------------------------------------------
    def _plan_import(self, node: ast.Import | ast.ImportFrom) -> dict[str, list]:
        """Per statement: names to import from Trellis modules, bindings that become module imports, and
        aliases to keep as they are."""
        plan: dict[str, list] = {"from": [], "bindings": [], "keep": [], "other": []}
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not is_lightning(alias.name):
                    plan["other"].append(alias)
                    continue
                path = alias.name if alias.asname else alias.name.split(".")[0]
                binding = _Binding(path, node, alias)
                self.bindings[alias.asname or alias.name.split(".")[0]] = binding
                plan["bindings"].append(binding)
            return plan
        for alias in node.names:
            bound = alias.asname or alias.name
            if alias.name == "*":
                self.findings.append(Finding(node.lineno, f"from {node.module} import *: import the names you use"))
                plan["keep"].append(alias)
                continue
            resolution = resolve(f"{node.module}.{alias.name}")
            if isinstance(resolution, Mapped):
                plan["from"].append((resolution.module, self._imported_name(resolution.name, alias)))
            elif isinstance(resolution, Dropped):
                self.dropped[bound] = resolution.note
            else:
                binding = _Binding(f"{node.module}.{alias.name}", node, alias)
                self.bindings[bound] = binding
                plan["bindings"].append(binding)
        return plan

    def _imported_name(self, name: str, alias: ast.alias) -> str:
        """`name`, `name as asname`, or `name as original` when renaming would clash with another binding."""
        if alias.asname:
            return name if name == alias.asname else f"{name} as {alias.asname}"
        if name == alias.name:
            return name
        if name in self.bound_elsewhere:
            return f"{name} as {alias.name}"
        self.renames[alias.name] = name
        return name

    def _emit_import(self, node: ast.Import | ast.ImportFrom, plan: dict[str, list]) -> None:
        by_module: dict[str, list[str]] = defaultdict(list)
        for module, name in plan["from"]:
            by_module[module].append(name)
        kept = list(plan["keep"])
        modules: list[str] = []
        for binding in plan["bindings"]:
            if binding.keep:
                kept.append(binding.alias)
            modules.extend(module for module in binding.modules if module not in modules)
        changed = bool(by_module) or bool(modules) or len(kept) < len(node.names) - len(plan["other"])
        if not changed:
            return
        if (isinstance(node, ast.ImportFrom) and not modules and not kept and len(by_module) == 1
                and len(plan["from"]) == len(node.names)):
            self._edit_from_in_place(node, next(iter(by_module)), plan["from"])
            return
        lines = []
        if plan["other"]:
            lines.append("import " + ", ".join(_alias_text(alias) for alias in plan["other"]))
        lines += [f"from {module} import {', '.join(names)}" for module, names in by_module.items()]
        lines += [f"import {module}" for module in modules]
        if kept:
            names = ", ".join(_alias_text(alias) for alias in kept)
            lines.append(f"from {node.module} import {names}" if isinstance(node, ast.ImportFrom)
                         else f"import {names}")
        removed = [alias.name for alias in node.names if (alias.asname or alias.name) in self.dropped]
        if removed:
            lines.append(f"# {NOTE} removed the import of {', '.join(removed)} ({self.dropped[removed[0]]})")
        self._replace_statement(node, lines)

    def _edit_from_in_place(self, node: ast.ImportFrom, module: str, names: list[tuple[str, str]]) -> None:
        start, _ = self._span(node)
        match = re.match(rb"from\s+([\w.]+)", self.data[start:])
        if match is None:
            self._replace_statement(node, [f"from {module} import {', '.join(name for _, name in names)}"])
            return
        self.edits.append((start + match.start(1), start + match.end(1), module))
        for alias, (_, text) in zip(node.names, names):
            if text != _alias_text(alias):
                self.edits.append((*self._span(alias), text))

    # -- uses ------------------------------------------------------------------------------------
    def _rewrite_uses(self) -> None:
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Name) or self._shadowed(node):
                continue
            if node.id in self.bindings:
                self._rewrite_chain(node, self.bindings[node.id])
            elif node.id in self.renames:
                self.edits.append((*self._span(node), self.renames[node.id]))
            elif node.id in self.dropped:
                self._drop_call(node, self.dropped[node.id], node.id)
        for binding in self.bindings.values():
            if binding.used:
                continue
            resolution = resolve(binding.path)
            if isinstance(resolution, (Mapped, MappedModule)):
                binding.modules.append(resolution.module)
            else:
                binding.keep = True
                self.findings.append(Finding(binding.statement.lineno, _reason(resolution)))

    def _rewrite_chain(self, name: ast.Name, binding: _Binding) -> None:
        binding.used = True
        chain: list[ast.expr] = [name]
        while isinstance(parent := self.parents.get(chain[-1]), ast.Attribute) and parent.value is chain[-1]:
            chain.append(parent)
        attributes = [node.attr for node in chain[1:]]  # type: ignore[attr-defined]
        for length in range(len(attributes), -1, -1):
            path = ".".join([binding.path, *attributes[:length]])
            resolution = resolve(path)
            if isinstance(resolution, Unmapped):
                continue
            if isinstance(resolution, Dropped):
                self._drop_call(chain[length], resolution.note, path)
                return
            if isinstance(resolution, MappedModule) and length < len(attributes):
                missing = ".".join([binding.path, *attributes[:length + 1]])
                break
            module = resolution.module
            expression = f"{module}.{resolution.name}" if isinstance(resolution, Mapped) else module
            if module not in binding.modules:
                binding.modules.append(module)
            self.edits.append((self._span(name)[0], self._span(chain[length])[1], expression))
            return
        else:
            missing = ".".join([binding.path, *attributes])
        binding.keep = True
        self.findings.append(Finding(name.lineno, _reason(resolve(missing))))

    def _drop_call(self, node: ast.expr, note: str, shown: str) -> None:
        call = self.parents.get(node)
        statement = self.parents.get(call) if isinstance(call, ast.Call) and call.func is node else None
        if isinstance(statement, ast.Expr):
            self.dropped_statements[statement] = note
        else:
            self.findings.append(Finding(node.lineno, f"{shown} ({note}) is used other than as a call statement: "
                                                      "remove it by hand"))

    def _shadowed(self, name: ast.Name) -> bool:
        """Whether the name refers to a local of an enclosing function, lambda or comprehension."""
        node = self.parents.get(name)
        while node is not None:
            if isinstance(node, _SCOPES) and name.id in _local_names(node):
                return True
            node = self.parents.get(node)
        return False

    def _names_bound_outside_lightning_imports(self) -> set[str]:
        bound = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and not _lightning_import(node):
                bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
        return bound

    # -- text ------------------------------------------------------------------------------------
    def _span(self, node: ast.AST) -> tuple[int, int]:
        return (self.line_starts[node.lineno - 1] + node.col_offset,  # type: ignore[attr-defined]
                self.line_starts[node.end_lineno - 1] + node.end_col_offset)  # type: ignore[attr-defined]

    def _segment(self, node: ast.AST) -> str:
        start, end = self._span(node)
        return self.data[start:end].decode("utf-8")

    def _replace_statement(self, statement: ast.stmt, lines: list[str]) -> None:
        """Replace a statement by lines at its indentation; `pass` keeps a block that would be left empty."""
        start, end = self._span(statement)
        before = self.data[self.line_starts[statement.lineno - 1]:start].decode("utf-8")
        after = self.data[end:self._line_end(end)].decode("utf-8").strip()
        code = [line for line in lines if not line.startswith("#")]
        if before.strip() or (after and not after.startswith("#")):
            text = "; ".join(code) or "pass"  # the statement shares its line with other code
        else:
            if not code and self._alone_in_block(statement):
                lines = [f"pass  {lines[0]}", *lines[1:]]
            text = (self.newline + before).join(lines)
        self.edits.append((start, end, text))

    def _alone_in_block(self, statement: ast.stmt) -> bool:
        parent = self.parents.get(statement)
        for field_name in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(parent, field_name, None)
            if isinstance(block, list) and statement in block:
                return len(block) == 1 and not isinstance(parent, ast.Module)
        return False

    def _line_end(self, offset: int) -> int:
        newline = self.data.find(b"\n", offset)
        return len(self.data) if newline < 0 else newline

    def _apply(self) -> str:
        data = self.data
        taken: list[tuple[int, int]] = []
        for start, end, _text in sorted(self.edits, key=lambda edit: (edit[0], -edit[1])):
            if any(start < other_end and other_start < end for other_start, other_end in taken):
                continue  # inside a statement that is replaced whole
            taken.append((start, end))
        for start, end, text in sorted((edit for edit in self.edits if (edit[0], edit[1]) in taken),
                                       key=lambda edit: edit[0], reverse=True):
            data = data[:start] + text.encode("utf-8") + data[end:]
        return data.decode("utf-8")


def _lightning_import(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and node.module is not None and is_lightning(node.module)
    return any(is_lightning(alias.name) for alias in node.names)


def _alias_text(alias: ast.alias) -> str:
    return alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"


def _reason(resolution: Resolution) -> str:
    return resolution.reason if isinstance(resolution, Unmapped) else "no Trellis counterpart for some uses"


def _local_names(scope: ast.AST) -> set[str]:
    names: set[str] = set()
    arguments = getattr(scope, "args", None)
    if isinstance(arguments, ast.arguments):
        names.update(arg.arg for arg in _all_args(arguments))
    for node in _walk_without_nested_scopes(scope):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not scope:
            names.add(node.name)
    return names


def _all_args(arguments: ast.arguments) -> Iterator[ast.arg]:
    yield from arguments.posonlyargs
    yield from arguments.args
    yield from arguments.kwonlyargs
    if arguments.vararg:
        yield arguments.vararg
    if arguments.kwarg:
        yield arguments.kwarg


def _walk_without_nested_scopes(scope: ast.AST) -> Iterator[ast.AST]:
    pending = list(ast.iter_child_nodes(scope))
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, _SCOPES):
            pending.extend(ast.iter_child_nodes(node))
