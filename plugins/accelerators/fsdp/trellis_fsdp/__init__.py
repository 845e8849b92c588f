"""Fully sharded data parallel: parameters, gradients and optimizer state split over the ranks."""

TRELLIS_PLUGIN_API = 1
