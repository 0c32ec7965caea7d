"""Helpers shared by the benchmarks (run them from the repository root: ``python benchmarks/x.py``)."""

from __future__ import annotations

import socket
import time
from typing import Any


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    """Wait until something listens on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def queue_capability() -> Any:
    """A proton link option marking the terminus as a queue (anycast), as qpid-jms does."""
    from proton import symbol
    from proton.reactor import LinkOption

    class Capability(LinkOption):
        def apply(self, link: Any) -> None:
            terminus = link.target if link.is_sender else link.source
            terminus.capabilities.put_object(symbol("queue"))

    return Capability()
