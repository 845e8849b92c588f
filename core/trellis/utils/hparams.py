"""Hyperparameters: what `save_hyperparameters()` records, as Lightning records it, and its checkpoint entries."""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import copy
import inspect
import types
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import torch

from trellis.utils.rank_zero import rank_zero_warn

#: what `hparams_type` says in a checkpoint when the hyperparameters came as an argparse.Namespace or as an
#: OmegaConf DictConfig (they are rebuilt as one; checkpoints hold plain dicts, which weights-only loading reads).
NAMESPACE_TYPE = "Namespace"
DICTCONFIG_TYPE = "DictConfig"
#: the hyperparameter that names the function load_from_checkpoint rebuilds the object with (set by the config
#: command line, whose hyperparameters are a configuration: nested class_path entries become objects again).
INSTANTIATOR_KEY = "_instantiator"

#: (class, hyperparameters) while the config command line builds that class from its configuration.
_given_hyperparameters: contextvars.ContextVar[tuple[type, dict[str, Any]] | None] = contextvars.ContextVar(
    "trellis_given_hyperparameters", default=None)


@contextlib.contextmanager
def given_hyperparameters(kind: type, hparams: dict[str, Any]) -> Iterator[None]:
    """While `kind` is built: its save_hyperparameters() records `hparams` (a configuration, plain data) in place
    of the objects its __init__ received, as Lightning's CLI has it."""
    token = _given_hyperparameters.set((kind, dict(hparams)))
    try:
        yield
    finally:
        _given_hyperparameters.reset(token)


class AttributeDict(dict):
    """A dict whose keys read and write as attributes (self.hparams.lr)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as error:
            raise AttributeError(f"hparams has no {key!r}; it holds {sorted(self)}") from error

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        del self[key]


def collect_init_arguments(frame: types.FrameType | None, instance: object) -> dict[str, Any]:
    """The arguments of the `__init__`s of `instance` running from `frame` outwards (a subclass's values win).

    Frames before the first such `__init__` are skipped (save_hyperparameters called from a helper that
    __init__ calls); `*args` are left out and `**kwargs` are spread, as in Lightning. Values are the local
    variables' current values.
    """
    while frame is not None and not _is_init_of(frame, instance):
        frame = frame.f_back
    arguments: dict[str, Any] = {}
    while frame is not None and _is_init_of(frame, instance):
        info = inspect.getargvalues(frame)
        own = {name: info.locals[name] for name in info.args[1:] if name in info.locals}
        if info.keywords and isinstance(info.locals.get(info.keywords), Mapping):
            own.update(info.locals[info.keywords])
        arguments.update(own)
        frame = frame.f_back
    return arguments


def _is_init_of(frame: types.FrameType, instance: object) -> bool:
    code = frame.f_code
    return (code.co_name == "__init__" and code.co_argcount > 0
            and frame.f_locals.get(code.co_varnames[0]) is instance)


def plain_value(value: Any) -> Any:
    """A YAML/JSON-safe form of a hyperparameter value (unknown objects become their repr)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(key): plain_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(item) for item in value]
    return repr(value)


