"""pytest plugin (entry point ``pytest11``): a running pybroker per test.

Fixtures:

``pybroker_broker``
    an embedded, non-persistent broker on 127.0.0.1 and a free port (``broker.port``,
    ``broker.url``), started for the test and stopped after it. Needs pytest-asyncio (the
    fixture is async).
``pybroker_persistent_broker``
    the same with persistence in the test's ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the plugin is inert without pytest-asyncio
    pytest_asyncio = None


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def pybroker_broker() -> AsyncIterator[object]:
        """A running in-memory broker on 127.0.0.1 (free port)."""
        from pybroker.testing import embedded_broker

        async with embedded_broker() as broker:
            yield broker

    @pytest_asyncio.fixture
    async def pybroker_persistent_broker(tmp_path: Path) -> AsyncIterator[object]:
        """A running persistent broker whose data lives in the test's tmp_path."""
        from pybroker.testing import embedded_broker

        async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
            yield broker


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pybroker: tests that use a pybroker broker")
