"""`trellis fit|validate|test|predict`: TrellisCLI with the classes named in the config or on the command line.

    trellis fit --config run.yaml --model.lr=0.1 --trainer.max_epochs=3
    trellis fit --model=mypackage.MyModel --data=mypackage.MyData --print_config

A config names classes by import path: `model: {class_path: mypackage.MyModel, init_args: {lr: 0.1}}`.
The resolved config of each run is saved as config.yaml in the run directory (trainer.log_dir);
`--overwrite_config=true` replaces one left there by an earlier run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trellis.errors import ConfigurationError

CONFIG_COMMANDS = ("fit", "validate", "test", "predict")
CONFIG_FILENAME = "config.yaml"
_DESCRIPTIONS = {
    "fit": "train the model (trainer.fit)",
    "validate": "run one validation epoch (trainer.validate)",
    "test": "run one test epoch (trainer.test)",
    "predict": "run prediction (trainer.predict)",
}


def add_config_commands(subparsers: Any) -> None:
    """List the four commands in an argparse `trellis --help`; main_config parses them (see trellis.cli.main)."""
    for command in CONFIG_COMMANDS:
        subparsers.add_parser(command, help=_DESCRIPTIONS[command] + " from a YAML config and flags",
                              add_help=False)


def main_config(argv: Sequence[str] | None = None, model_class: type | None = None,
                datamodule_class: type | None = None) -> Any:
    """Parse, build the objects, save the resolved config, run the stage; returns what the stage returns.

    Scripts may fix the classes: `main_config(model_class=MyModel, datamodule_class=MyData)`.
    """
    try:
        from trellis.config_cli.app import TrellisCLI
    except ModuleNotFoundError as error:
        if error.name != "jsonargparse":
            raise
        raise ConfigurationError(
            "the trellis fit/validate/test/predict commands need jsonargparse: pip install \"trellis[cli]\""
        ) from error

    class ConsoleCLI(TrellisCLI):
        """Adds --overwrite_config; parses the arguments it is given without warning about sys.argv."""

        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.add_argument("--overwrite_config", type=bool, default=False,
                                help=f"replace an existing {CONFIG_FILENAME} in the run directory")

        def parse_arguments(self, parser: Any, args: Any) -> None:
            self.config = parser.parse_args(args)

        def before_instantiate_classes(self) -> None:
            self.save_config_kwargs["overwrite"] = bool(self._get(self.config, "overwrite_config"))

    cli = ConsoleCLI(model_class, datamodule_class, args=None if argv is None else list(argv),
                     parser_kwargs={"prog": "trellis"})
    return cli.result
