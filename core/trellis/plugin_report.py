"""`trellis plugins`: what is installed, what clashes, and (with --check) what imports and runs here.

The JSON form (`--json`) is a documented schema (docs/plugins.md, "trellis plugins --json"); its
`schema` field changes only when a field is removed or changes meaning.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from trellis import discovery

SCHEMA_VERSION = 1


def plugin_report(check: bool) -> dict[str, Any]:
    """Every installed plugin distribution, the names two distributions claim, and problems with the block list.

    With `check`, each unblocked plugin is imported and its availability asked (`is_available()` with
    `device_count()` or `unavailable_reason()` for accelerators, `detect()` for cluster environments).
    """
    from trellis import __version__

    distributions: dict[str, dict[str, Any]] = {}
    for entry in discovery.installed_entries(include_blocked=True):
        record = distributions.setdefault(entry.distribution, _new_record(entry, check))
        record["provides"].setdefault(entry.role, []).append(entry.name)
        if discovery.is_blocked(entry):
            record["blocked"].append(entry.name)
        elif check:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what a warning would say is in the record
                _check(entry, record)
    clashes = [_clash_record(role, name, entries) for role, name, entries in discovery.clashes()]
    records = sorted(distributions.values(), key=lambda record: record["distribution"])
    return {
        "schema": SCHEMA_VERSION,
        "trellis": __version__,
        "plugin_api": discovery.PLUGIN_API_VERSION,
        "discovery": "kernel defaults only" if discovery.autoload_disabled() else "on",
        "distributions": records,
        "clashes": clashes,
        "block_list_problems": discovery.unmatched_block_messages(),
        "ok": not clashes and not any(record["errors"] for record in records),
    }


def _new_record(entry: discovery.PluginEntry, check: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"distribution": entry.distribution, "version": entry.version, "provides": {},
                              "blocked": [], "errors": []}
    if check:
        record |= {"plugin_api": None, "available": {}, "unavailable_reason": {}, "device_count": {}}
    return record


def _check(entry: discovery.PluginEntry, record: dict[str, Any]) -> None:
    from trellis.selection import load_class

    try:
        obj = load_class(entry.role, entry.name) if entry.role in ("accelerator", "cluster_environment") else entry.load()
    except Exception as error:  # a conflict, a failed import, an entry that is not a class: all are reported
        record["errors"].append(str(error))
        return
    declaration = discovery.declared_plugin_api(entry.value.partition(":")[0])
    if declaration is not None:
        record["plugin_api"] = declaration[1]
    probe = {"accelerator": "is_available", "cluster_environment": "detect"}.get(entry.role)
    if probe is None:
        return
    try:
        available = getattr(obj, probe)()
        record["available"][entry.name] = available
        if entry.role == "accelerator":
            if available:
                record["device_count"][entry.name] = obj.device_count()
            else:
                record["unavailable_reason"][entry.name] = obj.unavailable_reason()
    except Exception as error:  # a plugin's own probe failing is reported, not raised
        record["errors"].append(f"{entry.role} {entry.name!r}: {probe}() or its companions raised "
                                f"{type(error).__name__}: {error}")


def _clash_record(role: str, name: str, entries: list[discovery.PluginEntry]) -> dict[str, Any]:
    known = discovery.KNOWN_PROVIDERS.get((role, name))
    providers = {discovery.normalize_distribution(entry.distribution) for entry in entries}
    return {
        "role": role,
        "name": name,
        "distributions": [{"distribution": entry.distribution, "version": entry.version, "value": entry.value}
                          for entry in entries],
        "resolved_to": known if known in providers else None,
    }


def print_report(report: dict[str, Any], checked: bool) -> None:
    if report["discovery"] != "on":
        print(f"plugin discovery is off ({discovery.DISABLE_VARIABLE} is set): only the kernel's default "
              "distributions are found")
    if not report["distributions"]:
        print("no Trellis plugin distributions are installed")
    for record in report["distributions"]:
        api = f" (plugin API {record['plugin_api']})" if checked and record["plugin_api"] is not None else ""
        print(f"{record['distribution']} {record['version']}{api}")
        for role, names in sorted(record["provides"].items()):
            print(f"  {role}: {', '.join(_with_status(name, record, checked) for name in sorted(names))}")
        for name, reason in sorted(record.get("unavailable_reason", {}).items()):
            print(f"    {name} is unavailable here: {reason}")
        for error in record["errors"]:
            print(f"  error: {error}")
    for clash in report["clashes"]:
        claims = ", ".join(f"{item['distribution']} {item['version']}" for item in clash["distributions"])
        outcome = (f"{clash['resolved_to']} is used, the others are ignored" if clash["resolved_to"]
                   else "choosing it is an error; `auto` skips it")
        print(f"clash: {clash['role']} {clash['name']!r} is claimed by {claims} ({outcome}): uninstall one, or "
              f"block one with {discovery.BLOCK_VARIABLE}=<distribution>")
    for problem in report["block_list_problems"]:
        print(f"warning: {problem}")
    if not checked:
        print("(run with --check to import each plugin and test its availability on this machine)")


def _with_status(name: str, record: dict[str, Any], checked: bool) -> str:
    if name in record["blocked"]:
        return f"{name} (blocked)"
    if not checked or name not in record["available"]:
        return name
    if name in record["device_count"]:
        count = record["device_count"][name]
        return f"{name} (available, {count} device{'s' if count != 1 else ''})"
    if name in record["unavailable_reason"]:
        return f"{name} (unavailable)"
    return f"{name} ({'available' if record['available'][name] else 'not detected'})"


def add_plugins_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `plugins` on the `trellis` command's subparsers; it runs through `run_plugins`."""
    parser = subparsers.add_parser("plugins", help="list installed plugin distributions and what they provide")
    parser.add_argument("--json", action="store_true", help="machine-readable output (schema in docs/plugins.md)")
    parser.add_argument("--check", action="store_true",
                        help="import each plugin and test availability here; exit 1 on errors or clashes")
    parser.set_defaults(handler=run_plugins)
    return parser


def run_plugins(arguments: argparse.Namespace) -> int:
    """The `plugins` command; with --check, 1 when a plugin fails to load or check, or a name clashes."""
    report = plugin_report(arguments.check)
    if arguments.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report, arguments.check)
    return 1 if arguments.check and not report["ok"] else 0
