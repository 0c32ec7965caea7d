"""The post office: addresses, queue bindings, routing, auto-create/delete, duplicate detection.

Routing a message (Artemis semantics):

* ``address::queue`` (FQQN) goes to that one queue;
* otherwise the queues bound to the address, plus those bound to wildcard addresses matching it;
  with routing type ANYCAST one anycast queue gets it (round-robin among queues whose filter
  accepts it), with MULTICAST every multicast queue whose filter accepts it, with no routing type
  both (one anycast queue and every multicast queue);
* an address that does not exist is created when ``auto-create-addresses`` allows (with the
  message's routing type, else ``default-address-routing-type``); an anycast send to an address
  with no anycast queue creates a queue of the address's name when ``auto-create-queues`` allows;
* a message whose ``_AMQ_DUPL_ID`` was seen recently on its address is dropped.

The post office is also the queues' :class:`QueueContext`: acknowledgements, failed deliveries,
dead-lettering and expiry come back here and go on to the StorageManager.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pybroker.config.model import AddressSettings, RoutingType, WildcardConfig
from pybroker.errors import AddressFullError, PyBrokerError
from pybroker.storage.manager import AddressRecord, QueueRecord, StorageManager

from .addressing import FQQN_SEPARATOR, AddressInfo, WildcardIndex, is_wildcard, split_fqqn
from .limits import BLOCK, DROP, FAIL, PAGE, Limits
from .message import (
    ACTUAL_EXPIRY,
    DUPLICATE_ID_PROPERTY,
    ORIGINAL_ADDRESS,
    ORIGINAL_MESSAGE_ID,
    ORIGINAL_QUEUE,
    ORIGINAL_ROUTING_TYPE,
    IdGenerator,
    Message,
    MessageReference,
)
from .queue import Filter, Queue

log = logging.getLogger("pybroker.broker")


class AddressNotFoundError(PyBrokerError):
    """The address (or queue) does not exist and may not be auto-created."""


class QueueExistsError(PyBrokerError):
    """A queue of that name exists already (with other attributes)."""


class RouteResult:
    """What became of one sent message: how many queues took it, whether it was a duplicate,
    and ``durable``, an awaitable resolved once the message and its refs are on disk (None if
    nothing was stored)."""

    __slots__ = ("dropped", "duplicate", "durable", "paged", "queues")

    def __init__(
        self,
        queues: int = 0,
        duplicate: bool = False,
        durable: Awaitable[None] | None = None,
        *,
        dropped: bool = False,
        paged: bool = False,
    ) -> None:
        self.queues = queues
        self.duplicate = duplicate
        self.durable = durable
        self.dropped = dropped
        self.paged = paged

    def __repr__(self) -> str:
        return f"RouteResult(queues={self.queues}, duplicate={self.duplicate}, durable={self.durable!r})"


# shared result for the common non-durable single-queue case (results are read-only)
_ROUTED_TO_ONE = RouteResult(queues=1)

#: :meth:`PostOffice.admit`: the message goes to its queues in memory / to the page files /
#: nowhere (dropped: the address is full with policy DROP)
ADMIT_MEMORY = "memory"
ADMIT_PAGE = "page"
ADMIT_DROP = "drop"


class DuplicateIDCache:
    """The last ``size`` duplicate ids seen on one address (Artemis's circular id cache)."""

    __slots__ = ("_ids", "_order", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: dict[bytes, int] = {}
        self._order: deque[bytes] = deque()

    def __contains__(self, duplicate_id: bytes) -> bool:
        return duplicate_id in self._ids

    def add(self, duplicate_id: bytes, record_id: int) -> int | None:
        """Remember an id; returns the record id of the id pushed out, if any."""
        self._ids[duplicate_id] = record_id
        self._order.append(duplicate_id)
        if len(self._order) > self.size:
            old = self._order.popleft()
            return self._ids.pop(old, None)
        return None


def _duplicate_key(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8")


class PostOffice:
    """Bindings and routing for one broker."""

    def __init__(
        self,
        *,
        storage: StorageManager,
        address_settings: Callable[[str], AddressSettings],
        wildcard: WildcardConfig,
        ids: IdGenerator | None = None,
        clock: Callable[[], float] = time.time,
        id_cache_size: int = 20000,
        persist_id_cache: bool = True,
        filter_factory: Callable[[str], Filter] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.storage = storage
        self.limits = limits if limits is not None else Limits(settings=address_settings)
        # set by the server when paging is available: address -> paging of that address
        self.paging: object | None = None
        # the large-message store (set by the server)
        self.large_messages: Any = None
        self._settings = address_settings
        self.wildcard_config = wildcard
        self.ids = ids
        self._clock = clock
        self.addresses: dict[str, AddressInfo] = {}
        self.queues: dict[str, Queue] = {}
        self.bindings: dict[str, list[Queue]] = {}
        self.wildcards = WildcardIndex(wildcard)
        self._anycast_cursor: dict[str, int] = {}
        self._duplicate_caches: dict[str, DuplicateIDCache] = {}
        self._id_cache_size = id_cache_size
        self._persist_id_cache = persist_id_cache
        self._filter_factory = filter_factory
        self._pending_deletes: dict[str, asyncio.TimerHandle] = {}
        self.routed_count = 0
        self.unrouted_count = 0
        self.duplicate_count = 0

    # -- QueueContext --------------------------------------------------------------------------
    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def address_settings(self, address: str) -> AddressSettings:
        return self._settings(address)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Any:
        return asyncio.get_running_loop().call_later(delay_s, callback)

    def next_id(self) -> int:
        if self.ids is not None:
            return self.ids.next()
        return self.storage.next_id()

    def acknowledged(self, queue: Queue, ref: MessageReference, *, write: bool = True) -> None:
        """The queue is done with ``ref``; ``write=False`` when a transaction already wrote the
        storage records for it."""
        message = ref.message
        message.ref_count -= 1
        if ref.page is not None:
            # read back from a page file: the page store and its cursor record keep it (a
            # transaction wrote that record already when ``write`` is false)
            paging = self.paging
            if paging is not None:
                paging.acknowledged(queue, ref, write=write)  # type: ignore[attr-defined]
        elif queue.cursor is not None and self.paging is not None:
            self.paging.queue_has_room(queue)  # type: ignore[attr-defined]
        if message.stored and not write:
            if message.ref_count <= 0:
                message.stored = False
        elif message.stored:
            if message.ref_count <= 0:
                # the delete record implies every ack: one record for the common single-queue case
                message.stored = False
                self.storage.delete_message(message.message_id)
            elif queue.durable:
                self.storage.store_ack(message.message_id, queue.queue_id)
        if message.ref_count <= 0:
            usage = message.usage
            if usage is not None:
                message.usage = None
                self.limits.remove(usage, message.size)
            if message.large is not None:
                self._release_large(message)
        if not queue.consumers and queue.auto_created:
            self._maybe_auto_delete(queue)

    def delivery_failed(self, queue: Queue, ref: MessageReference) -> None:
        message = ref.message
        if message.stored and queue.durable:
            self.storage.update_delivery_count(message.message_id, queue.queue_id, ref.delivery_count)

    def move_to_dead_letter(self, queue: Queue, ref: MessageReference, reason: str) -> None:
        settings = queue.settings
        target = settings.dead_letter_address
        if not target:
            log.warning(
                "AMQ222149: Message %s has reached maximum delivery attempts (%s), no "
                "dead-letter-address configured for %s: dropping it",
                ref.message.message_id,
                reason,
                queue.address,
            )
            self.acknowledged(queue, ref)
            return
        if settings.auto_create_dead_letter_resources:
            self._ensure_resource_queue(
                target,
                (settings.dead_letter_queue_prefix or "")
                + queue.address
                + (settings.dead_letter_queue_suffix or ""),
                queue.address,
            )
        self._move(queue, ref, target, {})
        log.info(
            "AMQ222150: Sending message %s from queue %s to dead-letter-address %s (%s)",
            ref.message.message_id,
            queue.name,
            target,
            reason,
        )

    def expire(self, queue: Queue, ref: MessageReference) -> None:
        settings = queue.settings
        target = settings.expiry_address
        if not target:
            log.debug("message %s expired on %s, no expiry-address: dropping", ref.message.message_id, queue.name)
            self.acknowledged(queue, ref)
            return
        if settings.auto_create_expiry_resources:
            self._ensure_resource_queue(
                target,
                (settings.expiry_queue_prefix or "") + queue.address + (settings.expiry_queue_suffix or ""),
                queue.address,
            )
        self._move(queue, ref, target, {ACTUAL_EXPIRY: ref.message.expiration})

    def _move(self, queue: Queue, ref: MessageReference, target: str, extra: dict[str, Any]) -> None:
        original = ref.message
        annotations = {
            ORIGINAL_ADDRESS: original.address,
            ORIGINAL_QUEUE: queue.name,
            ORIGINAL_MESSAGE_ID: original.message_id,
            ORIGINAL_ROUTING_TYPE: queue.routing_type.value,
            **extra,
        }
        copy = original.copy(address=target, annotations=annotations)
        copy.expiration = 0
        copy.routing_type = None
        copy.message_id = self.next_id()
        try:
            result = self.route(copy, None, auto_create=True)
            if result.queues == 0:
                log.warning(
                    "AMQ222196: Could not move message %s to %s: the address has no queues; "
                    "the message is dropped",
                    original.message_id,
                    target,
                )
        finally:
            self.acknowledged(queue, ref)

    def _ensure_resource_queue(self, address: str, queue_name: str, original_address: str) -> None:
        if queue_name in self.queues:
            return
        self.create_queue(
            queue_name,
            address,
            RoutingType.MULTICAST,
            filter_expression=f"{ORIGINAL_ADDRESS} = '{original_address}'",
            auto_created=True,
        )

    def queue_consumers_changed(self, queue: Queue) -> None:
        if queue.cursor is not None and self.paging is not None:
            self.paging.queue_has_room(queue)  # type: ignore[attr-defined]
        if not queue.consumers and queue.auto_created:
            self._maybe_auto_delete(queue)

    # -- addresses -----------------------------------------------------------------------------
    def create_address(
        self,
        name: str,
        routing_types: set[RoutingType] | frozenset[RoutingType],
        *,
        auto_created: bool = False,
        persist: bool = True,
        internal: bool = False,
    ) -> AddressInfo:
        """Create ``name`` or add routing types to it."""
        info = self.addresses.get(name)
        if info is not None:
            missing = set(routing_types) - info.routing_types
            if missing:
                info.routing_types |= missing
                if info.binding_id and persist:
                    self._persist_address(info)
            return info
        info = AddressInfo(name=name, routing_types=set(routing_types), auto_created=auto_created, internal=internal)
        self.addresses[name] = info
        self.bindings.setdefault(name, [])
        if is_wildcard(name, self.wildcard_config):
            self.wildcards.add(name)
        if persist and self.storage.persistent:
            info.binding_id = self.next_id()
            self._persist_address(info)
        return info

    def _persist_address(self, info: AddressInfo) -> None:
        self.storage.store_address(
            AddressRecord(
                binding_id=info.binding_id,
                name=info.name,
                routing_types=tuple(sorted(rt.value for rt in info.routing_types)),
                auto_created=info.auto_created,
            )
        )

    def delete_address(self, name: str, *, force: bool = False) -> None:
        info = self.addresses.get(name)
        if info is None:
            raise AddressNotFoundError(f"address {name!r} does not exist")
        queues = list(self.bindings.get(name, ()))
        if queues and not force:
            raise PyBrokerError(f"address {name!r} has {len(queues)} queue(s) bound")
        for queue in queues:
            self.delete_queue(queue.name, force=True)
        del self.addresses[name]
        self.bindings.pop(name, None)
        self.wildcards.remove(name)
        self._duplicate_caches.pop(name, None)
        if info.binding_id and self.storage.persistent:
            self.storage.delete_address(info.binding_id)

    def address_query(
        self, name: str, routing_type: RoutingType | None, *, auto_create: bool
    ) -> AddressInfo | None:
        """The address, auto-created (with ``routing_type`` or the default) if settings allow."""
        info = self.addresses.get(name)
        settings = self._settings(name)
        if info is None:
            if not (auto_create and settings.auto_create_addresses):
                return None
            rt = routing_type or settings.default_address_routing_type or RoutingType.MULTICAST
            info = self.create_address(name, {rt}, auto_created=True)
        elif routing_type is not None and routing_type not in info.routing_types:
            if auto_create and settings.auto_create_addresses:
                self.create_address(name, {routing_type})
        if (
            auto_create
            and (routing_type or _single(info.routing_types)) is RoutingType.ANYCAST
            and settings.auto_create_queues
            and not any(q.routing_type is RoutingType.ANYCAST for q in self.bindings.get(name, ()))
        ):
            self.create_queue(name, name, RoutingType.ANYCAST, auto_created=True)
        return info

    # -- queues --------------------------------------------------------------------------------
    def create_queue(
        self,
        name: str,
        address: str,
        routing_type: RoutingType,
        *,
        filter_expression: str | None = None,
        durable: bool = True,
        temporary: bool = False,
        auto_created: bool = False,
        configuration_managed: bool = False,
        max_consumers: int | None = None,
        exclusive: bool | None = None,
        purge_on_no_consumers: bool | None = None,
        user: str | None = None,
        queue_id: int = 0,
        persist: bool = True,
        exist_ok: bool = False,
        enabled: bool = True,
    ) -> Queue:
        """Create a queue (and its address if needed). Temporary queues are never stored."""
        existing = self.queues.get(name)
        if existing is not None:
            if exist_ok:
                return existing
            raise QueueExistsError(f"queue {name!r} already exists on address {existing.address!r}")
        settings = self._settings(address)
        if address not in self.addresses:
            self.create_address(address, {routing_type}, auto_created=auto_created, persist=persist)
        else:
            self.create_address(address, {routing_type}, persist=persist)
        queue = Queue(
            name=name,
            address=address,
            routing_type=routing_type,
            context=self,
            queue_id=queue_id or self.next_id(),
            durable=durable and not temporary,
            filter=self._make_filter(filter_expression),
            max_consumers=settings.default_max_consumers if max_consumers is None else max_consumers,
            exclusive=bool(settings.default_exclusive_queue) if exclusive is None else exclusive,
            purge_on_no_consumers=(
                bool(settings.default_purge_on_no_consumers)
                if purge_on_no_consumers is None
                else purge_on_no_consumers
            ),
            temporary=temporary,
            auto_created=auto_created,
            configuration_managed=configuration_managed,
            enabled=enabled,
            user=user,
        )
        self.queues[name] = queue
        self.bindings.setdefault(address, []).append(queue)
        if persist and queue.durable and self.storage.persistent:
            self.storage.store_queue(self.queue_record(queue, filter_expression))
        self._cancel_pending_delete(address)
        return queue

    def queue_record(self, queue: Queue, filter_expression: str | None = None) -> QueueRecord:
        return QueueRecord(
            queue_id=queue.queue_id,
            name=queue.name,
            address=queue.address,
            routing_type=queue.routing_type.value,
            filter=filter_expression if filter_expression is not None else getattr(queue.filter, "expression", None),
            durable=queue.durable,
            max_consumers=queue.max_consumers,
            exclusive=queue.exclusive,
            purge_on_no_consumers=queue.purge_on_no_consumers,
            auto_created=queue.auto_created,
            configuration_managed=queue.configuration_managed,
            user=queue.user,
        )

    def _make_filter(self, expression: str | None) -> Filter | None:
        if not expression or not expression.strip():
            return None
        if self._filter_factory is None:
            return None
        return self._filter_factory(expression)

    def delete_queue(self, name: str, *, force: bool = False) -> None:
        queue = self.queues.get(name)
        if queue is None:
            raise AddressNotFoundError(f"queue {name!r} does not exist")
        if queue.consumers and not force:
            raise PyBrokerError(f"queue {name!r} has {len(queue.consumers)} consumer(s)")
        for consumer in list(queue.consumers):
            consumer.closed = True
            queue.consumers.remove(consumer)
            for ref in consumer.in_flight.values():
                ref.consumer = None
            consumer.in_flight.clear()
        # every message in it is acknowledged away
        queue.purge()
        queue.deleted = True
        if queue.cursor is not None and self.paging is not None:
            self.paging.queue_deleted(queue)  # type: ignore[attr-defined]
        del self.queues[name]
        bound = self.bindings.get(queue.address)
        if bound is not None and queue in bound:
            bound.remove(queue)
        if queue.durable and self.storage.persistent:
            self.storage.delete_queue(queue.queue_id)
        info = self.addresses.get(queue.address)
        if info is not None and info.auto_created and not self.bindings.get(queue.address):
            self._maybe_auto_delete_address(info)

    def find_queue(self, name: str) -> Queue | None:
        return self.queues.get(name)

    def matching_queue(self, address: str, routing_type: RoutingType | None) -> Queue | None:
        """The queue a plain consumer on ``address`` uses: one named like the address, else the
        first queue of that routing type."""
        bound = self.bindings.get(address, ())
        for queue in bound:
            if queue.name == address and (routing_type is None or queue.routing_type is routing_type):
                return queue
        for queue in bound:
            if routing_type is None or queue.routing_type is routing_type:
                return queue
        return None

    # -- auto delete ---------------------------------------------------------------------------
    def _maybe_auto_delete(self, queue: Queue) -> None:
        if queue.deleted or queue.consumers or not queue.auto_created or queue.temporary:
            return
        settings = self._settings(queue.address)
        if not settings.auto_delete_queues or not queue.used:
            return
        threshold = settings.auto_delete_queues_message_count
        if threshold is not None and threshold >= 0 and queue.message_count > threshold:
            return
        delay = settings.auto_delete_queues_delay or 0

        def check() -> None:
            if queue.deleted or queue.consumers:
                return
            if threshold is not None and threshold >= 0 and queue.message_count > threshold:
                return
            log.debug("auto-deleting queue %s", queue.name)
            self.delete_queue(queue.name, force=True)

        if delay > 0:
            self.call_later(delay / 1000.0, check)
        else:
            check()

    def _maybe_auto_delete_address(self, info: AddressInfo) -> None:
        settings = self._settings(info.name)
        if not settings.auto_delete_addresses:
            return
        delay = settings.auto_delete_addresses_delay or 0

        def check() -> None:
            self._pending_deletes.pop(info.name, None)
            current = self.addresses.get(info.name)
            if current is info and not self.bindings.get(info.name):
                log.debug("auto-deleting address %s", info.name)
                self.delete_address(info.name)

        if delay > 0:
            self._cancel_pending_delete(info.name)
            self._pending_deletes[info.name] = self.call_later(delay / 1000.0, check)
        else:
            check()

    def _cancel_pending_delete(self, address: str) -> None:
        handle = self._pending_deletes.pop(address, None)
        if handle is not None:
            handle.cancel()

    # -- routing -------------------------------------------------------------------------------
    def route(
        self,
        message: Message,
        routing_type: RoutingType | None,
        *,
        auto_create: bool = True,
    ) -> RouteResult:
        """Route ``message`` to its queues; stores it first when it is durable."""
        address, targets = self.resolve(message, routing_type, auto_create=auto_create)
        # duplicate detection only for a message that carries an id (most do not)
        props = message._properties
        if (
            DUPLICATE_ID_PROPERTY in props if props is not None else message.codec.duplicate_id(message) is not None
        ) and self._is_duplicate(message, address):
            return RouteResult(duplicate=True)
        if not targets:
            self.unrouted_count += 1
            return RouteResult()
        limits = self.limits
        usage = limits.usage(address)
        paging = self.paging
        if (
            (paging is not None and paging.is_paging(address))  # type: ignore[attr-defined]
            or limits.disk_full
            or usage.limited
            or limits.global_over
        ):
            # admit() would not return ADMIT_MEMORY at once: let it decide
            admission = self.admit(message, address, usage)
            if admission != ADMIT_MEMORY:
                if admission == ADMIT_DROP:
                    return RouteResult(dropped=True)
                # in page mode every new message goes to the pages, full or not: order is kept
                if message.message_id == 0:
                    message.message_id = self.next_id()
                return self.paging.page(message, targets, address)  # type: ignore[attr-defined]
        if message.message_id == 0:
            ids = self.ids
            message.message_id = ids.next() if ids is not None else self.storage.next_id()
        stored = False
        storage = self.storage
        if message.durable and storage.persistent:
            durable_queues = [queue.queue_id for queue in targets if queue.durable]
            if durable_queues:
                # one record: the message and every durable queue it went to
                storage.store_message(message.message_id, message.encode(), durable_queues)
                stored = message.stored = True
        self.deliver_routed(message, targets, usage)
        if not stored and len(targets) == 1:
            return _ROUTED_TO_ONE
        return RouteResult(queues=len(targets), durable=storage.durable() if stored else None)

    def admit(self, message: Message, address: str, usage: Any) -> str:
        """Where a message for ``address`` goes now: :data:`ADMIT_MEMORY`, :data:`ADMIT_PAGE`
        (the address pages, or is full with policy PAGE) or :data:`ADMIT_DROP` (full, DROP;
        counted). Raises :class:`AddressFullError` when it is full with policy FAIL (or the disk
        is full and the policy is not BLOCK). BLOCK admits: the protocols hold producers back."""
        paging = self.paging
        if paging is not None and paging.is_paging(address):  # type: ignore[attr-defined]
            return ADMIT_PAGE
        limits = self.limits
        if limits.disk_full or limits.global_over or usage.limited:
            if limits.full(usage):
                policy = usage.policy
                if policy == FAIL or (limits.disk_full and policy != BLOCK):
                    limits.refused += 1
                    raise AddressFullError(
                        f"AMQ229102: Address \"{address}\" is full. Message encode size = {message.size}B"
                    )
                if policy == DROP:
                    limits.dropped += 1
                    if not usage.blocked_logged:
                        usage.blocked_logged = True
                        log.warning("AMQ222039: Messages sent to address %s are being dropped: it is full", address)
                    return ADMIT_DROP
                if policy == PAGE and paging is not None:
                    return ADMIT_PAGE
            elif usage.blocked_logged:
                usage.blocked_logged = False
        return ADMIT_MEMORY

    def resolve(
        self, message: Message, routing_type: RoutingType | None, *, auto_create: bool = True
    ) -> tuple[str, list[Queue]]:
        """The address and the queues ``message`` goes to (auto-creating per settings)."""
        name = message.address
        if FQQN_SEPARATOR not in name:
            address, queue_name = name, None  # split_fqqn(name), without the call
        else:
            address, queue_name = split_fqqn(name)
        if queue_name is not None:
            queue = self.queues.get(queue_name)
            if queue is None or queue.address != address:
                raise AddressNotFoundError(f"queue {message.address!r} does not exist")
            message.address = address
            return address, [queue] if queue.filter is None or queue.filter.matches(message) else []
        targets = self._targets(address, routing_type, message)
        if not targets:
            info = self.addresses.get(address)
            if info is None or (routing_type is RoutingType.ANYCAST and not self._has_anycast(address)):
                if auto_create:
                    info = self.address_query(address, routing_type, auto_create=True)
                if info is None:
                    raise AddressNotFoundError(
                        f"address {address!r} does not exist and auto-create-addresses is false"
                    )
                targets = self._targets(address, routing_type, message)
        return address, targets

    def _is_duplicate(self, message: Message, address: str) -> bool:
        """Duplicate detection on ``_AMQ_DUPL_ID``; remembers the id when it is new."""
        props = message._properties
        duplicate = (
            props.get(DUPLICATE_ID_PROPERTY) if props is not None else message.codec.duplicate_id(message)
        )
        if duplicate is None:
            return False
        dup_key = _duplicate_key(duplicate)
        cache = self._duplicate_caches.get(address)
        if cache is None:
            size = self._settings(address).id_cache_size or self._id_cache_size
            cache = self._duplicate_caches[address] = DuplicateIDCache(size)
        if dup_key in cache:
            self.duplicate_count += 1
            log.info(
                "AMQ222059: Duplicate message detected - message will not be routed. "
                "Message information: id=%s address=%s",
                message.message_id,
                address,
            )
            return True
        record_id = 0
        if self._persist_id_cache and self.storage.persistent and message.durable:
            record_id = self.storage.store_duplicate_id(address, dup_key)
        evicted = cache.add(dup_key, record_id)
        if evicted and self.storage.persistent:
            self.storage.delete_duplicate_id(evicted)
        return False

    def deliver_routed(self, message: Message, targets: list[Queue], usage: Any = None) -> None:
        """Put ``message`` (already stored if durable) into its target queues."""
        message.ref_count += len(targets)
        if message.usage is None:
            if usage is None:
                usage = self.limits.usage(message.address)
            message.usage = usage
            self.limits.add(usage, message.size)
        for queue in targets:
            queue.add(MessageReference(message, queue))
        self.routed_count += 1

    # -- flow control ------------------------------------------------------------------------
    def can_send(self, address: str | None) -> bool:
        """False while producers to ``address`` must wait (BLOCK policy over its limit, or the
        disk or global limit reached); protocols withhold credit / stop reading then."""
        limits = self.limits
        if limits.disk_full:
            return False
        if address is None:
            return not limits.global_over
        usage = limits.usage(address)
        if not limits.full(usage):
            return True
        policy = usage.policy
        if policy == PAGE and self.paging is not None:
            return True
        return policy != BLOCK

    def when_free(self, address: str | None, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when producers to ``address`` may send again."""
        limits = self.limits
        if address is None or limits.disk_full or limits.global_over:
            limits.when_free(None, callback)
        else:
            limits.when_free(limits.usage(address), callback)

    def account(self, message: Message) -> None:
        """Count a message restored from storage in its address's memory usage."""
        if message.usage is None:
            usage = self.limits.usage(message.address)
            message.usage = usage
            self.limits.add(usage, message.size)

    def _has_anycast(self, address: str) -> bool:
        return any(q.routing_type is RoutingType.ANYCAST for q in self.bindings.get(address, ()))

    def _targets(self, address: str, routing_type: RoutingType | None, message: Message) -> list[Queue]:
        bound = self.bindings.get(address, [])
        if self.wildcards.patterns:
            matched = self.wildcards.matching(address)
            if matched:
                bound = list(bound)
                for pattern in matched:
                    bound.extend(self.bindings.get(pattern, ()))
        if not bound:
            return []
        if len(bound) == 1:
            queue = bound[0]
            if routing_type is not None and queue.routing_type is not routing_type:
                return []
            if queue.filter is not None and not queue.filter.matches(message):
                return []
            return [queue]
        targets: list[Queue] = []
        anycast: list[Queue] = []
        for queue in bound:
            if queue.filter is not None and not queue.filter.matches(message):
                continue
            if queue.routing_type is RoutingType.MULTICAST:
                if routing_type is not RoutingType.ANYCAST:
                    targets.append(queue)
            elif routing_type is not RoutingType.MULTICAST:
                anycast.append(queue)
        if anycast:
            cursor = self._anycast_cursor.get(address, 0)
            targets.append(anycast[cursor % len(anycast)])
            self._anycast_cursor[address] = cursor + 1
        return targets

    # -- recovery ------------------------------------------------------------------------------
    def restore_duplicate_ids(self, address: str, entries: list[tuple[int, bytes]]) -> None:
        size = self._settings(address).id_cache_size or self._id_cache_size
        cache = self._duplicate_caches.setdefault(address, DuplicateIDCache(size))
        for record_id, dup in entries:
            evicted = cache.add(dup, record_id)
            if evicted and self.storage.persistent:
                self.storage.delete_duplicate_id(evicted)

    def _release_large(self, message: Message) -> None:
        large = message.large
        if large is not None:
            release = getattr(large, "release", None)
            if release is not None:
                release()

    # -- maintenance ---------------------------------------------------------------------------
    def expire_scan(self) -> int:
        total = 0
        for queue in list(self.queues.values()):
            total += queue.expire_scan()
        return total

    def auto_delete_scan(self) -> None:
        for queue in list(self.queues.values()):
            if queue.auto_created and not queue.consumers:
                self._maybe_auto_delete(queue)


def _single(routing_types: set[RoutingType]) -> RoutingType | None:
    if len(routing_types) == 1:
        return next(iter(routing_types))
    return None
