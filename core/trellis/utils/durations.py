"""Durations as users write them: seconds, a timedelta, a dict of timedelta fields, or "DD:HH:MM:SS"."""

from __future__ import annotations

import datetime
from typing import Any

from trellis.errors import ConfigurationError


def duration_seconds(duration: float | str | datetime.timedelta | dict[str, float] | None) -> float | None:
    """The duration in seconds; None stays None (no limit)."""
    if duration is None:
        return None
    if isinstance(duration, datetime.timedelta):
        return duration.total_seconds()
    if isinstance(duration, dict):
        return datetime.timedelta(**duration).total_seconds()
    if isinstance(duration, str):
        return _parse_clock(duration)
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        return float(duration)
    raise ConfigurationError(_usage(duration))


def _parse_clock(text: str) -> float:
    parts = text.split(":")
    if len(parts) != 4 or not all(part.strip().isdigit() for part in parts):
        raise ConfigurationError(_usage(text))
    days, hours, minutes, seconds = (int(part) for part in parts)
    return datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()


def _usage(value: Any) -> str:
    return (f"duration {value!r} is not understood: pass seconds (90), a datetime.timedelta, a dict such as "
            "{'hours': 1, 'minutes': 30}, or a 'DD:HH:MM:SS' string such as '00:01:30:00'")
