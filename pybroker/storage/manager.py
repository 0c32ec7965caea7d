"""The StorageManager seam: what the broker persists, independent of how.

The broker core calls these methods as things happen (a durable message routed to a durable
queue, an acknowledgement, a queue created at runtime); it never sees a journal record. Before it
tells a client that something is safe (settling a durable transfer), it awaits :meth:`durable`,
which resolves once everything stored before the call is on disk.

Messages are handed over already encoded (``bytes``): the storage layer does not know what a
message is, only its id, its queues and its size.

Two implementations pass one shared test suite: :class:`MemoryStorageManager` (for
``persistence-enabled=false`` and fast tests: nothing is kept) and
:class:`pybroker.storage.journal_storage.JournalStorageManager` (the bindings and message journals).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class QueueRecord:
    """A queue created at runtime (or from configuration) as the bindings journal keeps it."""

    queue_id: int
    name: str
    address: str
    routing_type: str
    filter: str | None = None
    durable: bool = True
    max_consumers: int = -1
    exclusive: bool = False
    purge_on_no_consumers: bool = False
    auto_created: bool = False
    configuration_managed: bool = False
    user: str | None = None
    extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class AddressRecord:
    binding_id: int
    name: str
    routing_types: tuple[str, ...]
    auto_created: bool = False


@dataclass(slots=True)
class RecoveredMessage:
    message_id: int
    data: bytes
    # (queue_id, delivery_count) in the order the refs were stored
    refs: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class RecoveredState:
    """Everything ``load()`` found, in the order it was stored."""

    queues: list[QueueRecord] = field(default_factory=list)
    addresses: list[AddressRecord] = field(default_factory=list)
    messages: list[RecoveredMessage] = field(default_factory=list)
    # address -> duplicate ids in arrival order
    duplicate_ids: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    # records whose content the storage layer keeps for a protocol (MQTT sessions, retained...)
    key_values: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)
    prepared_transactions: list[Any] = field(default_factory=list)
    # ADD_LARGE_MESSAGE_PENDING records: (record id, message id) of bodies being written
    large_pending: list[tuple[int, int]] = field(default_factory=list)
    # ACKNOWLEDGE_CURSOR records: (record id, address, queue id, page, index)
    page_acks: list[tuple[int, str, int, int, int]] = field(default_factory=list)
    # committed PAGE_TRANSACTION records: (record id, address, tx id, first page, last page)
    page_transactions: list[tuple[int, str, int, int, int]] = field(default_factory=list)
    max_id: int = 0


class StorageManager(Protocol):
    """What the broker persists. Every ``store_*`` call returns at once; durability is awaited
    with :meth:`durable` (or through the future a ``sync=True`` call returns)."""

    persistent: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def load(self) -> RecoveredState: ...

    def next_id(self) -> int:
        """A new id for a message, queue, address or record; unique across restarts."""
        ...

    def store_message(self, message_id: int, data: bytes, queue_ids: Sequence[int]) -> None:
        """Store a message routed to ``queue_ids`` (its durable queues), as one record."""
        ...

    def store_ref(self, message_id: int, queue_id: int) -> None:
        """Add a queue to a stored message (a later routing of the same message)."""
        ...

    def store_ack(self, message_id: int, queue_id: int, *, sync: bool = False) -> Awaitable[None] | None: ...

    def delete_message(self, message_id: int) -> None: ...

    def update_delivery_count(self, message_id: int, queue_id: int, count: int) -> None: ...

    def store_queue(self, record: QueueRecord) -> Awaitable[None] | None: ...

    def delete_queue(self, queue_id: int) -> Awaitable[None] | None: ...

    def store_address(self, record: AddressRecord) -> Awaitable[None] | None: ...

    def delete_address(self, binding_id: int) -> Awaitable[None] | None: ...

    def store_duplicate_id(self, address: str, duplicate_id: bytes) -> int: ...

    def delete_duplicate_id(self, record_id: int) -> None: ...

    def store_key_value(self, namespace: str, key: str, value: bytes) -> Awaitable[None] | None: ...

    def delete_key_value(self, namespace: str, key: str) -> Awaitable[None] | None: ...

    def durable(self) -> Awaitable[None] | None:
        """An awaitable resolved once everything stored before this call is on disk; ``None``
        when nothing needs waiting for (non-persistent storage)."""
        ...

    # -- large messages ----------------------------------------------------------------------
    def store_large_pending(self, message_id: int) -> int:
        """A large body file is being written (deleted at start if nothing else refers to it)."""
        ...

    def delete_large_pending(self, record_id: int) -> None: ...

    # -- paging ------------------------------------------------------------------------------
    def store_page_ack(self, address: str, queue_id: int, page: int, index: int) -> int:
        """A queue acknowledged the record at (page, index) of ``address``; returns its id."""
        ...

    def delete_page_ack(self, record_id: int) -> None: ...

    def store_page_ack_tx(self, tx_id: int, address: str, queue_id: int, page: int, index: int) -> int:
        """:meth:`store_page_ack` inside transaction ``tx_id``."""
        ...

    def store_page_transaction_tx(self, tx_id: int, address: str, first_page: int, last_page: int) -> int:
        """In ``tx_id``: its sends to ``address`` were paged (carrying ``tx_id``) in pages
        ``first_page``..``last_page``; they become visible when ``tx_id`` commits."""
        ...

    def delete_page_transaction(self, record_id: int) -> None: ...

    # -- transactions (records become visible at commit, all or none) ------------------------
    def begin_tx(self) -> int: ...

    def store_message_tx(self, tx_id: int, message_id: int, data: bytes, queue_ids: Sequence[int]) -> None: ...

    def store_ack_tx(self, tx_id: int, message_id: int, queue_id: int) -> None: ...

    def delete_message_tx(self, tx_id: int, message_id: int) -> None: ...

    def commit_tx(self, tx_id: int) -> Awaitable[None] | None: ...

    def rollback_tx(self, tx_id: int) -> None: ...


class MemoryStorageManager:
    """Keeps nothing: the broker runs with ``persistence-enabled=false`` (or in unit tests)."""

    persistent = False

    def __init__(self) -> None:
        self._next_id = 1

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def load(self) -> RecoveredState:
        return RecoveredState(max_id=self._next_id - 1)

    def next_id(self) -> int:
        value = self._next_id
        self._next_id = value + 1
        return value

    def store_message(self, message_id: int, data: bytes, queue_ids: Sequence[int]) -> None:
        return None

    def store_ref(self, message_id: int, queue_id: int) -> None:
        return None

    def store_ack(self, message_id: int, queue_id: int, *, sync: bool = False) -> None:
        return None

    def delete_message(self, message_id: int) -> None:
        return None

    def update_delivery_count(self, message_id: int, queue_id: int, count: int) -> None:
        return None

    def store_queue(self, record: QueueRecord) -> None:
        return None

    def delete_queue(self, queue_id: int) -> None:
        return None

    def store_address(self, record: AddressRecord) -> None:
        return None

    def delete_address(self, binding_id: int) -> None:
        return None

    def store_duplicate_id(self, address: str, duplicate_id: bytes) -> int:
        return self.next_id()

    def delete_duplicate_id(self, record_id: int) -> None:
        return None

    def store_key_value(self, namespace: str, key: str, value: bytes) -> None:
        return None

    def delete_key_value(self, namespace: str, key: str) -> None:
        return None

    def durable(self) -> None:
        return None

    def store_page_ack(self, address: str, queue_id: int, page: int, index: int) -> int:
        return 0

    def store_large_pending(self, message_id: int) -> int:
        return 0

    def delete_large_pending(self, record_id: int) -> None:
        return None

    def delete_page_ack(self, record_id: int) -> None:
        return None

    def store_page_ack_tx(self, tx_id: int, address: str, queue_id: int, page: int, index: int) -> int:
        return 0

    def store_page_transaction_tx(self, tx_id: int, address: str, first_page: int, last_page: int) -> int:
        return 0

    def delete_page_transaction(self, record_id: int) -> None:
        return None

    def begin_tx(self) -> int:
        return self.next_id()

    def store_message_tx(self, tx_id: int, message_id: int, data: bytes, queue_ids: Sequence[int]) -> None:
        return None

    def store_ack_tx(self, tx_id: int, message_id: int, queue_id: int) -> None:
        return None

    def delete_message_tx(self, tx_id: int, message_id: int) -> None:
        return None

    def commit_tx(self, tx_id: int) -> None:
        return None

    def rollback_tx(self, tx_id: int) -> None:
        return None


def completed() -> asyncio.Future[None]:
    """A future that is already done (for callers that always want an awaitable)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
