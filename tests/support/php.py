"""PHP's built-in web server (``php -S``) as the far end of a test: what a real PHP page sees of our bytes."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.ports import free_port


@contextmanager
def php_server(php: str, root: Path, *serve: str, ini: Sequence[str] = ()) -> Iterator[int]:
    """``php [ini] -S 127.0.0.1:PORT [serve]`` run in ``root`` on a free port (``serve`` is a router script
    or ``-t DOCROOT``); yields the port once it accepts connections, stops the server afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [php, *ini, "-S", f"127.0.0.1:{port}", *serve],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("php -S did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
