"""The checkpoint IO role: where and how a checkpoint dictionary is stored."""

from __future__ import annotations

import os
from typing import Any, ClassVar

PathLike = str | os.PathLike[str]


class CheckpointIO:
    """Save, load, remove and test for checkpoints.

    Writers must be atomic (a reader never sees a partial checkpoint) and loading must be safe by
    default: `weights_only=True` refuses anything that would run code.
    """

    name: ClassVar[str] = ""
    #: True when every process saves and loads its own part (a collective call): strategies then call it on
    #: every rank and hand it sharded state dicts; False when global rank zero writes the full state alone.
    sharded: ClassVar[bool] = False

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike) -> None:
        raise NotImplementedError

    def load_checkpoint(self, path: PathLike, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
        raise NotImplementedError

    def remove_checkpoint(self, path: PathLike) -> None:
        raise NotImplementedError

    def exists(self, path: PathLike) -> bool:
        raise NotImplementedError

    def teardown(self) -> None:
        """Finish pending writes (asynchronous writers) and release resources."""
