"""Queues: message references, consumers, delivery, redelivery, dead-lettering and expiry.

Theory of operation
-------------------
A queue holds :class:`MessageReference` objects in ten priority buckets (0-9, higher first,
FIFO within a priority). Consumers register a *deliverer* (the protocol side); the queue pushes
references to them with ``deliverer.deliver(ref) -> bool``: ``False`` means "no credit now" and
the queue moves on to the next consumer. When a consumer gets credit again the protocol calls
:meth:`ServerConsumer.prompt_delivery`, which runs :meth:`Queue.deliver` again. Consumers are
served round-robin; a consumer's filter is checked before offering it a message, and a message
that no consumer's filter accepts stays where it is while later messages are looked at.

A delivered reference is *in flight* on its consumer until the protocol settles it:

* ``acknowledge`` removes it for good (storage ack; the message is deleted once no queue holds it);
* ``cancel(failed=False)`` (AMQP released) puts it back at the head of its bucket unchanged;
* ``cancel(failed=True)`` (AMQP modified delivery-failed, a consumer that went away with it
  unsettled) counts a failed delivery; after ``max-delivery-attempts`` the message moves to the
  ``dead-letter-address`` (or is dropped when there is none), otherwise it returns to the queue,
  after ``redelivery-delay`` when one is set;
* ``reject`` (AMQP rejected) sends it to the dead-letter address at once.

Expired messages are moved to the ``expiry-address`` (or dropped) when they would be delivered and
by the post office's periodic scan.

The queue never touches the disk itself: durable work goes through the ``QueueContext`` (the post
office), which talks to the StorageManager.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from pybroker.config.model import RoutingType
from pybroker.errors import PyBrokerError

from .message import Message, MessageReference

if TYPE_CHECKING:
    from pybroker.config.model import AddressSettings

log = logging.getLogger("pybroker.broker")

PRIORITY_LEVELS = 10


class Deliverer(Protocol):
    """The protocol side of a consumer."""

    def deliver(self, ref: MessageReference) -> bool:
        """Take ``ref`` for delivery; ``False`` when there is no credit (the queue keeps it)."""
        ...


class Filter(Protocol):
    expression: str

    def matches(self, message: Message) -> bool: ...


class QueueContext(Protocol):
    """What a queue needs from the post office (storage, moves, clock)."""

    def now_ms(self) -> int: ...

    def acknowledged(self, queue: Queue, ref: MessageReference, *, write: bool = True) -> None: ...

    def delivery_failed(self, queue: Queue, ref: MessageReference) -> None: ...

    def move_to_dead_letter(self, queue: Queue, ref: MessageReference, reason: str) -> None: ...

    def expire(self, queue: Queue, ref: MessageReference) -> None: ...

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Any: ...

    def queue_consumers_changed(self, queue: Queue) -> None: ...

    def address_settings(self, address: str) -> AddressSettings: ...


class QueueError(PyBrokerError):
    """A consumer or queue operation that the queue's configuration refuses."""


class ServerConsumer:
    """A consumer on one queue. Holds the references delivered to it and not yet settled."""

    __slots__ = (
        "_browse_position",
        "_browse_snapshot",
        "browse_only",
        "closed",
        "consumer_id",
        "delivered_count",
        "deliverer",
        "filter",
        "in_flight",
        "priority",
        "queue",
        "session",
    )

    _ids = itertools.count(1)

    def __init__(
        self,
        queue: Queue,
        deliverer: Deliverer,
        *,
        filter: Filter | None = None,
        browse_only: bool = False,
        priority: int = 0,
        session: Any = None,
    ) -> None:
        self.consumer_id = next(self._ids)
        self.queue = queue
        self.deliverer = deliverer
        self.filter = filter
        self.browse_only = browse_only
        self.priority = priority
        self.session = session
        # insertion-ordered: cancelling on close returns refs in delivery order
        self.in_flight: dict[int, MessageReference] = {}
        self.closed = False
        self.delivered_count = 0
        self._browse_position = 0
        self._browse_snapshot: list[MessageReference] | None = None

    def prompt_delivery(self) -> None:
        """The protocol has credit again: let the queue deliver."""
        if not self.closed:
            if self.browse_only:
                self.queue.browse(self)
            else:
                self.queue.deliver()

    def acknowledge(self, ref: MessageReference) -> None:
        self.queue.acknowledge(ref)

    def cancel(self, ref: MessageReference, *, failed: bool) -> None:
        self.queue.cancel(ref, failed=failed)

    def reject(self, ref: MessageReference) -> None:
        self.queue.reject(ref)

    def close(self, *, failed: bool = True) -> None:
        """Remove the consumer; its unsettled messages go back to the queue (counted as a
        failed delivery, as a JMS client would see them redelivered)."""
        if self.closed:
            return
        self.closed = True
        self.queue.remove_consumer(self, failed=failed)

    def __repr__(self) -> str:
        return f"ServerConsumer(id={self.consumer_id}, queue={self.queue.name!r})"


