"""A logger that keeps its rows in memory, for tests of what reaches the loggers."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from trellis.plugin import Logger


class RecordingLogger(Logger):
    """Every log_metrics call as a (step, row) pair."""

    name = "recording"

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.rows.append((step, dict(metrics)))

    def rows_with(self, key: str) -> list[tuple[int, dict[str, float]]]:
        return [(step, row) for step, row in self.rows if key in row]


@pytest.fixture
def recording_logger() -> RecordingLogger:
    return RecordingLogger()


@pytest.fixture
def make_recording_logger() -> type[RecordingLogger]:
    return RecordingLogger
