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
        record = distributions.setdefault(
            entry.distribution,
            {"distribution": entry.distribution, "version": entry.version, "plugin_api": None, "provides": {},
             "plugins": []},
        )
        record["provides"].setdefault(entry.role, []).append(entry.name)
        plugin = {"role": entry.role, "name": entry.name, "entry_point": entry.value,
                  "blocked": discovery.is_blocked(entry), "available": None, "device_count": None,
                  "unavailable_reason": None, "error": None}
        record["plugins"].append(plugin)
        if check and not plugin["blocked"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what a warning would say is in the record
                _check(entry, record, plugin)
    clashes = [_clash_record(role, name, entries) for role, name, entries in discovery.clashes()]
    records = sorted(distributions.values(), key=lambda record: record["distribution"])
    errors = [plugin["error"] for record in records for plugin in record["plugins"] if plugin["error"]]
    return {
        "schema": SCHEMA_VERSION,
        "trellis": __version__,
        "plugin_api": discovery.PLUGIN_API_VERSION,
        "discovery": "kernel defaults only" if discovery.autoload_disabled() else "on",
        "checked": check,
        "distributions": records,
        "clashes": clashes,
        "block_list_problems": discovery.unmatched_block_messages(),
        "ok": not clashes and not errors,
    }


def _check(entry: discovery.PluginEntry, record: dict[str, Any], plugin: dict[str, Any]) -> None:
    from trellis.selection import load_class

    try:
        by_descriptor = entry.role in ("accelerator", "cluster_environment")
        obj = load_class(entry.role, entry.name) if by_descriptor else entry.load()
    except Exception as error:  # a conflict, a failed import, an entry that is not a class: all are reported
        plugin["error"] = str(error)
        return
    declaration = discovery.declared_plugin_api(entry.value.partition(":")[0])
    if declaration is not None:
        record["plugin_api"] = declaration[1]
    probe = {"accelerator": "is_available", "cluster_environment": "detect"}.get(entry.role)
    if probe is None:
        return
    try:
        plugin["available"] = getattr(obj, probe)()
        if entry.role == "accelerator":
            if plugin["available"]:
                plugin["device_count"] = obj.device_count()
            else:
                plugin["unavailable_reason"] = obj.unavailable_reason()
    except Exception as error:  # a plugin's own probe failing is reported, not raised
        plugin["error"] = (f"{entry.role} {entry.name!r} from {entry.origin}: {probe}() or its companions raised "
                           f"{type(error).__name__}: {error}")


def _clash_record(role: str, name: str, entries: list[discovery.PluginEntry]) -> dict[str, Any]:
    known = discovery.KNOWN_PROVIDERS.get((role, name))
    providers = {discovery.normalize_distribution(entry.distribution) for entry in entries}
    return {
        "role": role,
        "name": name,
        "distributions": [{"distribution": entry.distribution, "version": entry.version, "entry_point": entry.value}
                          for entry in entries],
        "resolved_to": known if known in providers else None,
    }


def print_report(report: dict[str, Any]) -> None:
    if report["discovery"] != "on":
        print(f"plugin discovery is off ({discovery.DISABLE_VARIABLE} is set): only the kernel's default "
              "distributions are found")
    if not report["distributions"]:
        print("no Trellis plugin distributions are installed")
    for record in report["distributions"]:
        api = f" (plugin API {record['plugin_api']})" if record["plugin_api"] is not None else ""
        print(f"{record['distribution']} {record['version']}{api}")
        for role, names in sorted(record["provides"].items()):
            plugins = {plugin["name"]: plugin for plugin in record["plugins"] if plugin["role"] == role}
            print(f"  {role}: {', '.join(_with_status(plugins[name]) for name in sorted(names))}")
        unavailable: dict[str, list[str]] = {}  # reason -> names (aliases share one)
        for plugin in record["plugins"]:
            if plugin["unavailable_reason"]:
                unavailable.setdefault(plugin["unavailable_reason"], []).append(plugin["name"])
        for reason, names in unavailable.items():
            print(f"    {', '.join(sorted(names))} unavailable here: {reason}")
        for plugin in record["plugins"]:
            if plugin["error"]:
                print(f"  error: {plugin['error']}")
    for clash in report["clashes"]:
        claims = ", ".join(f"{item['distribution']} {item['version']}" for item in clash["distributions"])
        outcome = (f"{clash['resolved_to']} is used, the others are ignored" if clash["resolved_to"]
                   else "choosing it is an error; `auto` skips it")
        print(f"clash: {clash['role']} {clash['name']!r} is claimed by {claims} ({outcome}): uninstall one, or "
              f"block one with {discovery.BLOCK_VARIABLE}=<distribution>")
    for problem in report["block_list_problems"]:
        print(f"warning: {problem}")
    if not report["checked"]:
        print("(run with --check to import each plugin and test its availability on this machine)")


def _with_status(plugin: dict[str, Any]) -> str:
    name = plugin["name"]
    if plugin["blocked"]:
        return f"{name} (blocked)"
    if plugin["error"]:
        return f"{name} (error)"
    if plugin["device_count"] is not None:
        count = plugin["device_count"]
        return f"{name} (available, {count} device{'s' if count != 1 else ''})"
    if plugin["available"] is None:
        return name
    if plugin["role"] == "cluster_environment":
        return f"{name} ({'detected' if plugin['available'] else 'not detected'})"
    return f"{name} ({'available' if plugin['available'] else 'unavailable'})"


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
        print_report(report)
    return 1 if arguments.check and not report["ok"] else 0
