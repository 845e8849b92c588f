"""Run, print and warn on global rank zero only, under Lightning's names.

The rank is read from the launcher's environment (RANK, SLURM_PROCID, ...) when a call is made, so a
decorated function behaves right in processes that DDP starts or spawns; assigning `rank_zero_only.rank`
overrides it, as in Lightning.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
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
    """Print a message on rank zero (arguments as for `logging.info`: a message and %-format values)."""
    if rank_zero_only.rank == 0:
        print(_message(args), flush=True)


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


__all__ = ["rank_zero_debug", "rank_zero_deprecation", "rank_zero_info", "rank_zero_only", "rank_zero_warn"]
