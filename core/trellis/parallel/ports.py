"""Rendezvous ports: pick a free one, or say clearly that the chosen one is taken."""

from __future__ import annotations

import os
import socket

from trellis.errors import ConfigurationError


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now at `address` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def port_in_use_message(address: str, port: int) -> str:
    return (
        f"MASTER_PORT={port} on {address} is already in use (another run or a stale process listens there): set "
        "MASTER_PORT to a free port, or unset it and Trellis picks a free one"
    )


def require_free(address: str, port: int) -> None:
    """Raise ConfigurationError when the rendezvous port cannot be listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1" if address == "localhost" else address, port))
        except OSError:
            raise ConfigurationError(port_in_use_message(address, port)) from None


def rendezvous_port(address: str, check_free: bool) -> int:
    """MASTER_PORT when exported (checked free where this process will listen on it), else a free port."""
    if "MASTER_PORT" not in os.environ:
        return free_port(address)
    port = int(os.environ["MASTER_PORT"])
    if check_free:
        require_free(address, port)
    return port
