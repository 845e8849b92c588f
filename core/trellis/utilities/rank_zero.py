"""Run, print and warn on global rank zero only, under Lightning's names.

The rank is read from the launcher's environment (RANK, SLURM_PROCID, ...) when a call is made, so a
decorated function behaves right in processes that DDP starts or spawns; assigning `rank_zero_only.rank`
overrides it, as in Lightning.

Projects also use `lightning_utilities.core.rank_zero.rank_zero_only` directly (the lightning-hydra-template
does), which refuses to run until its `rank` is set; importing Lightning sets it, and `import trellis` does
too (`share_rank_with_lightning_utilities`), without importing lightning_utilities before the project does.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

from trellis.utils.rank_zero import global_rank

_Result = TypeVar("_Result")
log = logging.getLogger("trellis")


class RankZeroOnly:
    """`@rank_zero_only` runs the function on global rank zero and returns `default` (None) elsewhere."""

    def __init__(self) -> None:
        self._rank: int | None = None

    @property
    def rank(self) -> int:
        return self._rank if self._rank is not None else global_rank()

    @rank.setter
    def rank(self, value: int | None) -> None:
        self._rank = value

    def __call__(self, fn: Callable[..., _Result], default: Any = None) -> Callable[..., _Result | Any]:
        @functools.wraps(fn)
        def on_rank_zero(*args: Any, **kwargs: Any) -> _Result | Any:
            return fn(*args, **kwargs) if self.rank == 0 else default

        return on_rank_zero


rank_zero_only = RankZeroOnly()


def rank_zero_info(*args: Any, **kwargs: Any) -> None:
    """Print a message to stderr on rank zero, as Lightning's log handler does (arguments as for `logging.info`:
    a message and %-format values)."""
    if rank_zero_only.rank == 0:
        print(_message(args), file=sys.stderr, flush=True)


def rank_zero_debug(*args: Any, **kwargs: Any) -> None:
    """A debug record on the "trellis" logger, on rank zero."""
    if rank_zero_only.rank == 0:
        log.debug(*args, **kwargs)


def rank_zero_warn(message: str | Warning, category: type[Warning] = UserWarning, stacklevel: int = 2,
                   **kwargs: Any) -> None:
    """`warnings.warn` on rank zero; stacklevel=2 points at the line that called rank_zero_warn."""
    if rank_zero_only.rank == 0:
        warnings.warn(message, category, stacklevel=stacklevel, **kwargs)


def rank_zero_deprecation(message: str | Warning, stacklevel: int = 2, **kwargs: Any) -> None:
    """A DeprecationWarning on rank zero."""
    rank_zero_warn(message, DeprecationWarning, stacklevel=stacklevel + 1, **kwargs)


def _message(args: tuple[Any, ...]) -> str:
    if not args:
        return ""
    return str(args[0]) % args[1:] if len(args) > 1 else str(args[0])


_LIGHTNING_UTILITIES_RANK_ZERO = "lightning_utilities.core.rank_zero"


def share_rank_with_lightning_utilities() -> None:
    """Set `rank_zero_only.rank` of lightning_utilities to this process's rank, as importing Lightning does:
    now if it is imported, else as soon as it is (a finder that waits for that one module)."""
    module = sys.modules.get(_LIGHTNING_UTILITIES_RANK_ZERO)
    if module is not None:
        _set_rank(module)
    elif not any(isinstance(finder, _SetRankOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SetRankOnImport())


def _set_rank(module: ModuleType) -> None:
    function = getattr(module, "rank_zero_only", None)
    if function is not None and getattr(function, "rank", None) is None:
        function.rank = global_rank()


class _SetRankOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when lightning_utilities.core.rank_zero is imported it wraps the loader the other
    finders give, so that the rank is set right after the module runs."""

    def __init__(self) -> None:
        self._searching = False

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> Any:
        if name != _LIGHTNING_UTILITIES_RANK_ZERO or self._searching:
            return None
        self._searching = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._searching = False
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenSetRank(spec.loader)
        return spec


class _ThenSetRank(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _set_rank(module)

    def __getattr__(self, name: str) -> Any:  # get_source and friends, for tracebacks
        return getattr(self._loader, name)


__all__ = ["rank_zero_debug", "rank_zero_deprecation", "rank_zero_info", "rank_zero_only", "rank_zero_warn"]
