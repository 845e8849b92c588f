"""The configuration as the hyperparameters: what the command line builds records its config, as Lightning's CLI.

A Module or DataModule built from the config saves, through save_hyperparameters(), the config it was built
from (plain data: nested objects stay `class_path`/`init_args` entries) instead of the built objects, plus
`_instantiator`, the function load_from_checkpoint then rebuilds it with, nested objects included.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from trellis.config_cli.parser import import_class, jsonargparse
from trellis.errors import CheckpointError
from trellis.utils.hparams import INSTANTIATOR_KEY, given_hyperparameters

#: what `_instantiator` says in the hyperparameters of a Module or DataModule built by the config command line.
INSTANTIATOR_PATH = "trellis.config_cli.given_hparams.instantiate_module"
#: the marker of the chosen subclass in such hyperparameters (with the subclass's arguments beside it).
CLASS_PATH_KEY = "_class_path"
#: the `_instantiator` names a checkpoint may hold (Lightning's CLI writes its own name for the same function).
TRUSTED_INSTANTIATORS = (INSTANTIATOR_PATH, "lightning.pytorch.cli.instantiate_module")

T = TypeVar("T")


class ConfigInstantiator:
    """A jsonargparse instantiator: builds the config's `key` ("model", "data"), which names a subclass by
    class_path or is `kind`'s arguments, with that config as its hyperparameters."""

    def __init__(self, parser: Any, config: Any, key: str, kind: Any) -> None:
        self.parser, self.config, self.key, self.kind = parser, config, key, kind
        self._section: dict[str, Any] | None = None

    def __call__(self, class_type: type[T], *args: Any, applied_instantiation_links: dict[str, Any],
                 **kwargs: Any) -> T:
        section = self._config_section()
        class_path = section.get("class_path")
        if class_type is not (self.kind if class_path is None else import_class(class_path)):
            return class_type(*args, **kwargs)  # another object of the same kind, nested in the config
        hparams = dict(section) if class_path is None else {
            CLASS_PATH_KEY: class_path, **(section.get("init_args") or {}), **(section.get("dict_kwargs") or {})}
        for target, value in applied_instantiation_links.items():
            if target.startswith(f"{self.key}."):
                _set_nested(hparams, target[len(self.key) + 1:].removeprefix("init_args."), value)
        return _build_recording(hparams, class_type, *args, **kwargs)

    def _config_section(self) -> dict[str, Any]:
        if self._section is None:
            dumped = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_unset=False))
            subcommand = self.config.get("subcommand")
            self._section = (dumped[subcommand] if subcommand else dumped).get(self.key) or {}
        return self._section


def instantiate_module(class_type: type[T], hparams: dict[str, Any]) -> T:
    """`class_type` rebuilt from hyperparameters the config command line saved: nested `class_path` entries
    become objects again, and its hyperparameters are these again (load_from_checkpoint calls this when the
    checkpoint names it)."""
    arguments = {key: value for key, value in hparams.items() if key not in (CLASS_PATH_KEY, INSTANTIATOR_KEY)}
    build = functools.partial(_build_recording, arguments)
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(class_type, "module", fail_untyped=False)
    config = parser.parse_object({"module": arguments})
    return parser.instantiate(config, instantiators=[(build, class_type, False)]).module


def trusted_instantiator(name: Any) -> Callable[[type[T], dict[str, Any]], T]:
    """The function a checkpoint's `_instantiator` names; any name but ours is refused, since loading a file
    never imports what the file names."""
    if name not in TRUSTED_INSTANTIATORS:
        raise CheckpointError(
            f"the checkpoint's hyperparameters name {name!r} as the function to rebuild the object with, which is not "
            f"one Trellis trusts ({', '.join(TRUSTED_INSTANTIATORS)}); loading never imports what a file names. Drop "
            f"the {INSTANTIATOR_KEY!r} entry from checkpoint['hyper_parameters'] if you trust the file, or pass the "
            "arguments yourself"
        )
    return instantiate_module


def _build_recording(hparams: dict[str, Any], kind: type[T], *args: Any, **kwargs: Any) -> T:
    """`kind(*args, **kwargs)`, whose save_hyperparameters() records `hparams` and the function to rebuild it."""
    with given_hyperparameters(kind, {**hparams, INSTANTIATOR_KEY: INSTANTIATOR_PATH}):
        return kind(*args, **kwargs)


def _set_nested(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        config = config.setdefault(key, {})
    config[last] = value
