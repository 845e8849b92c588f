"""The `trellis` console command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trellis.config_cli import CONFIG_COMMANDS, add_config_commands
from trellis.plugin_report import add_plugins_parser, run_plugins
from trellis.scaffold import add_new_plugin_parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments_given = list(sys.argv[1:] if argv is None else argv)
    if arguments_given and arguments_given[0] in CONFIG_COMMANDS:
        from trellis.config_cli import main_config

        main_config(arguments_given)
        return 0
    parser = argparse.ArgumentParser(prog="trellis", description="Trellis training runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    add_config_commands(commands)
    add_plugins_parser(commands)
    add_new_plugin_parser(commands)
    arguments = parser.parse_args(arguments_given)
    if arguments.command == "new-plugin":
        return arguments.handler(arguments)
    if arguments.command == "plugins":
        return run_plugins(arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
