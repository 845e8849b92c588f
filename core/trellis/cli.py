"""The `trellis` console command, and the LightningCLI-compatible API (`from trellis.cli import TrellisCLI`).

TrellisCLI and its companions need jsonargparse (pip install "trellis[cli]") and are imported only when
used, so `trellis plugins` and the other commands work without it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from trellis.config_cli import CONFIG_COMMANDS, add_config_commands
from trellis.plugin_report import add_plugins_parser, run_plugins
from trellis.porting import add_port_parser
from trellis.scaffold import add_new_plugin_parser

#: What Lightning's lightning.pytorch.cli offers, by name, and the module of trellis.config_cli that holds it.
_CONFIG_CLI_NAMES = {
    "TrellisCLI": "app", "LightningCLI": "app",
    "TrellisArgumentParser": "parser", "LightningArgumentParser": "parser", "instantiate_class": "parser",
    "SaveConfigCallback": "save_config",
    "ReduceLROnPlateau": "optimizers", "OptimizerCallable": "optimizers", "LRSchedulerCallable": "optimizers",
    "LRSchedulerTypeUnion": "optimizers", "LRSchedulerTypeTuple": "optimizers", "LRSchedulerType": "optimizers",
    "ArgsType": "optimizers",
}
__all__ = ["main", *_CONFIG_CLI_NAMES]


def __getattr__(name: str) -> Any:
    if name not in _CONFIG_CLI_NAMES:
        raise AttributeError(f"module 'trellis.cli' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"trellis.config_cli.{_CONFIG_CLI_NAMES[name]}"), name)


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
    add_port_parser(commands)
    arguments = parser.parse_args(arguments_given)
    if arguments.command in ("new-plugin", "port"):
        return arguments.handler(arguments)
    if arguments.command == "plugins":
        return run_plugins(arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
