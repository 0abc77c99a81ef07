"""A free TCP port on loopback, for a process group, a test server or a benchmark to bind. Standard library only."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS had free a moment ago (another process may still take it before the caller binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
