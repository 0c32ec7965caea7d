"""Transactions: sends and acknowledgements that take effect together at commit, or not at all.

Theory of operation
-------------------
While a transaction is open, sends are only checked (security, address) and kept; the
references a consumer acknowledges in it stay in flight on that consumer. ``commit()``:

1. resolves every kept send to its queues (auto-creating as a plain send would), drops
   duplicates (``_AMQ_DUPL_ID``) and applies the address-full policy as a plain send would
   (:meth:`PostOffice.admit`; the memory of the sends kept in memory counts at once, so a large
   transaction starts paging part-way): FAIL fails the commit, DROP drops the send;
2. sends to a paging address are written to its page files with the transaction's id (cursors
   wait at such a record while the transaction is being committed, and skip it for good when it
   never commits); once they are on disk, a PAGE_TRANSACTION record per address (its first and
   last page) joins the journal transaction: the COMMIT is what makes them visible, also after
   a restart;
3. takes every enlisted acknowledgement out of its queue in memory at once (a consumer that
   went away meanwhile had its references returned: those are not acknowledged) and writes the
   storage records of both -- messages with their queues, acks (cursor records for references
   read back from pages), deletes -- as one journal transaction, then its COMMIT;
4. once the COMMIT is durable, lets cursors read the paged sends, puts the other new messages
   into their queues and resolves.

``rollback()`` drops the kept sends and returns every enlisted reference to its queue counted as
a failed delivery (a rolled-back JMS session sees them redelivered). A transaction whose
connection goes away is rolled back.

States (an illegal call raises :class:`TransactionError` naming state and call)::

    ACTIVE --commit--> COMMITTING --durable--> COMMITTED
    ACTIVE --rollback--> ROLLED_BACK
    COMMITTING --storage failure--> FAILED
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from pybroker.config.model import RoutingType
from pybroker.errors import PyBrokerError

from .message import Message, MessageReference
from .postoffice import ADMIT_DROP, ADMIT_PAGE

if TYPE_CHECKING:
    from .postoffice import PostOffice
    from .queue import Queue, ServerConsumer

log = logging.getLogger("pybroker.broker")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Consume the outcome of a page write nobody awaits any more (no 'never retrieved' noise)."""
    if not future.cancelled():
        future.exception()


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
        paging = post_office.paging
        records = 0
        routed: list[tuple[Message, list[Queue]]] = []
        paged: dict[str, list[tuple[Message, list[Queue], asyncio.Future[Any]]]] = {}
        limits = post_office.limits
        try:
            for message, routing_type in self._sends:
                address, targets = post_office.resolve(message, routing_type)
                if post_office._is_duplicate(message, address) or not targets:
                    continue
                if message.message_id == 0:
                    message.message_id = post_office.next_id()
                usage = limits.usage(address)
                admission = post_office.admit(message, address, usage)
                if admission == ADMIT_DROP:
                    continue
                if admission == ADMIT_PAGE:
                    future = paging.page_tx(message, targets, address, self.tx_id)  # type: ignore[union-attr]
                    if future is not None:
                        paged.setdefault(address, []).append((message, targets, future))
                    continue
                if persistent and message.durable:
                    queue_ids = [queue.queue_id for queue in targets if queue.durable]
                    if queue_ids:
                        storage.store_message_tx(self.tx_id, message.message_id, message.encode(), queue_ids)
                        message.stored = True
                        records += 1
                # counted now, so that the rest of a large transaction pages once it is full
                message.usage = usage
                limits.add(usage, message.size)
                routed.append((message, targets))
            page_transactions: dict[str, tuple[int, int, int, list[list[Queue]]]] = {}
            for address, sends in paged.items():
                # the paged records are on disk before the COMMIT that makes them visible
                positions = [await future for _, _, future in sends]
                first_page = min(position.page for position in positions)
                last_page = max(position.page for position in positions)
                record_id = storage.store_page_transaction_tx(self.tx_id, address, first_page, last_page)
                records += 1
                page_transactions[address] = (record_id, first_page, last_page, [targets for _, targets, _ in sends])
        except BaseException:
            self._abandon(records)
            self._failed(routed, paged)
            self._return_acks()
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
        pins: list[Any] = []
        for queue, ref in taken:
            message = ref.message
            if ref.page is not None:
                # read back from a page: its cursor record goes into the transaction (and its
                # page stays on disk until the COMMIT is)
                pin = paging.store_ack_tx(self.tx_id, queue, ref) if persistent and paging is not None else None
                if pin is not None:
                    pins.append(pin)
                    records += 1
                continue
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
        try:
            durable = storage.commit_tx(self.tx_id) if persistent and records else None
            if durable is not None:
                await durable
        except BaseException:
            self._failed(routed, paged)
            raise
        if pins:
            paging.tx_acks_committed(pins)  # type: ignore[union-attr]
        if paged:
            paging.tx_done(self.tx_id, page_transactions)  # type: ignore[union-attr]
        for message, targets in routed:
            post_office.deliver_routed(message, targets)
        self.state = TransactionState.COMMITTED

    def _failed(
        self,
        routed: list[tuple[Message, list[Queue]]],
        paged: dict[str, list[tuple[Message, list[Queue], asyncio.Future[Any]]]],
    ) -> None:
        """The commit failed: give back the memory counted for its sends; its paged records
        stay invisible for good (and their large bodies go)."""
        self.state = TransactionState.FAILED
        limits = self.post_office.limits
        for message, _targets in routed:
            usage = message.usage
            if usage is not None:
                message.usage = None
                limits.remove(usage, message.size)
        if paged:
            self.post_office.paging.tx_done(self.tx_id, {})  # type: ignore[union-attr]
            for sends in paged.values():
                for message, _targets, future in sends:
                    future.add_done_callback(_retrieve)
                    self.post_office._release_large(message)

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
