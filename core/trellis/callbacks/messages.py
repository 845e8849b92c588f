"""Where the built-in callbacks' messages go: the "trellis.callbacks" logger when the program set up logging
(pytest's caplog does, as do most applications), else stdout, on global rank zero, as Lightning's go to its
logger at INFO."""

from __future__ import annotations

import logging

from trellis.utils.rank_zero import global_rank

log = logging.getLogger("trellis.callbacks")
log.setLevel(logging.INFO)


def info(message: str, rank_zero_only: bool = True) -> None:
    """An informational message from a callback (verbose=True, summaries); from every process when not
    `rank_zero_only`."""
    if rank_zero_only and global_rank() != 0:
        return
    if logging.getLogger().hasHandlers():
        log.info(message)
    else:
        print(message, flush=True)
