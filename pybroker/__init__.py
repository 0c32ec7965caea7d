"""pybroker: an asyncio message broker with Apache ActiveMQ Artemis shared-store HA.

Public API: :class:`Broker` (an embeddable node), :func:`load_config` / :func:`default_config`
(broker.xml to a Configuration) and the error tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pybroker.errors import (
    AddressFullError,
    ConfigError,
    HAError,
    JournalCorruptError,
    JournalError,
    LockLostError,
    LockTimeoutError,
    ProtocolError,
    PyBrokerError,
    SecurityError,
    StorageError,
)

if TYPE_CHECKING:
    from pybroker.config.parse import default_config, load_config
    from pybroker.embedded import Broker

__all__ = [
    "AddressFullError",
    "Broker",
    "ConfigError",
    "HAError",
    "JournalCorruptError",
    "JournalError",
    "LockLostError",
    "LockTimeoutError",
    "ProtocolError",
    "PyBrokerError",
    "SecurityError",
    "StorageError",
    "default_config",
    "load_config",
]


def __getattr__(name: str) -> Any:
    # imported lazily: `import pybroker` stays cheap for the CLI and for tools
    if name == "Broker":
        from pybroker.embedded import Broker

        return Broker
    if name in ("load_config", "default_config"):
        from pybroker.config import parse

        return getattr(parse, name)
    raise AttributeError(f"module 'pybroker' has no attribute {name!r}")
