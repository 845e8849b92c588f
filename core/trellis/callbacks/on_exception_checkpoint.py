"""OnExceptionCheckpoint: save a checkpoint when a run fails, to inspect or resume from."""

from __future__ import annotations

import os
from typing import Any

from trellis.callbacks.checkpoint import Checkpoint


class OnExceptionCheckpoint(Checkpoint):
    """Saves `<dirpath>/<filename>.ckpt` when an exception (also KeyboardInterrupt) ends fit, validate, test or
    predict. The file is removed again when a run on this trainer ends, so only a failure leaves one behind
    until the next run."""

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception") -> None:
        if not filename:
            raise ValueError("The filename cannot be empty: pass a name without extension, such as 'on_exception'")
        self.dirpath = dirpath
        self.filename = filename
        self._failed = False

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: Any, *_: Any, **__: Any) -> None:
        trainer.save_checkpoint(self.ckpt_path)
        self._failed = True

    def teardown(self, trainer: Any, *_: Any, **__: Any) -> None:
        """After a run that ended normally (a failed run's teardown keeps the file, as Lightning, which does not
        tear callbacks down after a failure)."""
        if self._failed:
            self._failed = False
        elif trainer.strategy.checkpoint_io.exists(self.ckpt_path):
            trainer.strategy.remove_checkpoint(self.ckpt_path)
