"""The configurable command line: TrellisCLI (LightningCLI on Trellis) and the `trellis fit|...` commands.

Importing this package stays light; the parts that need jsonargparse (pip install "trellis[cli]") are
imported when used: `from trellis.cli import TrellisCLI`.
"""

from trellis.config_cli.command import CONFIG_COMMANDS, CONFIG_FILENAME, add_config_commands, main_config

__all__ = ["CONFIG_COMMANDS", "CONFIG_FILENAME", "add_config_commands", "main_config"]
