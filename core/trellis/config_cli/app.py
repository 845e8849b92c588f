"""TrellisCLI: LightningCLI's behaviour on Trellis, so a LightningCLI script ports by renaming.

    cli = TrellisCLI(MyModel, MyData, run=False, seed_everything_default=1234)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

With run=True (the default) the command line chooses a subcommand: `python train.py fit --config run.yaml
--model.lr=0.1 --trainer.max_epochs=3`, and `--print_config` shows the resolved config. The config of each
run is saved as config.yaml in the run directory (SaveConfigCallback).
"""

from __future__ import annotations

import inspect
import sys
from functools import partial, update_wrapper
from pathlib import Path
from types import MethodType
from typing import Any

import torch
from torch.optim import Optimizer

import trellis
from trellis.callbacks.base import Callback
from trellis.config_cli.given_hparams import CLASS_PATH_KEY, ConfigInstantiator
from trellis.config_cli.optimizers import ArgsType, LRSchedulerTypeTuple, ReduceLROnPlateau
from trellis.config_cli.parser import (
    TrellisArgumentParser,
    import_class,
    instantiate_class,
    jsonargparse,
    with_class_path,
)
from trellis.config_cli.save_config import SaveConfigCallback
from trellis.datamodule import DataModule
from trellis.errors import ConfigurationError
from trellis.module import Module
from trellis.trainer import Trainer
from trellis.utilities.rank_zero import rank_zero_warn
from trellis.utils.hparams import INSTANTIATOR_KEY
from trellis.utils.seed import seed_everything

_SUBCOMMAND_HELP = {
    "fit": "Train the model (Trainer.fit).",
    "validate": "Run one validation epoch (Trainer.validate).",
    "test": "Run one test epoch (Trainer.test).",
    "predict": "Run prediction (Trainer.predict).",
}


