"""Reading a launcher's environment variables with errors that name the missing one."""

from __future__ import annotations

import os

from trellis.errors import ConfigurationError


def all_set(*names: str) -> bool:
    return all(name in os.environ for name in names)


def read_int(name: str, launcher: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ConfigurationError(f"{launcher} did not set {name}: this process was not started by {launcher}")
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name}={value!r} set by {launcher} is not an integer") from None


def port_from_job_id(job_id: str) -> int:
    """A port derived from the job id, so two jobs sharing a node rarely collide (Lightning's rule)."""
    digits = "".join(character for character in job_id if character.isdigit())[-4:] or "0"
    return 15000 + int(digits)


def check_layout(launcher: str, world_size: int, per_node: int | None, num_devices: int, num_nodes: int) -> None:
    """Raise when the Trainer's devices/num_nodes disagree with what the launcher started."""
    if per_node is not None and per_node != num_devices:
        raise ConfigurationError(
            f"{launcher} started {per_node} processes per node but the Trainer has devices={num_devices}: "
            f"pass devices={per_node}, or launch {num_devices} tasks per node"
        )
    if world_size != num_devices * num_nodes:
        raise ConfigurationError(
            f"{launcher} started {world_size} processes in all but the Trainer asks for devices={num_devices} x "
            f"num_nodes={num_nodes} = {num_devices * num_nodes}: make them agree (num_nodes is the node count "
            "of the job)"
        )
