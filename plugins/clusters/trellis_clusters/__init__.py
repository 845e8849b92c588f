"""Cluster environments: ranks, world size and rendezvous address from the launcher's variables.

Each module is one environment and imports nothing heavy, so detecting them under "auto" is cheap.
"""

TRELLIS_PLUGIN_API = 1