def flatten_hparams(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameter dicts as "outer/inner" keys (for backends with flat parameter names)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class HyperparametersMixin:
    """`self.hparams`, `save_hyperparameters()` and `hparams_initial`, for Modules and DataModules.

    The classic form `self.hparams = namespace_or_dict` in `__init__` is kept too: load_from_checkpoint
    then rebuilds the module with an object of the same kind.
    """

    #: whether the Trainer sends `hparams_initial` to the loggers (save_hyperparameters(logger=...)).
    _log_hyperparams: bool = False
    #: the __init__ argument the hyperparameters came as ("kwargs": each argument by its name), or None.
    _hparams_name: str | None = None
    #: "Namespace" when they came as an argparse.Namespace (it is rebuilt as one), else None.
    _hparams_type: str | None = None

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Sequence[str] | str | None = None,
        frame: types.FrameType | None = None,
        logger: bool = True,
    ) -> None:
        """Record the arguments of the running `__init__` (and its subclasses') in `self.hparams`.

        No args: every argument. Names: those arguments. One dict, Namespace or other mapping: that object's
        entries. `ignore` leaves arguments out (also ones a base class saved); `frame` is where to read the
        arguments (default: the caller's); `logger=False` keeps them out of the loggers' hyperparameters.
        They go into checkpoints, and load_from_checkpoint passes them back to `__init__`.
        """
        object.__setattr__(self, "_log_hyperparams", logger)
        if len(args) == 1 and not isinstance(args[0], str) and not args[0]:
            return  # an empty container: nothing to save
        if frame is None:
            frame = inspect.currentframe().f_back  # type: ignore[union-attr]
        given = _given_hyperparameters.get()
        arguments = dict(given[1]) if given is not None and type(self) is given[0] else collect_init_arguments(
            frame, self)
        ignored = [ignore] if isinstance(ignore, str) else [name for name in (ignore or ()) if isinstance(name, str)]
        arguments = {name: value for name, value in arguments.items() if name not in ignored}
        objects = [arg for arg in args if not isinstance(arg, str)]
        if not args:
            hparams: Any = arguments
            name = "kwargs" if arguments else None
        elif len(objects) == 1:
            hparams = objects[0]
            name = next((key for key, value in arguments.items() if _same(value, hparams)), None)
        else:
            missing = [arg for arg in args if isinstance(arg, str) and arg not in arguments]
            if missing:
                raise ValueError(
                    f"save_hyperparameters({', '.join(map(repr, missing))}): not an argument of "
                    f"{type(self).__name__}.__init__ (its arguments: {sorted(arguments)}); pass argument names, "
                    "or one dict/Namespace"
                )
            hparams = {arg: arguments[arg] for arg in args if isinstance(arg, str)}
            name = "kwargs"
        self._set_hparams(hparams, name)
        for key in ignored:
            self.hparams.pop(key, None)
        for key, value in self.hparams.items():
            if isinstance(value, torch.nn.Module):
                rank_zero_warn(
                    f"hyperparameter {key!r} is a torch.nn.Module, whose weights are saved in checkpoints anyway: "
                    f"leave it out with self.save_hyperparameters(ignore=[{key!r}])"
                )
        object.__setattr__(self, "_hparams_initial", copy.deepcopy(self.hparams))

    def _set_hparams(self, hparams: Any, name: str | None) -> None:
        kind = NAMESPACE_TYPE if isinstance(hparams, argparse.Namespace) else (
            DICTCONFIG_TYPE if _is_omegaconf(hparams) else None)
        converted = as_hparams_container(hparams)
        current = self.hparams
        if isinstance(converted, dict) and isinstance(current, dict):
            current.update(converted)
        else:
            object.__setattr__(self, "_hparams", converted)
        object.__setattr__(self, "_hparams_name", name)
        object.__setattr__(self, "_hparams_type", kind)

    @property
    def hparams(self) -> AttributeDict | MutableMapping:
        """The saved hyperparameters; changes made to them during training go into checkpoints."""
        if "_hparams" not in self.__dict__:
            object.__setattr__(self, "_hparams", AttributeDict())
        return self.__dict__["_hparams"]

    @hparams.setter
    def hparams(self, value: Mapping[str, Any] | argparse.Namespace) -> None:
        """The classic form: `self.hparams = hparams` in `__init__`, with a Namespace or a dict."""
        object.__setattr__(self, "_hparams", AttributeDict())
        arguments = collect_init_arguments(inspect.currentframe().f_back, self)  # type: ignore[union-attr]
        self._set_hparams(value, next((key for key, item in arguments.items() if item is value), None))
        object.__setattr__(self, "_log_hyperparams", True)
        object.__setattr__(self, "_hparams_initial", copy.deepcopy(self.hparams))

    @property
    def hparams_initial(self) -> AttributeDict:
        """A copy of the hyperparameters as saved, before any change during training (what loggers get)."""
        if "_hparams_initial" not in self.__dict__:
            return AttributeDict()
        return copy.deepcopy(self.__dict__["_hparams_initial"])


def as_hparams_container(hparams: Any) -> MutableMapping:
    """A Namespace or dict as an AttributeDict; other mappings (an OmegaConf DictConfig) as they are."""
    if isinstance(hparams, argparse.Namespace):
        hparams = vars(hparams)
    if isinstance(hparams, dict):
        return AttributeDict(hparams)
    if isinstance(hparams, MutableMapping):
        return hparams
    raise ValueError(
        f"hyperparameters must be a dict, an argparse.Namespace or another mapping, not a {type(hparams).__name__}: "
        "pass argument names to save_hyperparameters('lr', 'layers') to save single values"
    )


def _is_omegaconf(value: Any) -> bool:
    return type(value).__module__.startswith("omegaconf.")


def _same(value: Any, hparams: Any) -> bool:
    """Whether an __init__ argument is the object passed to save_hyperparameters (Lightning compares by ==)."""
    if value is hparams:
        return True
    try:
        return bool(value == hparams)
    except Exception:  # tensors and other objects without a plain truth value
        return False


def checkpoint_entries(holder: Any) -> dict[str, Any]:
    """What a checkpoint stores of a Module's or DataModule's hyperparameters, under the holder's keys
    (Lightning's): the hyperparameters, the __init__ argument they came as, and "Namespace" for a Namespace."""
    if holder is None or not getattr(holder, "hparams", None):
        return {}
    hparams = holder.hparams
    if _is_omegaconf(hparams):
        from omegaconf import OmegaConf

        hparams = OmegaConf.to_container(hparams, resolve=True)
    entries: dict[str, Any] = {holder.CHECKPOINT_HYPER_PARAMS_KEY: dict(hparams)}
    if holder._hparams_name is not None:
        entries[holder.CHECKPOINT_HYPER_PARAMS_NAME] = holder._hparams_name
    if holder._hparams_type is not None:
        entries[holder.CHECKPOINT_HYPER_PARAMS_TYPE] = holder._hparams_type
    return entries


def rebuild_hparams(values: dict[str, Any], kind: Any) -> Any:
    """The hyperparameters object to pass back to __init__: a Namespace or DictConfig where one was saved."""
    if kind == NAMESPACE_TYPE:
        return argparse.Namespace(**values)
    if kind == DICTCONFIG_TYPE:
        from omegaconf import OmegaConf

        return OmegaConf.create(values)
    if isinstance(kind, str):  # a Lightning 1.x checkpoint names the type as text: attribute access keeps working
        return AttributeDict(values)
    if callable(kind):  # a Lightning 2.x checkpoint holds the class itself (loaded with weights_only=False)
        return kind(values)
    return values
