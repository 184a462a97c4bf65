"""Is anything listening at `host:port`? One TCP probe, shared by the settings check, the
executor's head watch and the last-word helper."""
from __future__ import annotations

import socket


def connect_error(address: str, timeout: float) -> str | None:
    """None when something accepts a TCP connection at `[ray://]host:port`, else why not."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as err:
        return getattr(err, "strerror", None) or str(err)


def answers(address: str, timeout: float) -> bool:
    return connect_error(address, timeout) is None
