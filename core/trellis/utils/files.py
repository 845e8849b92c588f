"""Durable file operations shared by checkpoint writers."""

from __future__ import annotations

import os


def fsync_directory(directory: str) -> None:
    """Make a rename (or a new entry) in `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
