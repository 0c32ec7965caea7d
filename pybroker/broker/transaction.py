"""Transactions: sends and acknowledgements that take effect together at commit, or not at all.

Theory of operation
-------------------
While a transaction is open, sends are only checked (security, address) and kept; the
references a consumer acknowledges in it stay in flight on that consumer. ``commit()``:

1. resolves every kept send to its queues (auto-creating as a plain send would) and drops
   duplicates (``_AMQ_DUPL_ID``);
2. takes every enlisted acknowledgement out of its queue in memory at once (so a consumer that
   goes away meanwhile cannot get it redelivered) and writes the storage records of both --
   messages with their queues, acks, deletes -- as one journal transaction, then its COMMIT;
3. once the COMMIT is durable, puts the new messages into their queues and resolves.

``rollback()`` drops the kept sends and returns every enlisted reference to its queue counted as
a failed delivery (a rolled-back JMS session sees them redelivered). A transaction whose
connection goes away is rolled back.

States (an illegal call raises :class:`TransactionError` naming state and call)::

    ACTIVE --commit--> COMMITTING --durable--> COMMITTED
    ACTIVE --rollback--> ROLLED_BACK
    COMMITTING --storage failure--> FAILED
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from pybroker.config.model import RoutingType
from pybroker.errors import PyBrokerError

from .message import Message, MessageReference

if TYPE_CHECKING:
    from .postoffice import PostOffice
    from .queue import Queue, ServerConsumer

log = logging.getLogger("pybroker.broker")


class TransactionState(enum.Enum):
    ACTIVE = "active"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


class TransactionError(PyBrokerError):
    """A transaction operation in the wrong state, or a commit that could not be applied."""


_ALLOWED = {
    ("send", TransactionState.ACTIVE),
    ("ack", TransactionState.ACTIVE),
    ("commit", TransactionState.ACTIVE),
    ("rollback", TransactionState.ACTIVE),
}


class Transaction:
    """One transaction of a session."""

    def __init__(self, post_office: PostOffice, tx_id: int) -> None:
        self.post_office = post_office
        self.tx_id = tx_id
        self.state = TransactionState.ACTIVE
        self._sends: list[tuple[Message, RoutingType | None]] = []
        self._acks: list[tuple[ServerConsumer, MessageReference]] = []

    def _check(self, call: str) -> None:
        if (call, self.state) not in _ALLOWED:
            raise TransactionError(f"transaction {self.tx_id}: {call} is not allowed in state {self.state.value}")

    @property
    def sends(self) -> int:
        return len(self._sends)

    @property
    def acks(self) -> int:
        return len(self._acks)

    def send(self, message: Message, routing_type: RoutingType | None) -> None:
        self._check("send")
        self._sends.append((message, routing_type))

    def acknowledge(self, consumer: ServerConsumer, ref: MessageReference) -> None:
        """Enlist ``ref`` (in flight on ``consumer``): it is acknowledged at commit."""
        self._check("ack")
        self._acks.append((consumer, ref))

    async def commit(self) -> None:
        """Apply everything (see the module docstring); raises and rolls back on failure."""
        self._check("commit")
        self.state = TransactionState.COMMITTING
        post_office = self.post_office
        storage = post_office.storage
        persistent = storage.persistent
        records = 0
        routed: list[tuple[Message, list[Queue]]] = []
        try:
            for message, routing_type in self._sends:
                address, targets = post_office.resolve(message, routing_type)
                if post_office._is_duplicate(message, address) or not targets:
                    continue
                if message.message_id == 0:
                    message.message_id = post_office.next_id()
                if persistent and message.durable:
                    queue_ids = [queue.queue_id for queue in targets if queue.durable]
                    if queue_ids:
                        storage.store_message_tx(self.tx_id, message.message_id, message.encode(), queue_ids)
                        message.stored = True
                        records += 1
                routed.append((message, targets))
        except BaseException:
            self._abandon(records)
            self._return_acks()
            self.state = TransactionState.FAILED
            raise
        # acknowledgements: out of their queues now, records in the transaction
        taken: list[tuple[Queue, MessageReference]] = []
        acks_per_message: Counter[int] = Counter()
        for consumer, ref in self._acks:
            queue = ref.queue
            if ref.consumer is not consumer or consumer.in_flight.get(id(ref)) is not ref:
                continue  # returned to its queue meanwhile (consumer closed): not acked
            taken.append((queue, ref))
            acks_per_message[id(ref.message)] += 1
        done_messages: set[int] = set()
        for queue, ref in taken:
            message = ref.message
            if not (persistent and message.stored):
                continue
            key = id(message)
            if message.ref_count - acks_per_message[key] <= 0:
                if key not in done_messages:
                    storage.delete_message_tx(self.tx_id, message.message_id)
                    done_messages.add(key)
                    records += 1
            elif queue.durable:
                storage.store_ack_tx(self.tx_id, message.message_id, queue.queue_id)
                records += 1
        for queue, ref in taken:
            queue.acknowledge(ref, write=False)
        durable = storage.commit_tx(self.tx_id) if persistent and records else None
        if durable is not None:
            try:
                await durable
            except BaseException:
                self.state = TransactionState.FAILED
                raise
        for message, targets in routed:
            post_office.deliver_routed(message, targets)
        self.state = TransactionState.COMMITTED

    def rollback(self) -> None:
        """Drop the sends; enlisted references go back to their queues as failed deliveries."""
        if self.state is not TransactionState.ACTIVE:
            return
        self.state = TransactionState.ROLLED_BACK
        self._sends.clear()
        self._return_acks()

    def _return_acks(self) -> None:
        acks, self._acks = self._acks, []
        per_queue: dict[int, tuple[Queue, list[MessageReference]]] = {}
        for consumer, ref in acks:
            if ref.consumer is consumer and not consumer.closed:
                per_queue.setdefault(id(ref.queue), (ref.queue, []))[1].append(ref)
        for queue, refs in per_queue.values():
            queue.cancel_all(refs, failed=True)

    def _abandon(self, records: int) -> None:
        if records and self.post_office.storage.persistent:
            try:
                self.post_office.storage.rollback_tx(self.tx_id)
            except Exception as error:  # noqa: BLE001 - the journal may be failed already
                log.debug("rollback of transaction %s failed: %s", self.tx_id, error)

    def describe(self) -> dict[str, Any]:
        return {"id": self.tx_id, "state": self.state.value, "sends": self.sends, "acks": self.acks}
