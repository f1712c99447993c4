"""Free TCP ports on 127.0.0.1 for servers a test starts (uvicorn, ``php -S``, SMTP) or for a port nothing
answers on: bind to port 0 and read the port the kernel chose."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that was free a moment ago; the caller binds it again (a small race no test has lost)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_socket() -> socket.socket:
    """A bound listening socket for uvicorn. The protocol is named: asyncio turns Nagle off only on sockets
    whose ``proto`` is TCP, and with it on, a response written in two parts waited 40 ms for the client's
    delayed ACK (what uvicorn binds itself, from an address, always says TCP)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock
