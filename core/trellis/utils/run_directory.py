"""Versioned run directories (<save_dir>/<name>/version_N) shared by file-writing loggers."""

from __future__ import annotations

import os


def next_version(root: str) -> int:
    """One more than the highest version_N under `root` (0 when there is none)."""
    if not os.path.isdir(root):
        return 0
    numbers = [int(entry[8:]) for entry in os.listdir(root) if entry.startswith("version_") and entry[8:].isdigit()]
    return max(numbers) + 1 if numbers else 0


class VersionedRunDirectory:
    """`version` and `log_dir` from `save_dir`, `run_name` and `_version` (None: the next free number)."""

    save_dir: str
    run_name: str
    _version: int | str | None

    @property
    def version(self) -> int | str:
        if self._version is None:
            self._version = next_version(os.path.join(self.save_dir, self.run_name))
        return self._version

    @property
    def log_dir(self) -> str:
        version = self.version
        folder = version if isinstance(version, str) else f"version_{version}"
        return os.path.join(self.save_dir, self.run_name, folder)
