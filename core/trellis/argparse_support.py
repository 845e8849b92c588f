"""Trainer flags on a plain argparse parser: the classic Trainer.add_argparse_args / from_argparse_args."""

from __future__ import annotations

import argparse
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

#: Flags that take Python objects (callbacks, plugin objects): set them in code, not on a command line.
OBJECT_FLAGS = frozenset({"callbacks", "plugins"})
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def trainer_flags(trainer_class: type[Any] | None = None) -> dict[str, inspect.Parameter]:
    """The Trainer's keyword flags, as its signature declares them."""
    trainer_class = trainer_class or _trainer_class()
    parameters = inspect.signature(trainer_class.__init__).parameters
    return {name: parameter for name, parameter in parameters.items()
            if parameter.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            if name != "self"}


def add_argparse_args(parser: argparse.ArgumentParser,
                      trainer_class: type[Any] | None = None) -> argparse.ArgumentParser:
    """Add `--<flag>` for every Trainer flag (with its type and default) in a "Trainer" group; returns parser."""
    trainer_class = trainer_class or _trainer_class()
    hints = typing.get_type_hints(trainer_class.__init__)
    group = parser.add_argument_group("Trainer")
    for name, parameter in trainer_flags(trainer_class).items():
        if name in OBJECT_FLAGS:
            continue
        annotation = hints.get(name, Any)
        group.add_argument(f"--{name}", dest=name, type=value_parser(annotation), default=parameter.default,
                           metavar=_metavar(annotation),
                           help=f"Trainer({name}=...); type {_type_text(annotation)}, default {parameter.default!r}")
    return parser


def from_argparse_args(args: argparse.Namespace | argparse.ArgumentParser, trainer_class: type | None = None,
                       **overrides: Any) -> Any:
    """A Trainer from the parsed Trainer flags in `args` (other entries are ignored); overrides win."""
    trainer_class = trainer_class or _trainer_class()
    if isinstance(args, argparse.ArgumentParser):
        args = args.parse_args()
    known = trainer_flags(trainer_class)
    flags = {name: value for name, value in vars(args).items() if name in known}
    return trainer_class(**{**flags, **overrides})


def value_parser(annotation: Any) -> Callable[[str], Any]:
    """A command-line string to a value of the annotated type; unions try their members in a useful order."""
    members = _members(annotation)
    if members == {bool}:
        return parse_bool
    order = [kind for kind in (type(None), int, float, bool) if kind in members]
    if Any in members or object in members:
        order = [type(None), int, float, bool]
    accepts_text = Any in members or object in members or str in members or not order
    converters: dict[type, Callable[[str], Any]] = {type(None): parse_none, bool: parse_bool, int: int, float: float}

    def parse(text: str) -> Any:
        for kind in order:
            try:
                return converters[kind](text)
            except ValueError:
                continue
        if accepts_text:
            return text
        raise argparse.ArgumentTypeError(f"{text!r} is not a {_type_text(annotation)}")

    parse.__name__ = _type_text(annotation)
    return parse


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not true/false")


def parse_none(text: str) -> None:
    if text.strip().lower() not in ("none", "null"):
        raise ValueError(f"{text!r} is not None")
    return None


def _members(annotation: Any) -> set[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {member for argument in typing.get_args(annotation) for member in _members(argument)}
    origin = typing.get_origin(annotation)
    return {origin if origin is not None else annotation}


def _type_text(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _metavar(annotation: Any) -> str:
    return _type_text(annotation).upper().replace(" ", "")


def _trainer_class() -> type:
    from trellis.trainer import Trainer

    return Trainer
