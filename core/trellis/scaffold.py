"""`trellis new-plugin`: a plugin distribution that installs, passes its tests and runs by name at once."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import re
import string
import sys
from pathlib import Path

from trellis import discovery
from trellis.discovery import GROUPS, PLUGIN_API_VERSION
from trellis.errors import ConfigurationError
from trellis.scaffold_templates import plugins, project, tests

#: role as typed on the command line -> role name in the kernel.
ROLE_ALIASES = {role.replace("_", "-"): role for role in GROUPS} | {role: role for role in GROUPS}
_CLASS_SUFFIX = {
    "accelerator": "Accelerator",
    "strategy": "Strategy",
    "precision": "Precision",
    "logger": "Logger",
    "checkpoint_io": "CheckpointIO",
    "cluster_environment": "Environment",
    "callback": "Callback",
}
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*([-_][a-z0-9]+)*")


def scaffold(role: str, name: str, directory: str | os.PathLike = ".") -> Path:
    """Write the distribution trellis-NAME for a plugin of `role` under `directory`; return its folder."""
    role = ROLE_ALIASES.get(role, role)
    if role not in GROUPS:
        raise ConfigurationError(f"--role {role!r} is not a plugin role: use one of {', '.join(sorted(ROLE_ALIASES))}")
    if not _NAME_PATTERN.fullmatch(name):
        raise ConfigurationError(
            f"plugin name {name!r} is not usable: use lowercase letters, digits, '-' or '_', starting with a letter "
            "(e.g. acme or acme-npu)"
        )
    _refuse_taken(role, name, f"trellis-{name}")
    ident = name.replace("-", "_")
    values = {
        "name": name,
        "entry_name": f'"{name}"' if "-" in name else name,
        "ident": ident,
        "role": role,
        "role_words": role.replace("_", " "),
        "group": GROUPS[role],
        "distribution": f"trellis-{name}",
        "package": f"trellis_{ident}",
        "cls": "".join(part.capitalize() for part in re.split(r"[-_]", name)) + _CLASS_SUFFIX[role],
        "env_prefix": ident.upper(),
        "plugin_api": str(PLUGIN_API_VERSION),
        "trellis_requirement": _trellis_requirement(),
    }
    root = Path(directory) / values["distribution"]
    if root.exists() and any(root.iterdir()):
        raise ConfigurationError(f"{root} already exists and is not empty: choose another --dir or remove it")
    values["usage"] = "import trellis\n\n" + _render(project.USAGE[role], values)
    values["flags"] = _render(tests.TRAIN_FLAGS.get(role, ""), values)
    values["third_party_imports"], values["kit_imports"] = tests.IMPORTS.get(role, ("", ""))
    files = {
        "pyproject.toml": project.PYPROJECT,
        "README.md": project.README,
        ".gitignore": project.GITIGNORE,
        f"{values['package']}/__init__.py": plugins.MODULES[role],
        f"tests/test_{ident}_{role}.py": tests.HEADER + tests.BODIES[role],
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(template, values))
    return root


def _refuse_taken(role: str, name: str, distribution: str) -> None:
    """A name another distribution provides (or is known to provide) would clash; a distribution name in use
    would make pip replace the installed one."""
    for entry in discovery.declared_entries():
        if entry.role == role and entry.name == name:
            raise ConfigurationError(
                f"the {role.replace('_', ' ')} name {name!r} is already provided by {entry.origin}: a second plugin "
                f"under it would clash with that one. Choose another name (e.g. acme-{name})"
            )
    provider = discovery.KNOWN_PROVIDERS.get((role, name))
    if provider is not None:
        raise ConfigurationError(
            f"the {role.replace('_', ' ')} name {name!r} belongs to the distribution {provider}, which would win "
            f"against yours wherever both are installed. Choose another name (e.g. acme-{name})"
        )
    try:
        installed = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return
    raise ConfigurationError(
        f"the distribution {distribution} is already installed ({installed.version}): installing the scaffold "
        f"would replace it. Choose another name (e.g. acme-{name})"
    )


def _trellis_requirement() -> str:
    """The trellis versions a plugin built against this one is compatible with: this minor release series."""
    from trellis import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    return f"trellis>={major}.{minor},<{major}.{minor + 1}"


def _render(template: str, values: dict[str, str]) -> str:
    return string.Template(template).substitute(values)


def add_new_plugin_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `new-plugin` on the `trellis` command's subparsers; it runs through `run_new_plugin`."""
    parser = subparsers.add_parser(
        "new-plugin",
        help="scaffold a plugin distribution (pyproject with entry point, package, tests, README)",
        description="Write trellis-NAME/, a plugin distribution that installs, passes its tests and the "
        "conformance kit, and works by name at once.",
    )
    parser.add_argument(
        "--role",
        required=True,
        type=lambda text: text.replace("_", "-"),
        choices=sorted(role.replace("_", "-") for role in GROUPS),
        help="the role the plugin fills",
    )
    parser.add_argument("name", help="the name users choose it by, e.g. acme for Trainer(accelerator='acme')")
    parser.add_argument("--dir", default=".", help="folder to create trellis-NAME/ in (default: the current one)")
    parser.set_defaults(handler=run_new_plugin)
    return parser


def run_new_plugin(arguments: argparse.Namespace) -> int:
    """The `new-plugin` command: scaffold, then say what to do next; a bad name or folder exits with 2."""
    try:
        root = scaffold(arguments.role, arguments.name, arguments.dir)
    except ConfigurationError as error:
        print(f"trellis new-plugin: error: {error}", file=sys.stderr)
        return 2
    print(f"created {root}\nnext:\n  pip install -e {root}\n  cd {root} && pytest")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m trellis.scaffold --role ROLE NAME [--dir DIR]`: the same command without the `trellis` CLI."""
    parser = argparse.ArgumentParser(prog="trellis")
    add_new_plugin_parser(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args(["new-plugin", *(sys.argv[1:] if argv is None else argv)])
    return arguments.handler(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
