"""Brokers for users' tests: embedded brokers, subprocess brokers and HA pairs.

* :func:`embedded_broker` -- an async context manager: a broker on 127.0.0.1 and a free port,
  in memory unless ``persistence=True`` (then in ``data_dir``).
* the pytest plugin (:mod:`pybroker.testing.plugin`, loaded through the ``pytest11`` entry point)
  gives the ``pybroker_broker`` fixture: a running broker per test.
* :class:`HAPair` (``pybroker.testing.ha``) -- a primary and a backup on one temporary shared
  directory: kill or stop the primary, wait until the backup is active.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from pybroker.embedded import Broker


@contextlib.asynccontextmanager
async def embedded_broker(
    *,
    persistence: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    port: int = 0,
) -> AsyncIterator[Broker]:
    """A running broker on ``127.0.0.1:port`` (0 = free port); stopped on exit."""
    instance = Path(data_dir) if data_dir is not None else None
    if persistence and instance is None:
        raise ValueError("persistence=True needs a data_dir")
    broker = Broker.embedded(port=port, persistence=persistence, instance_dir=instance)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


__all__ = ["Broker", "embedded_broker"]
