"""Rendezvous ports: pick a free one, or say clearly that the chosen one is taken."""

from __future__ import annotations

import socket

from trellis.errors import ConfigurationError


def free_port(address: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the OS picks it)."""
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
            probe.bind((address if address not in ("localhost",) else "127.0.0.1", port))
        except OSError:
            raise ConfigurationError(port_in_use_message(address, port)) from None
