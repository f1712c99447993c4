"""Free TCP ports on 127.0.0.1 for servers a test starts (uvicorn, ``php -S``, SMTP) or for a port nothing
answers on: bind to port 0, read the port the kernel chose, release it."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that was free a moment ago; the caller binds it again (a small race no test has lost)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
