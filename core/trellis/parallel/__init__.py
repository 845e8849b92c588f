"""What strategies over several processes share: the base class, launchers, the local environment,
rendezvous ports, joining the process group, collectives, and reporting a failed rank once.

Plugins reach these names through `trellis.plugin`; `import trellis` imports nothing from here.
"""

from trellis.parallel.environment import LocalEnvironment
from trellis.parallel.ports import free_port
from trellis.parallel.process_group import join_process_group
from trellis.parallel.script_launcher import ScriptLauncher
from trellis.parallel.spawn_launcher import RankFailedError, SpawnLauncher
from trellis.parallel.strategy import DEFAULT_TIMEOUT, ParallelStrategy

__all__ = [
    "DEFAULT_TIMEOUT",
    "LocalEnvironment",
    "ParallelStrategy",
    "RankFailedError",
    "ScriptLauncher",
    "SpawnLauncher",
    "free_port",
    "join_process_group",
]