class Queue:
    """A queue bound to one address with one routing type."""

    def __init__(
        self,
        *,
        name: str,
        address: str,
        routing_type: RoutingType,
        context: QueueContext,
        queue_id: int = 0,
        durable: bool = True,
        filter: Filter | None = None,
        max_consumers: int = -1,
        exclusive: bool = False,
        purge_on_no_consumers: bool = False,
        temporary: bool = False,
        auto_created: bool = False,
        configuration_managed: bool = False,
        enabled: bool = True,
        user: str | None = None,
    ) -> None:
        self.queue_id = queue_id
        self.name = name
        self.address = address
        self.routing_type = routing_type
        self.durable = durable
        self.filter = filter
        self.max_consumers = max_consumers
        self.exclusive = exclusive
        self.purge_on_no_consumers = purge_on_no_consumers
        self.temporary = temporary
        self.auto_created = auto_created
        self.configuration_managed = configuration_managed
        self.enabled = enabled
        self.user = user
        self.context = context
        self.buckets: list[deque[MessageReference]] = [deque() for _ in range(PRIORITY_LEVELS)]
        self._queued = 0  # references in the buckets
        self._scheduled = 0  # references waiting on a redelivery/scheduled timer
        self.consumers: list[ServerConsumer] = []
        self._filtered_consumers = 0
        self._next_consumer = 0
        self._delivering = False
        self._deliver_again = False
        self.deleted = False
        # the PageCursor while the queue's address has pages to read (broker/paging.py)
        self.cursor: Any = None
        # messages for this queue in page files, not read back yet (since this broker started)
        self.paged_count = 0
        # "used" once it had a consumer or a message: auto-delete only deletes used queues
        self.used = False
        # statistics
        self.messages_added = 0
        self.messages_acknowledged = 0
        self.messages_expired = 0
        self.messages_killed = 0
        self.delivering_count = 0

    # -- settings ---------------------------------------------------------------------------
    @property
    def settings(self) -> AddressSettings:
        return self.context.address_settings(self.address)

    # -- counts -----------------------------------------------------------------------------
    @property
    def message_count(self) -> int:
        """Messages in the queue, including in-flight, scheduled and paged ones (as Artemis
        counts)."""
        return self._queued + self._scheduled + self.delivering_count + self.paged_count

    @property
    def queued_count(self) -> int:
        return self._queued

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def iter_queued(self) -> Iterator[MessageReference]:
        """Queued (not in-flight) references in delivery order."""
        for bucket in reversed(self.buckets):
            yield from bucket

    # -- adding -----------------------------------------------------------------------------
    def add(self, ref: MessageReference, *, deliver: bool = True, count: bool = True) -> None:
        """Append ``ref`` (already stored if durable) and try to deliver."""
        if count:
            self.messages_added += 1
        self.used = True
        consumers = self.consumers
        if (
            deliver
            and consumers
            and not self._queued
            and not self._delivering
            and not self._filtered_consumers
            and self.enabled
            and not ref.message.expiration
        ):
            # nothing is waiting ahead of it: hand it straight to a consumer (the common case
            # of a queue whose consumers keep up), skipping the buckets
            self._delivering = True
            try:
                taken = self._offer(ref, consumers) is not None
            finally:
                self._delivering = False
            if taken:
                if self._deliver_again:
                    self.deliver()
                return
            # every consumer just refused it (no credit): offering it again at once is
            # pointless unless one of them changed its mind meanwhile (_deliver_again)
            self.buckets[ref.message.priority].append(ref)
            self._queued += 1
            if self._deliver_again:
                self.deliver()
            return
        self.buckets[ref.message.priority].append(ref)
        self._queued += 1
        if deliver and consumers:
            self.deliver()

    def restore(self, ref: MessageReference) -> None:
        """Put back a reference recovered from storage (journal order; no delivery yet)."""
        self.buckets[ref.message.priority].append(ref)
        self._queued += 1
        self.used = True

    def add_head(self, ref: MessageReference) -> None:
        self.buckets[ref.message.priority].appendleft(ref)
        self._queued += 1

    def add_scheduled(self, ref: MessageReference, deliver_at_ms: int) -> None:
        """Hold ``ref`` until ``deliver_at_ms`` (redelivery delay or scheduled delivery)."""
        delay_ms = deliver_at_ms - self.context.now_ms()
        if delay_ms <= 0:
            self.add(ref)
            return
        self._scheduled += 1
        ref.scheduled = deliver_at_ms

        def release() -> None:
            self._scheduled -= 1
            ref.scheduled = 0
            if not self.deleted:
                self.add(ref)

        self.context.call_later(delay_ms / 1000.0, release)

    # -- consumers --------------------------------------------------------------------------
    def add_consumer(
        self,
        deliverer: Deliverer,
        *,
        filter: Filter | None = None,
        browse_only: bool = False,
        priority: int = 0,
        session: Any = None,
    ) -> ServerConsumer:
        if self.deleted:
            raise QueueError(f"queue {self.name!r} has been deleted")
        if not browse_only and self.max_consumers >= 0 and len(self.consumers) >= self.max_consumers:
            raise QueueError(
                f"queue {self.name!r} already has max-consumers={self.max_consumers} consumers"
            )
        consumer = ServerConsumer(
            self, deliverer, filter=filter, browse_only=browse_only, priority=priority, session=session
        )
        self.used = True
        if browse_only:
            return consumer
        self.consumers.append(consumer)
        if filter is not None:
            self._filtered_consumers += 1
        self.context.queue_consumers_changed(self)
        if self._queued:
            self.deliver()
        return consumer

    def remove_consumer(self, consumer: ServerConsumer, *, failed: bool = True) -> None:
        if consumer.browse_only:
            return
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        if consumer.filter is not None:
            self._filtered_consumers -= 1
        # return unsettled messages in their delivery order: push to the head in reverse
        refs = list(consumer.in_flight.values())
        consumer.in_flight.clear()
        for ref in reversed(refs):
            ref.consumer = None
            self.delivering_count -= 1
            self._return(ref, failed=failed)
        if not self.consumers and self.purge_on_no_consumers:
            self.purge()
        self.context.queue_consumers_changed(self)
        if self.consumers and refs:
            self.deliver()

    # -- delivery ---------------------------------------------------------------------------
    def deliver(self) -> None:
        """Offer queued references to consumers until they run out of credit or messages."""
        if self._delivering:
            self._deliver_again = True
            return
        self._delivering = True
        try:
            while True:
                self._deliver_again = False
                if self._filtered_consumers:
                    self._deliver_filtered()
                else:
                    self._deliver_unfiltered()
                if not self._deliver_again:
                    break
        finally:
            self._delivering = False

    def _deliver_unfiltered(self) -> None:
        consumers = self.consumers
        if not consumers or not self._queued or not self.enabled:
            return
        now = self.context.now_ms()
        for bucket in reversed(self.buckets):
            while bucket:
                # take the head first: a deliverer that settles synchronously then sees a
                # consistent queue
                ref = bucket.popleft()
                self._queued -= 1
                message = ref.message
                if message.expiration and now >= message.expiration:
                    self.messages_expired += 1
                    self.context.expire(self, ref)
                    continue
                if self._offer(ref, consumers) is None:
                    bucket.appendleft(ref)
                    self._queued += 1
                    return
                if not consumers:
                    return

    def _offer(self, ref: MessageReference, consumers: list[ServerConsumer]) -> ServerConsumer | None:
        """Give ``ref`` to the next consumer that takes it; None when all are out of credit."""
        count = len(consumers)
        if count == 0:
            return None
        if self.exclusive:
            count = 1
            start = 0
        else:
            start = self._next_consumer % count
        excluded = ref.excluded
        message = ref.message
        for step in range(count):
            index = start + step
            if index >= count:
                index -= count
            consumer = consumers[index]
            if consumer.filter is not None and not consumer.filter.matches(message):
                continue
            if excluded is not None and consumer.consumer_id in excluded:
                continue
            ref.consumer = consumer
            # mark in flight before handing over: a deliverer may settle synchronously
            key = id(ref)
            consumer.in_flight[key] = ref
            self.delivering_count += 1
            if consumer.deliverer.deliver(ref):
                consumer.delivered_count += 1
                if not self.exclusive:
                    self._next_consumer = index + 1
                return consumer
            if consumer.in_flight.pop(key, None) is not None:
                self.delivering_count -= 1
            ref.consumer = None
        return None

    def _deliver_filtered(self) -> None:
        consumers = self.consumers
        if not consumers or not self._queued or not self.enabled:
            return
        now = self.context.now_ms()
        for bucket in reversed(self.buckets):
            index = 0
            while index < len(bucket):
                ref = bucket[index]
                message = ref.message
                if message.expiration and now >= message.expiration:
                    del bucket[index]
                    self._queued -= 1
                    self.messages_expired += 1
                    self.context.expire(self, ref)
                    continue
                if not any(c.filter is None or c.filter.matches(message) for c in consumers):
                    index += 1
                    continue
                del bucket[index]
                self._queued -= 1
                if self._offer(ref, consumers) is None:
                    bucket.insert(index, ref)
                    self._queued += 1
                    if self._all_busy(consumers, message):
                        return
                    index += 1
                    continue
                if not consumers:
                    return

    @staticmethod
    def _all_busy(consumers: list[ServerConsumer], message: Message) -> bool:
        # _offer returned None after trying every matching consumer: they are all out of credit.
        # Unfiltered consumers being busy means nobody can take anything; otherwise later
        # messages may still match a consumer with credit, so keep scanning.
        return all(c.filter is None for c in consumers)

    def browse(self, consumer: ServerConsumer) -> None:
        """Deliver queued messages to a browse-only consumer, in order, without acquiring them.
        The consumer sees the queue as it was when it first asked."""
        snapshot = consumer._browse_snapshot
        if snapshot is None:
            snapshot = consumer._browse_snapshot = list(self.iter_queued())
        position = consumer._browse_position
        while position < len(snapshot):
            ref = snapshot[position]
            if consumer.filter is not None and not consumer.filter.matches(ref.message):
                position += 1
                continue
            browse_ref = MessageReference(ref.message, self, ref.delivery_count)
            if not consumer.deliverer.deliver(browse_ref):
                break
            position += 1
        consumer._browse_position = position

    # -- settlement -------------------------------------------------------------------------
    def _take_in_flight(self, ref: MessageReference) -> bool:
        consumer = ref.consumer
        if consumer is None:
            return False
        if consumer.in_flight.pop(id(ref), None) is None:
            return False
        ref.consumer = None
        self.delivering_count -= 1
        return True

    def acknowledge(self, ref: MessageReference, *, write: bool = True) -> bool:
        """The consumer is done with ``ref``: remove it for good. Returns False when it was not
        in flight any more (settled twice, or returned by a consumer close)."""
        if ref.queue is not self:
            raise QueueError(f"reference {ref!r} does not belong to queue {self.name!r}")
        # _take_in_flight(ref), inlined: this runs once per message
        consumer = ref.consumer
        if consumer is None or consumer.in_flight.pop(id(ref), None) is None:
            return False
        ref.consumer = None
        self.delivering_count -= 1
        self.messages_acknowledged += 1
        self.context.acknowledged(self, ref, write=write)
        return True

    def cancel(self, ref: MessageReference, *, failed: bool) -> None:
        """Return an in-flight reference to the queue (released / modified)."""
        if not self._take_in_flight(ref):
            return
        self._return(ref, failed=failed)
        if self.consumers:
            self.deliver()

    def cancel_all(self, refs: list[MessageReference], *, failed: bool) -> None:
        """Return several in-flight references at once, keeping their order at the head of
        the queue, then deliver (a transaction rollback)."""
        for ref in reversed(refs):
            if self._take_in_flight(ref):
                self._return(ref, failed=failed)
        if self.consumers:
            self.deliver()

    def exclude_consumer(self, ref: MessageReference, consumer: ServerConsumer) -> None:
        """Never offer ``ref`` to ``consumer`` again (AMQP modified undeliverable-here)."""
        if ref.excluded is None:
            ref.excluded = set()
        ref.excluded.add(consumer.consumer_id)

    def reject(self, ref: MessageReference) -> None:
        """The consumer refuses the message as invalid: dead-letter it at once."""
        if not self._take_in_flight(ref):
            return
        self.messages_killed += 1
        self.context.move_to_dead_letter(self, ref, "rejected")

    def _return(self, ref: MessageReference, *, failed: bool) -> None:
        if self.deleted:
            return
        if failed:
            ref.delivery_count += 1
            settings = self.settings
            max_attempts = settings.max_delivery_attempts
            if max_attempts is not None and max_attempts >= 0 and ref.delivery_count >= max_attempts:
                self.messages_killed += 1
                self.context.move_to_dead_letter(
                    self, ref, f"delivery count {ref.delivery_count} reached max-delivery-attempts"
                )
                return
            self.context.delivery_failed(self, ref)
            delay = _redelivery_delay_ms(settings, ref.delivery_count)
            if delay > 0:
                self.add_scheduled(ref, self.context.now_ms() + delay)
                return
        self.add_head(ref)

    # -- maintenance ------------------------------------------------------------------------
    def expire_scan(self) -> int:
        """Move expired queued messages away; returns how many."""
        now = self.context.now_ms()
        expired = 0
        for bucket in self.buckets:
            if not bucket:
                continue
            keep: deque[MessageReference] = deque()
            for ref in bucket:
                if ref.message.expiration and now >= ref.message.expiration:
                    expired += 1
                    self.context.expire(self, ref)
                else:
                    keep.append(ref)
            if expired:
                bucket.clear()
                bucket.extend(keep)
        self._queued -= expired
        self.messages_expired += expired
        return expired

    def purge(self) -> int:
        """Acknowledge every queued (not in-flight) message; returns how many."""
        removed = 0
        for bucket in self.buckets:
            while bucket:
                ref = bucket.popleft()
                self._queued -= 1
                removed += 1
                self.messages_acknowledged += 1
                self.context.acknowledged(self, ref)
        return removed

    def remove_queued(self, predicate: Callable[[MessageReference], bool]) -> list[MessageReference]:
        """Take queued references matching ``predicate`` out of the queue (for moves)."""
        taken: list[MessageReference] = []
        for bucket in self.buckets:
            if not bucket:
                continue
            keep = deque(ref for ref in bucket if not predicate(ref))
            if len(keep) != len(bucket):
                taken.extend(ref for ref in bucket if predicate(ref))
                bucket.clear()
                bucket.extend(keep)
        self._queued -= len(taken)
        return taken

    def __repr__(self) -> str:
        return (
            f"Queue(name={self.name!r}, address={self.address!r}, "
            f"routing={self.routing_type.value}, messages={self.message_count})"
        )


def _redelivery_delay_ms(settings: AddressSettings, delivery_count: int) -> int:
    delay = settings.redelivery_delay or 0
    if delay <= 0:
        return 0
    multiplier = settings.redelivery_delay_multiplier or 1.0
    value = delay * (multiplier ** max(0, delivery_count - 1))
    maximum = settings.max_redelivery_delay
    if maximum is None or maximum < 0:
        maximum = delay * 10
    return int(min(value, maximum))