class TrellisCLI:
    """Builds Module, DataModule and Trainer from a config file and the command line (jsonargparse).

    The arguments are LightningCLI's. `model_class`/`datamodule_class` may be None (any subclass is chosen
    with `--model=pkg.Class`) or a function that returns an instance. `trainer_defaults` change Trainer
    defaults; its callbacks are always added and cannot be configured away. `seed_everything_default` is the
    seed (True: seed_everything's default, False: no seeding). `save_config_kwargs` go to the
    save_config_callback (e.g. {"overwrite": True}). `args` replaces sys.argv[1:] (a list of strings, or a
    dict/Namespace config). `auto_configure_optimizers` adds `--optimizer` and `--lr_scheduler`, which replace
    the module's configure_optimizers when given. With `load_from_checkpoint_support` (the default) the model
    and datamodule save their config as their hyperparameters, which load_from_checkpoint rebuilds them from.

    After construction: `parser`, `config` (parsed), `config_init` (instantiated), `model`, `datamodule`,
    `trainer`, `subcommand`, and `result` (what the subcommand returned, with run=True).
    Subclasses customise through add_arguments_to_parser (`parser.link_arguments(...)`,
    `parser.add_trellis_class_args(...)`), before/after_instantiate_classes and before_<subcommand> /
    after_<subcommand> methods; a method named like the subcommand replaces the Trainer's.
    """

    def __init__(
        self,
        model_class: type[Module] | Any = None,
        datamodule_class: type[DataModule] | Any = None,
        save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
        save_config_kwargs: dict[str, Any] | None = None,
        trainer_class: type[Trainer] | Any = Trainer,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = True,
        parser_kwargs: dict[str, Any] | None = None,
        parser_class: type[TrellisArgumentParser] = TrellisArgumentParser,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: ArgsType = None,
        run: bool = True,
        auto_configure_optimizers: bool = True,
        load_from_checkpoint_support: bool = True,
    ) -> None:
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = dict(save_config_kwargs or {})
        self.trainer_class = trainer_class
        self.trainer_defaults = dict(trainer_defaults or {})
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = dict(parser_kwargs or {})
        self.parser_class = parser_class
        self.auto_configure_optimizers = auto_configure_optimizers
        self.load_from_checkpoint_support = load_from_checkpoint_support
        self.model_class = model_class
        self._model_class = model_class or Module
        self.subclass_mode_model = model_class is None or subclass_mode_model
        self.datamodule_class = datamodule_class
        self._datamodule_class = datamodule_class or DataModule
        self.subclass_mode_data = datamodule_class is None or subclass_mode_data
        self.result: Any = None

        main_kwargs = {key: value for key, value in self.parser_kwargs.items() if key not in self.subcommands()}
        subcommand_kwargs = {key: value for key, value in self.parser_kwargs.items() if key in self.subcommands()}
        self.setup_parser(run, main_kwargs, subcommand_kwargs)
        self.parse_arguments(self.parser, args)
        self._parse_ckpt_path()
        self.subcommand: str | None = self.config["subcommand"] if run else None
        self._set_seed()
        self.before_instantiate_classes()
        self.instantiate_classes()
        self.after_instantiate_classes()
        if self.subcommand is not None:
            self._run_subcommand(self.subcommand)

    # -- the parser --------------------------------------------------------------------------
    def init_parser(self, **kwargs: Any) -> TrellisArgumentParser:
        """A parser with `-c/--config` (and jsonargparse's `--print_config`)."""
        kwargs.setdefault("dump_header", [f"trellis=={trellis.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=jsonargparse.ActionConfigFile,
                            help="Path to a configuration file in json or yaml format.")
        return parser

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        self.parser = self.init_parser(**main_kwargs)
        if add_subcommands:
            self._subcommand_method_arguments: dict[str, list[str]] = {}
            self._add_subcommands(self.parser, **subparser_kwargs)
        else:
            self._add_arguments(self.parser)

    def add_default_arguments_to_parser(self, parser: TrellisArgumentParser) -> None:
        parser.add_argument("--seed_everything", type=bool | int, default=self.seed_everything_default,
                            help="An int seeds every RNG with seed_everything before the classes are built; "
                                 "True uses seed_everything's default; False seeds nothing.")

    def add_core_arguments_to_parser(self, parser: TrellisArgumentParser) -> None:
        parser.add_trellis_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{key}": value for key, value in self.trainer_defaults.items()
                             if key != "callbacks"})
        parser.add_trellis_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_trellis_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data,
                                      required=self.datamodule_class is not None)

    def add_arguments_to_parser(self, parser: TrellisArgumentParser) -> None:
        """Override to add arguments or link them (`parser.link_arguments("data.num_classes", "model.classes")`)."""

    def _add_arguments(self, parser: TrellisArgumentParser) -> None:
        self.add_default_arguments_to_parser(parser)
        self.add_core_arguments_to_parser(parser)
        self.add_arguments_to_parser(parser)
        if self.auto_configure_optimizers:
            if not parser._optimizers:
                parser.add_optimizer_args((Optimizer,))
            if not parser._lr_schedulers:
                parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        self.link_optimizers_and_lr_schedulers(parser)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """The subcommands, each with the Trainer method arguments the CLI fills itself (not configurable)."""
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }

    def _add_subcommands(self, parser: TrellisArgumentParser, **kwargs: Any) -> None:
        self._subcommand_parsers: dict[str, TrellisArgumentParser] = {}
        subcommands = parser.add_subcommands()
        trainer_class = (self.trainer_class if isinstance(self.trainer_class, type)
                         else jsonargparse.class_from_function(self.trainer_class))
        for name, skipped in self.subcommands().items():
            description = _short_description(getattr(trainer_class, name)) or _SUBCOMMAND_HELP.get(name)
            options = dict(kwargs.get(name, {}))
            options.setdefault("description", description)
            subparser = self.init_parser(**options)
            self._add_arguments(subparser)
            self._subcommand_method_arguments[name] = subparser.add_method_arguments(
                trainer_class, name, skip=set(skipped))
            self._subcommand_parsers[name] = subparser
            subcommands.add_subcommand(name, subparser, help=description)

    @staticmethod
    def link_optimizers_and_lr_schedulers(parser: TrellisArgumentParser) -> None:
        """Link optimizer/scheduler groups added with an explicit `link_to` into that argument."""
        for key, (kind, link_to) in {**parser._optimizers, **parser._lr_schedulers}.items():
            if link_to == "AUTOMATIC":
                continue
            if isinstance(kind, tuple):
                parser.link_arguments(key, link_to)
            else:
                parser.link_arguments(key, link_to, compute_fn=partial(with_class_path, kind))

    def parse_arguments(self, parser: TrellisArgumentParser, args: ArgsType) -> None:
        """Parse `args` (or sys.argv) into self.config."""
        if args is not None and len(sys.argv) > 1:
            rank_zero_warn(
                "TrellisCLI got both args= and command-line arguments; it parses args= only "
                f"(sys.argv[1:]={sys.argv[1:]}, args={args}). Pass one of them."
            )
        if isinstance(args, (dict, jsonargparse.Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    def _parse_ckpt_path(self) -> None:
        """Take the module's hyperparameters from the checkpoint given as ckpt_path, as Lightning does."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        try:
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - the Trainer reports an unreadable checkpoint when it loads it
            return
        hparams = dict(checkpoint.get("hyper_parameters") or {}) if isinstance(checkpoint, dict) else {}
        for key in (INSTANTIATOR_KEY, CLASS_PATH_KEY):  # what the config command line adds to the config
            hparams.pop(key, None)
        model_config = self.config[subcommand].get("model")
        if not hparams or model_config is None:
            return
        if "class_path" in model_config:
            kind = import_class(model_config["class_path"])
            hparams = {"class_path": model_config["class_path"], "init_args": _accepted(kind, hparams)}
        elif isinstance(self._model_class, type):
            hparams = _accepted(self._model_class, hparams)
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"the hyperparameters in {ckpt_path} do not fit the model's arguments\n")
            raise

    # -- building ----------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        """Override to run code before the classes are built."""

    def instantiate_classes(self) -> None:
        """Build model, datamodule and trainer from the parsed config."""
        instantiators = [
            (ConfigInstantiator(self.parser, self.config, "model", self._model_class), Module, True),
            (ConfigInstantiator(self.parser, self.config, "data", self._datamodule_class), DataModule, True),
        ] if self.load_from_checkpoint_support else []
        self.config_init = self.parser.instantiate(self.config, instantiators=instantiators)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model(self.subcommand)
        self.trainer = self.instantiate_trainer()

    def after_instantiate_classes(self) -> None:
        """Override to run code after the classes are built."""

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer from the config (kwargs win), with the callbacks of the parser's callback keys,
        trainer_defaults' callbacks and the save-config callback."""
        extra_callbacks = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        config = {**dict(self._get(self.config_init, "trainer", default={})), **kwargs}
        return self._instantiate_trainer(config, extra_callbacks)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        given = config.get("callbacks")
        merged = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
        merged.extend(callbacks)
        defaults = self.trainer_defaults.get("callbacks")
        if defaults is not None:
            merged.extend(defaults if isinstance(defaults, (list, tuple)) else [defaults])
        if self.save_config_callback is not None and not config.get("fast_dev_run", False):
            merged.append(self.save_config_callback(
                self._parser(self.subcommand), self.config.get(str(self.subcommand), self.config),
                **self.save_config_kwargs))
        config["callbacks"] = merged
        return self.trainer_class(**config)

    def _parser(self, subcommand: str | None) -> TrellisArgumentParser:
        return self.parser if subcommand is None else self._subcommand_parsers[subcommand]

    # -- optimizers from the config ------------------------------------------------------------
    @staticmethod
    def configure_optimizers(module: Module, optimizer: Optimizer, lr_scheduler: Any = None) -> Any:
        """What the module's configure_optimizers returns when --optimizer/--lr_scheduler are given."""
        if lr_scheduler is None:
            return optimizer
        if isinstance(lr_scheduler, ReduceLROnPlateau):
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": lr_scheduler, "monitor": lr_scheduler.monitor}}
        return [optimizer], [lr_scheduler]

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        if not self.auto_configure_optimizers:
            return
        parser = self._parser(subcommand)
        optimizers = _automatic(Optimizer, parser._optimizers)
        schedulers = _automatic(LRSchedulerTypeTuple, parser._lr_schedulers)
        if not optimizers:
            return
        if len(optimizers) > 1 or len(schedulers) > 1:
            raise ConfigurationError(
                f"{type(self).__name__}: at most one optimizer and one lr_scheduler may be AUTOMATIC, found "
                f"{optimizers + schedulers}: link the others with link_to= and write configure_optimizers yourself"
            )
        optimizer_init = self._class_init(parser._optimizers[optimizers[0]][0], optimizers[0])
        if not optimizer_init:
            return
        scheduler_init = (self._class_init(parser._lr_schedulers[schedulers[0]][0], schedulers[0])
                          if schedulers else None)
        if type(self.model).configure_optimizers is not Module.configure_optimizers:
            rank_zero_warn(f"`{type(self.model).__name__}.configure_optimizers` will be overridden by "
                           f"`{type(self).__name__}.configure_optimizers` (--optimizer was given).")
        optimizer = instantiate_class(self.model.parameters(), optimizer_init)
        scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
        configure = partial(self.configure_optimizers, optimizer=optimizer, lr_scheduler=scheduler)
        update_wrapper(configure, self.configure_optimizers)
        self.model.configure_optimizers = MethodType(configure, self.model)

    def _class_init(self, kind: type | tuple[type, ...], key: str) -> Any:
        init = self._get(self.config_init, key)
        if isinstance(kind, tuple):
            return init.as_dict() if isinstance(init, jsonargparse.Namespace) else init
        return with_class_path(kind, init)

    # -- running -------------------------------------------------------------------------------
    def _get(self, config: Any, key: str, default: Any = None) -> Any:
        """A config value, looked up inside the subcommand's section when there is one."""
        return config.get(str(self.subcommand), config).get(key, default)

    def _run_subcommand(self, subcommand: str) -> None:
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        run = getattr(self, subcommand, getattr(self.trainer, subcommand))
        self.result = run(**self._prepare_subcommand_kwargs(subcommand))
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        arguments = {key: value for key, value in self.config_init[subcommand].items()
                     if key in self._subcommand_method_arguments[subcommand]}
        arguments["model"] = self.model
        if self.datamodule is not None:
            arguments["datamodule"] = self.datamodule
        return arguments

    def _set_seed(self) -> None:
        seed = self._get(self.config, "seed_everything")
        if seed is False or seed is None:
            return
        seed = seed_everything(workers=True) if seed is True else seed_everything(seed, workers=True)
        if self.subcommand:
            self.config[self.subcommand]["seed_everything"] = seed
        else:
            self.config["seed_everything"] = seed


#: Lightning's name, for code ported without renaming.
LightningCLI = TrellisCLI


def _automatic(base: type | tuple[type, ...], registry: dict[str, tuple[Any, str]]) -> list[str]:
    bases = base if isinstance(base, tuple) else (base,)
    found = []
    for key, (kind, link_to) in registry.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if link_to == "AUTOMATIC" and any(issubclass(candidate, bases) for candidate in kinds):
            found.append(key)
    return found


def _short_description(function: Any) -> str | None:
    doc = inspect.getdoc(function)
    return doc.strip().split("\n\n")[0].replace("\n", " ") if doc else None


def _accepted(kind: type[Any], hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters that kind.__init__ takes (all of them if it takes **kwargs)."""
    parameters = inspect.signature(kind.__init__).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return hparams
    return {key: value for key, value in hparams.items() if key in parameters and key != "self"}
