"""The `trellis` console command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from trellis import discovery
from trellis.config_cli import CONFIG_COMMANDS, add_config_commands
from trellis.errors import PluginLoadError
from trellis.scaffold import add_new_plugin_parser


def plugin_report(check_availability: bool) -> list[dict[str, Any]]:
    """One record per installed plugin distribution: version, names by role, load errors, availability."""
    distributions: dict[str, dict[str, Any]] = {}
    blocked = {discovery.normalize_distribution(name) for name in discovery.blocked_names()}
    for entry in discovery.installed_entries(include_blocked=True):
        record = distributions.setdefault(
            entry.distribution,
            {"distribution": entry.distribution, "version": entry.version, "provides": {}, "errors": [],
             "blocked": [], "available": {}},
        )
        record["provides"].setdefault(entry.role, []).append(entry.name)
        if {discovery.normalize_distribution(entry.name), discovery.normalize_distribution(entry.distribution)} & blocked:
            record["blocked"].append(entry.name)
            continue
        if check_availability:
            _check(entry, record)
    return sorted(distributions.values(), key=lambda record: record["distribution"])


def _check(entry: discovery.PluginEntry, record: dict[str, Any]) -> None:
    try:
        obj = entry.load()
    except PluginLoadError as error:
        record["errors"].append(str(error))
        return
    probe = getattr(obj, "is_available", None) or getattr(obj, "detect", None)
    if callable(probe):
        try:
            record["available"][entry.name] = bool(probe())
        except Exception as error:  # a plugin's own probe failing is reported, not raised
            record["errors"].append(f"{entry.role} {entry.name!r}: availability check failed: {error}")


def _print_table(records: list[dict[str, Any]], checked: bool) -> None:
    if discovery.autoload_disabled():
        print(f"plugin discovery is off ({discovery.DISABLE_VARIABLE} is set)")
    if not records:
        print("no Trellis plugin distributions are installed")
    for record in records:
        print(f"{record['distribution']} {record['version']}")
        for role, names in sorted(record["provides"].items()):
            shown = []
            for name in sorted(names):
                status = ""
                if name in record["blocked"]:
                    status = " (blocked)"
                elif checked and name in record["available"]:
                    status = " (available)" if record["available"][name] else " (unavailable here)"
                shown.append(name + status)
            print(f"  {role}: {', '.join(shown)}")
        for error in record["errors"]:
            print(f"  error: {error}")
    if not checked:
        print("(run with --check to import each plugin and test its availability on this machine)")


def main(argv: Sequence[str] | None = None) -> int:
    arguments_given = list(sys.argv[1:] if argv is None else argv)
    if arguments_given and arguments_given[0] in CONFIG_COMMANDS:
        from trellis.config_cli import main_config

        main_config(arguments_given)
        return 0
    parser = argparse.ArgumentParser(prog="trellis", description="Trellis training runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    add_config_commands(commands)
    listing = commands.add_parser("plugins", help="list installed plugin distributions and what they provide")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--check", action="store_true", help="import each plugin and test availability here")
    add_new_plugin_parser(commands)
    arguments = parser.parse_args(arguments_given)
    if arguments.command == "new-plugin":
        return arguments.handler(arguments)
    if arguments.command == "plugins":
        records = plugin_report(arguments.check)
        if arguments.json:
            json.dump(records, sys.stdout, indent=2)
            print()
        else:
            _print_table(records, arguments.check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
