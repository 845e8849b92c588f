"""self.log and what it feeds: callback_metrics, logged_metrics, progress_bar_metrics and the loggers."""

from __future__ import annotations

from trellis.metrics.store import MetricStore

__all__ = ["MetricStore"]
