"""`trellis port`: rewrite a Lightning project's Python files to Trellis (docs/porting.md, "trellis port").

    trellis port src/ train.py            rewrite in place, then list what could not be mapped
    trellis port --dry-run src/ > p.diff  print a unified diff instead (the report goes to stderr)

Only `*.py` files change. Lightning class paths in YAML configs and Lightning in requirements files are
listed, not edited. Running it again changes nothing. Exit status: 0 when everything was mapped, 1 when
the report lists something to do by hand.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import tempfile
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trellis.porting.rewrite import Finding, port_source

_CONFIG_SUFFIXES = (".yaml", ".yml")
_LIGHTNING_IN_CONFIG = re.compile(r"\b(lightning\.pytorch|pytorch_lightning|lightning\.fabric|lightning_fabric)\.")
_LIGHTNING_REQUIREMENT = re.compile(r"^\s*(lightning|pytorch[-_]lightning)\s*([<>=!~\[;#]|$)", re.IGNORECASE)
_SKIPPED_DIRECTORIES = {"__pycache__", "site-packages", "node_modules"}


@dataclass
class PortedFile:
    path: Path
    original: str
    ported: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.original != self.ported

    def diff(self, root: Path) -> str:
        name = _shown(self.path, root)
        return "".join(difflib.unified_diff(self.original.splitlines(keepends=True),
                                            self.ported.splitlines(keepends=True), f"a/{name}", f"b/{name}"))


@dataclass
class PortReport:
    files: list[PortedFile]
    notes: list[tuple[Path, Finding]]

    @property
    def findings(self) -> list[tuple[Path, Finding]]:
        found = [(ported.path, finding) for ported in self.files for finding in ported.findings]
        return found + self.notes


def port_paths(paths: Iterable[str | os.PathLike], write: bool = True) -> PortReport:
    """Port every Python file under `paths` (files or directories); write them back when `write`."""
    files: list[PortedFile] = []
    notes: list[tuple[Path, Finding]] = []
    for path in _files(paths):
        if path.suffix == ".py":
            ported = port_file(path)
            files.append(ported)
            if write and ported.changed:
                _write(path, ported.ported)
        else:
            notes.extend((path, finding) for finding in _scan_other(path))
    return PortReport(files, notes)


def port_file(path: Path) -> PortedFile:
    with tokenize.open(path) as file:  # honours a PEP 263 encoding declaration
        encoding = file.encoding
    text = path.read_bytes().decode(encoding)
    ported, findings = port_source(text)
    return PortedFile(path, text, ported, findings)


def add_port_parser(subparsers: Any) -> None:
    """The `trellis port` subcommand."""
    parser = subparsers.add_parser(
        "port", help="rewrite a Lightning project's imports and class names to Trellis",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="files or directories (searched recursively for *.py)")
    parser.add_argument("--dry-run", action="store_true", help="print a unified diff instead of writing")
    parser.set_defaults(handler=run_port_command)


def run_port_command(arguments: argparse.Namespace) -> int:
    missing = [path for path in arguments.paths if not os.path.exists(path)]
    if missing:
        print(f"trellis port: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    report = port_paths(arguments.paths, write=not arguments.dry_run)
    root = Path.cwd()
    out = sys.stderr if arguments.dry_run else sys.stdout
    for ported in report.files:
        if ported.changed and arguments.dry_run:
            sys.stdout.write(ported.diff(root))
    changed = sum(ported.changed for ported in report.files)
    verb = "would change" if arguments.dry_run else "changed"
    print(f"trellis port: {verb} {changed} of {len(report.files)} Python files", file=out)
    if report.findings:
        print(f"not mapped ({len(report.findings)}), to do by hand:", file=out)
        for path, finding in report.findings:
            print(f"{_shown(path, root)}:{finding.line}: {finding.message}", file=out)
    return 1 if report.findings else 0


def _files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    for given in paths:
        path = Path(given)
        if path.is_file():
            yield path
            continue
        for directory, subdirectories, names in os.walk(path):
            subdirectories[:] = sorted(name for name in subdirectories if _searched(Path(directory) / name))
            for name in sorted(names):
                if name.endswith((".py", *_CONFIG_SUFFIXES)) or _is_requirements(name):
                    yield Path(directory) / name


def _searched(directory: Path) -> bool:
    """Skip hidden directories, caches and virtual environments (they hold other people's code)."""
    name = directory.name
    return not (name.startswith(".") or name in _SKIPPED_DIRECTORIES or (directory / "pyvenv.cfg").exists())


def _is_requirements(name: str) -> bool:
    return name.startswith("requirements") and name.endswith(".txt")


def _scan_other(path: Path) -> Iterator[Finding]:
    """Lightning mentioned in a file the port does not edit."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError):
        return
    for number, line in enumerate(lines, start=1):
        if path.suffix in _CONFIG_SUFFIXES and _LIGHTNING_IN_CONFIG.search(line):
            yield Finding(number, f"Lightning class path in a config (not edited): {line.strip()} "
                                  "-- use the Trellis path (docs/porting.md)")
        elif _is_requirements(path.name) and _LIGHTNING_REQUIREMENT.match(line):
            yield Finding(number, f"Lightning requirement (not edited): {line.strip()} -- require trellis instead")


def _write(path: Path, text: str) -> None:
    """Replace the file atomically (a crash leaves the old or the new file, never half of one)."""
    with tokenize.open(path) as file:
        encoding = file.encoding
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".port")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(text.encode(encoding))
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _shown(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
