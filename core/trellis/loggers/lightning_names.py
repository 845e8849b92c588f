"""Lightning's logger class names, resolved to the installed logger plugins' classes."""

from __future__ import annotations

from collections.abc import Sequence

#: Lightning's class name -> the logger plugin name that provides it.
PLUGIN_NAMES = {"CSVLogger": "csv", "TensorBoardLogger": "tensorboard", "MLFlowLogger": "mlflow",
                "WandbLogger": "wandb"}


def logger_class(module: str, name: str, offered: Sequence[str]) -> type:
    """`module.name` for a module offering the Lightning names `offered`; the role's base class for "Logger"."""
    if name not in offered:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    if name == "Logger":
        from trellis.roles.logger import Logger

        return Logger
    from trellis import discovery

    loaded: type = discovery.load("logger", PLUGIN_NAMES[name])
    return loaded
