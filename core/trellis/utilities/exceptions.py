"""Lightning's exception names, as Trellis errors (so `except MisconfigurationException` keeps working)."""

from __future__ import annotations

from trellis.errors import ConfigurationError

#: Raised by Lightning for a configuration that cannot work; Trellis raises ConfigurationError for the same.
MisconfigurationException = ConfigurationError

__all__ = ["MisconfigurationException"]
