"""AMQP 1.0 connections: proton's engine events <-> ServerSession operations.

Theory of operation
-------------------
Bytes from the socket go into the :class:`~.engine.ProtonEngine`; after each push the handler
drains the collector and acts on each event; then it writes the engine's output. Endpoints:

* a remote *session* opens a :class:`ServerSession` (security principal from SASL);
* a remote *receiver* (the client consumes) becomes a :class:`SenderLink`: a consumer on the queue
  its source resolves to (Artemis's rules: capabilities ``queue``/``topic``, FQQN, dynamic
  temporary queues, durable subscriptions named ``<container-id>.<link-name>``). It is the
  queue's deliverer: ``deliver()`` sends while the link has credit and the socket is writable;
  dispositions come back as DELIVERY events and settle the reference (accepted -> ack,
  released -> cancel, modified -> cancel counting a failure when ``delivery-failed``,
  rejected -> dead-letter);
* a remote *sender* (the client produces) becomes a :class:`ReceiverLink`: it grants
  ``amqpCredits`` credit and tops it up below ``amqpLowCredits``; each complete transfer is
  routed through the session and settled *accepted* once durable (storage ``durable()``), or
  *rejected* with ``amqp:not-found`` / ``amqp:unauthorized-access`` /
  ``amqp:resource-limit-exceeded``.

The hot path (DELIVERY, LINK_FLOW, sends) uses raw cproton calls; endpoint opening uses the proton
wrapper objects. Every remote close is answered with a local close. Callbacks that run later
(durable settlement) check that the connection and link are still open: proton frees endpoint
memory once both sides closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import struct
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from cproton import (
    PN_ACCEPTED,
    PN_CONNECTION_REMOTE_CLOSE,
    PN_CONNECTION_REMOTE_OPEN,
    PN_DELIVERY,
    PN_LINK_FLOW,
    PN_LINK_REMOTE_CLOSE,
    PN_LINK_REMOTE_DETACH,
    PN_LINK_REMOTE_OPEN,
    PN_MODIFIED,
    PN_REJECTED,
    PN_RELEASED,
    PN_SESSION_REMOTE_CLOSE,
    PN_SESSION_REMOTE_OPEN,
    PN_TRANSPORT_CLOSED,
    PN_TRANSPORT_ERROR,
    pn_collector_peek,
    pn_collector_pop,
    pn_condition_set_description,
    pn_condition_set_name,
    pn_delivery_abort,
    pn_delivery_aborted,
    pn_delivery_link,
    pn_delivery_local,
    pn_delivery_partial,
    pn_delivery_pending,
    pn_delivery_readable,
    pn_delivery_remote,
    pn_delivery_remote_state,
    pn_delivery_settle,
    pn_delivery_settled,
    pn_delivery_update,
    pn_delivery_updated,
    pn_disposition_condition,
    pn_disposition_is_failed,
    pn_disposition_is_undeliverable,
    pn_event_connection,
    pn_event_delivery,
    pn_event_link,
    pn_event_session,
    pn_event_type,
    pn_link_advance,
    pn_link_credit,
    pn_link_drained,
    pn_link_flow,
    pn_link_get_drain,
    pn_link_is_sender,
    pn_link_session,
    pn_session_outgoing_bytes,
    pn_session_set_incoming_capacity,
    pn_transport_condition,
)
from cproton_ffi import ffi, lib
from proton import (
    Condition,
    Connection,
    Data,
    Delivery,
    Described,
    Link,
    Session,
    Terminus,
    symbol,
    ulong,
)

from pybroker.broker.message import LARGE_EXTRA, LargeBody, MessageReference
from pybroker.broker.postoffice import AddressNotFoundError
from pybroker.broker.queue import QueueError, ServerConsumer
from pybroker.broker.server import BrokerServer, NotActiveError
from pybroker.broker.session import ServerSession
from pybroker.config.model import RoutingType
from pybroker.errors import AddressFullError, ProtocolError, PyBrokerError, SecurityError
from pybroker.version import VERSION

from .codec import AMQPDecodeError, head_length, parse_message
from .engine import ProtonEngine
from .message import PROTOCOL as AMQP_PROTOCOL
from .message import amqp_message, amqp_to_core, core_to_amqp
from .sasl import SaslServer

log = logging.getLogger("pybroker.amqp")

_unpack = ffi.unpack
PN_ABORTED = -11  # pn_link_recv on an aborted delivery (proton/error.h)

# Delivery tags (a link's 4-byte big-endian counter) are written into this one C buffer and
# passed as a prebuilt pn_bytes_t: pn_delivery() copies the tag, so the buffer is reused.
_TAG_CHARS = ffi.new("char[4]")
_TAG_STRUCT = ffi.new("pn_bytes_t *", (4, _TAG_CHARS))
_TAG = _TAG_STRUCT[0]
_TAG_BUFFER = ffi.buffer(_TAG_CHARS)
_pack_tag = struct.Struct(">I").pack_into

QUEUE_CAPABILITY = "queue"
TOPIC_CAPABILITY = "topic"
TEMP_QUEUE_CAPABILITY = "temporary-queue"
TEMP_TOPIC_CAPABILITY = "temporary-topic"
SHARED_CAPABILITY = "shared"
GLOBAL_CAPABILITY = "global"
ANONYMOUS_RELAY = "ANONYMOUS-RELAY"
DELAYED_DELIVERY = "DELAYED_DELIVERY"
SHARED_SUBS = "SHARED-SUBS"
JMS_SELECTOR_FILTER_IDS = (symbol("apache.org:selector-filter:string"), 0x0000468C00000004)
NO_LOCAL_FILTER_IDS = (symbol("apache.org:no-local-filter:list"), 0x0000468C00000003)
CONNECTION_ID_PROPERTY = "__AMQ_CID"

PRODUCT = "pybroker"




def _symbols(data: Data | None) -> set[str]:
    """Symbols of a capabilities field (a single symbol or an array of them)."""
    if data is None:
        return set()
    data.rewind()
    found: set[str] = set()
    while data.next():
        value = data.get_object()
        if value is None:
            continue
        if isinstance(value, str):
            found.add(str(value))
        else:
            try:
                found.update(str(item) for item in value)
            except TypeError:
                pass
    data.rewind()
    return found


def _filters(data: Data | None) -> dict[Any, Any]:
    if data is None:
        return {}
    data.rewind()
    if not data.next():
        return {}
    try:
        value = data.get_object()
    except Exception:  # noqa: BLE001 - unparsable filter map: treat as none
        return {}
    finally:
        data.rewind()
    return value if isinstance(value, dict) else {}


def _find_filter(filters: dict[Any, Any], ids: tuple[Any, ...]) -> tuple[Any, Any] | None:
    for key, value in filters.items():
        descriptor = getattr(value, "descriptor", None)
        if key in ids[:1] or descriptor in ids:
            return key, value
    return None


class AMQPError(ProtocolError):
    """An error to report to the peer with an AMQP condition name."""

    def __init__(self, condition: str, description: str) -> None:
        super().__init__(description)
        self.condition = condition
        self.description = description


def _condition_for(error: Exception) -> tuple[str, str]:
    if isinstance(error, AMQPError):
        return error.condition, error.description
    if isinstance(error, SecurityError):
        return "amqp:unauthorized-access", str(error)
    if isinstance(error, AddressNotFoundError):
        return "amqp:not-found", str(error)
    if isinstance(error, AddressFullError):
        return "amqp:resource-limit-exceeded", str(error)
    if isinstance(error, NotActiveError):
        return "amqp:connection:forced", str(error)
    if isinstance(error, QueueError):
        return "amqp:resource-locked", str(error)
    if isinstance(error, PyBrokerError):
        return "amqp:internal-error", str(error)
    return "amqp:internal-error", f"{type(error).__name__}: {error}"


MAX_LARGE_HEAD = 1 << 20  # the header and properties of a large message must fit in 1 MiB
LARGE_CHUNK = 256 << 10  # a large message is sent from its file in reads of this size
LARGE_SEND_BUFFER = 1 << 20  # at most this much of it waits in proton's session buffer
SESSION_INCOMING_CAPACITY = 8 << 20
LARGE_WRITE_BEHIND = 8 << 20  # stop reading a large transfer while the disk is this far behind


class LargeInbound:
    """A large transfer being written to its file as its frames arrive."""

    __slots__ = ("done", "finishing", "head", "head_length", "link", "message_id", "paused", "pending", "writer")

    def __init__(self, link: ReceiverLink, writer: Any, message_id: int, pending: int, head: bytes,
                 head_length: int) -> None:
        self.link = link
        self.writer = writer
        self.message_id = message_id
        self.pending = pending
        self.head = head
        self.head_length = head_length
        self.paused = False
        self.finishing = False
        self.done = False

    def write(self, chunk: bytes) -> None:
        if chunk:
            self.writer.write(chunk)

    def throttle(self, link: ReceiverLink, delivery: Any) -> None:
        """Stop reading while the writer is more than LARGE_WRITE_BEHIND behind."""
        if self.writer.pending_bytes <= LARGE_WRITE_BEHIND or self.paused:
            return
        self.paused = True
        handler = link.handler

        async def resume() -> None:
            try:
                await self.writer.wait_writable(LARGE_WRITE_BEHIND // 2)
            except Exception:  # noqa: BLE001 - the failure shows at finish()
                pass
            self.paused = False
            if not link.closed and not handler.closed and link.large is self:
                link.on_transfer(delivery)
                handler._write_out()

        asyncio.get_running_loop().create_task(resume())

    def finish(self, delivery: Any) -> None:
        """All frames are in: sync the file, then route the message and settle."""
        self.finishing = True
        link = self.link
        handler = link.handler

        async def run() -> None:
            try:
                size = await self.writer.finish()
                if link.closed or handler.closed:
                    await self._discard()
                    return
                link.route_large(delivery, self, size)
            except Exception as error:  # noqa: BLE001 - this transfer fails, the link goes on
                await self._discard()
                if not link.closed and not handler.closed:
                    condition, description = _condition_for(error)
                    link._reject(delivery, condition, description)
            finally:
                self.done = True
                if not link.closed and not handler.closed:
                    link._drain_backlog()
                    handler.want_flush()

        asyncio.get_running_loop().create_task(run())

    async def _discard(self) -> None:
        server = self.link.handler.server
        try:
            await self.writer.abort()
        except Exception:  # noqa: BLE001
            pass
        if self.pending:
            server.storage.delete_large_pending(self.pending)

    def abort(self) -> None:
        asyncio.get_running_loop().create_task(self._discard())


class ReceiverLink:
    """A client producer: the broker receives transfers on this link."""

    __slots__ = (
        "address",
        "backlog",
        "blocked",
        "closed",
        "credit_left",
        "credits",
        "durable_waits",
        "explicit_routing",
        "handler",
        "large",
        "link",
        "low_credits",
        "partial",
        "ptr",
        "session",
        "transaction_coordinator",
    )

    def __init__(self, handler: AMQPConnectionHandler, link: Link, session: AMQPSession) -> None:
        self.handler = handler
        self.link = link
        self.ptr = link._impl
        self.session = session
        self.address: str | None = None
        self.explicit_routing: RoutingType | None = None
        self.credits = handler.credits
        self.low_credits = handler.low_credits
        # proton's credit for this link as of the last grant or flow event, less the transfers
        # that ended since (routed, refused or aborted). It exceeds the real count only by the
        # transfers proton holds that were not handled yet, and each of those ends in time, so
        # it tells when to top up without asking proton on every transfer
        self.credit_left = 0
        self.partial: bytearray | None = None
        self.large: LargeInbound | None = None
        self.backlog: collections.deque[tuple[Any, Any]] | None = None
        # routed transfers waiting for their message to be durable: (delivery, future, pending
        # large-message record), in routing order; one callback serves each group commit
        self.durable_waits: collections.deque[tuple[Any, asyncio.Future, int]] = collections.deque()
        self.closed = False
        self.blocked = False
        self.transaction_coordinator = False

    def open(self) -> None:
        link = self.link
        target = link.remote_target
        handler = self.handler
        server_session = self.session.server_session
        if target.type == Terminus.COORDINATOR:
            # a transaction controller: declare/discharge arrive as transfers on this link
            self.transaction_coordinator = True
            link.target.type = Terminus.COORDINATOR
            link.target.capabilities.put_object(symbol("amqp:local-transactions"))
            link.rcv_settle_mode = Link.RCV_FIRST
            link.open()
            self.grant_credit()
            return
        capabilities = _symbols(target.capabilities)
        explicit = _routing_from_capabilities(capabilities)
        if target.dynamic:
            routing = explicit or RoutingType.ANYCAST
            name = str(uuid.uuid4())
            if routing is RoutingType.ANYCAST:
                server_session.create_temporary_queue(name, RoutingType.ANYCAST, name=name)
            else:
                server_session.post_office.create_address(name, {RoutingType.MULTICAST}, persist=False)
                server_session.temporary_addresses.add(name)
            self.address = name
            self.explicit_routing = routing
        else:
            address = target.address or None
            if address:
                address, prefix_routing = handler.strip_prefix(address)
                explicit = explicit or prefix_routing
                base, queue = _split(address)
                implicit = None
                if explicit is None and queue is None:
                    implicit = self._implicit(base)
                info = server_session.address_query(base, explicit or implicit, auto_create=True)
                if info is None:
                    raise AMQPError("amqp:not-found", f"Address {address} is not found")
                if queue is not None and server_session.find_queue(queue) is None:
                    raise AMQPError("amqp:not-found", f"Queue {address} is not found")
                server_session.check_send(address)
                self.address = address
                self.explicit_routing = explicit or implicit
        link.target.copy(target)
        if self.address is not None and target.dynamic:
            link.target.address = self.address
        link.rcv_settle_mode = Link.RCV_FIRST
        link.open()
        self.grant_credit()

    def grant_credit(self) -> None:
        """Top the link's credit up to ``amqpCredits``, unless the address is full with the
        BLOCK policy: then wait (Artemis withholds credit the same way) until it has room."""
        if self.closed or self.handler.closed:
            return
        post_office = self.session.server_session.post_office
        if not post_office.can_send(self.address):
            if not self.blocked:
                self.blocked = True
                post_office.when_free(self.address, self._unblocked)
            return
        credit = pn_link_credit(self.ptr)
        if credit < self.credits:
            pn_link_flow(self.ptr, self.credits - credit)
            credit = self.credits
        self.credit_left = credit

    def transfer_done(self) -> None:
        """A transfer ended (routed, refused or aborted): it used a credit; top up when low."""
        left = self.credit_left = self.credit_left - 1
        if left <= self.low_credits and not self.blocked:
            self.grant_credit()

    def _unblocked(self) -> None:
        self.blocked = False
        self.grant_credit()
        self.handler.want_flush()

    def _implicit(self, address: str) -> RoutingType | None:
        info = self.session.server_session.post_office.addresses.get(address)
        if info is not None:
            if len(info.routing_types) == 1:
                return next(iter(info.routing_types))
            return None
        settings = self.handler.server.address_settings(address)
        return settings.default_address_routing_type or RoutingType.MULTICAST

    def _aborted(self, delivery: Any) -> None:
        self.partial = None
        if self.large is not None:
            self.large.abort()
            self.large = None
        pn_delivery_settle(delivery)
        self.transfer_done()

    def on_transfer(self, delivery: Any, current: bool = False) -> None:
        """A complete (or aborted, or partial) transfer arrived. ``current``: the caller saw
        ``pn_delivery_readable`` (it is the link's current delivery, so ``pn_link_recv``
        reads it and reports an abort itself: no ``pn_delivery_aborted``/``_pending`` call)."""
        ptr = self.ptr
        large = self.large
        if not current or (large is not None and large.paused):
            if pn_delivery_aborted(delivery):
                self._aborted(delivery)
                return
            if large is not None and large.paused:
                return  # the disk is behind: leave the bytes in proton (its window closes)
        handler = self.handler
        size = handler.receive_size
        # read up to the buffer's size at once; only a transfer that fills it needs the
        # exact pending count (and a bigger buffer)
        received = lib.pn_link_recv(ptr, handler.receive_buffer, size) if size else 0
        if received == PN_ABORTED:
            self._aborted(delivery)
            return
        if received == size:
            pending = pn_delivery_pending(delivery)
            if pending:
                head = _unpack(handler.receive_buffer, received) if received > 0 else b""
                handler.grow_receive_buffer(size + pending)
                more = lib.pn_link_recv(ptr, handler.receive_buffer, pending)
                if more == PN_ABORTED:
                    self._aborted(delivery)
                    return
                chunk = head + _unpack(handler.receive_buffer, more) if more > 0 else head
            else:
                chunk = _unpack(handler.receive_buffer, received) if received > 0 else b""
        else:
            chunk = _unpack(handler.receive_buffer, received) if received > 0 else b""
        partial = pn_delivery_partial(delivery)
        if large is not None:
            large.write(chunk)
            if partial:
                large.throttle(self, delivery)
                return
            self.large = None
            pn_link_advance(ptr)
            self.transfer_done()
            self._enqueue(delivery, large)
            return
        if partial:
            if self.partial is None:
                self.partial = bytearray(chunk)
            else:
                self.partial += chunk
            limit = handler.max_message_size
            if limit and len(self.partial) > limit:
                self.partial = None
                # advance first: settling the current delivery would advance the link itself,
                # and a second advance would skip the next transfer (never read, never settled)
                pn_link_advance(ptr)
                self._reject(delivery, "amqp:link:message-size-exceeded", f"message larger than {limit} bytes")
                self.transfer_done()
            elif 0 <= handler.large_threshold <= len(self.partial) and not self.transaction_coordinator:
                self._start_large(delivery)
            return
        if self.partial is not None:
            self.partial += chunk
            data = bytes(self.partial)
            self.partial = None
        else:
            data = chunk
        size = len(data)
        if size >= handler.size_check:
            limit = handler.max_message_size
            if limit and size > limit:
                # advance first: settling the current delivery would advance the link itself,
                # and a second advance would skip the next transfer (never read, never settled)
                pn_link_advance(ptr)
                self._reject(delivery, "amqp:link:message-size-exceeded", f"message larger than {limit} bytes")
                self.transfer_done()
                return
            if 0 <= handler.large_threshold <= size and self._whole_to_large(delivery, data):
                return
        pn_link_advance(ptr)
        left = self.credit_left = self.credit_left - 1  # transfer_done(), inlined
        if left <= self.low_credits and not self.blocked:
            self.grant_credit()
        if self.backlog:
            self._enqueue(delivery, data)
        else:
            self._route(delivery, data)

    def _whole_to_large(self, delivery: Any, data: bytes) -> bool:
        """A transfer over the large-message threshold that arrived whole (in one read): it goes
        to the large-message store all the same, as one that streamed in would. False when it
        cannot (no store, a coordinator link, no complete head): it is routed as it is."""
        if self.transaction_coordinator or self.handler.server.large_messages is None:
            return False
        try:
            if head_length(data) is None:
                return False
        except AMQPDecodeError:
            return False  # routing rejects it with the decode error
        self.partial = bytearray(data)
        self._start_large(delivery)
        large, self.large = self.large, None
        self.partial = None
        if large is None:
            return False
        pn_link_advance(self.ptr)
        self.transfer_done()
        self._enqueue(delivery, large)
        return True

    # -- large messages: streamed to a file as the frames arrive -------------------------------
    def _start_large(self, delivery: Any) -> None:
        server = self.handler.server
        store = server.large_messages
        buffered = self.partial
        assert buffered is not None
        if store is None:
            return  # no large-message store: the message is assembled in memory
        head = head_length(buffered)
        if head is None:
            if len(buffered) < MAX_LARGE_HEAD:
                return  # the head (header and properties) is not complete yet
            raise AMQPError("amqp:decode-error", f"message head larger than {MAX_LARGE_HEAD} bytes")
        storage = server.storage
        message_id = storage.next_id()
        writer = store.create(message_id)
        pending = storage.store_large_pending(message_id) if storage.persistent else 0
        self.large = LargeInbound(self, writer, message_id, pending, bytes(buffered[:head]), head)
        self.large.write(bytes(buffered))
        self.partial = None

    def _enqueue(self, delivery: Any, item: Any) -> None:
        """Keep the link's order while a large message is being finished."""
        if self.backlog is None:
            self.backlog = collections.deque()
        self.backlog.append((delivery, item))
        if len(self.backlog) == 1:
            self._drain_backlog()

    def _drain_backlog(self) -> None:
        backlog = self.backlog
        while backlog:
            delivery, item = backlog[0]
            if isinstance(item, LargeInbound):
                if not item.finishing:
                    item.finish(delivery)
                if not item.done:
                    return  # its finish() calls back here
            else:
                self._route(delivery, item)
            backlog.popleft()

    def _route(self, delivery: Any, data: bytes) -> None:
        handler = self.handler
        if self.transaction_coordinator:
            self.session.control(delivery, data)
            return
        transaction = None
        if pn_delivery_remote_state(delivery) == TRANSACTIONAL_STATE:
            transaction = self.session.transaction_of(delivery)
            if transaction is None:
                self._reject(delivery, "amqp:transaction:unknown-id", "unknown transaction")
                return
        try:
            address = self.address
            routing = self.explicit_routing
            if transaction is None and address is not None and routing is not None:
                # the common case: nothing but the header and properties needs decoding
                result = self.session.server_session.send(amqp_message(data, address), routing)
            else:
                message, parsed = amqp_to_core(data, address or "")
                if address is None:
                    to = parsed.to
                    if not to:
                        raise AMQPError("amqp:not-found", "anonymous-relay message with no 'to' address")
                    to, prefix_routing = handler.strip_prefix(to)
                    message.address = to
                    routing = prefix_routing
                    if routing is None:
                        routing = _routing_from_annotations(parsed)
                elif routing is None:
                    routing = _routing_from_annotations(parsed)
                if transaction is not None:
                    self.session.server_session.send_transacted(transaction, message, routing)
                    _transactional_outcome(delivery, transaction.tx_id, PN_ACCEPTED)
                    return
                result = self.session.server_session.send(message, routing)
        except Exception as error:  # noqa: BLE001 - the transfer is refused, the link goes on
            if not isinstance(error, PyBrokerError):
                log.exception("failed to route an AMQP message on link %s", self.link.name)
            condition, description = _condition_for(error)
            if pn_delivery_settled(delivery):
                pn_delivery_settle(delivery)
                log.debug("dropped a pre-settled message: %s", description)
            else:
                self._reject(delivery, condition, description)
            return
        if result.durable is None:
            # not stored (non-durable, or no persistence): accept at once (_settle_routed's
            # first case, inlined: this runs for every such message). No settled check: proton
            # sends no disposition for a transfer the producer settled already.
            pn_delivery_update(delivery, PN_ACCEPTED)
            pn_delivery_settle(delivery)
            return
        self._settle_routed(delivery, result)

    def _settle_routed(self, delivery: Any, result: Any, *, pending: int = 0) -> None:
        """Accept (and settle) a routed transfer once its message is durable."""
        handler = self.handler
        storage = handler.server.storage
        durable = result.durable
        if durable is None or pn_delivery_settled(delivery):
            if pending:
                storage.delete_large_pending(pending)
            if not pn_delivery_settled(delivery):
                pn_delivery_update(delivery, PN_ACCEPTED)
            pn_delivery_settle(delivery)
            return
        # accepted only once the message is on disk; the callback holds self, whose proton
        # wrapper keeps the C link (and its unsettled deliveries) alive until it ran
        if not isinstance(durable, asyncio.Future):
            durable = asyncio.ensure_future(durable)
        waits = self.durable_waits
        waits.append((delivery, durable, pending))
        if len(waits) == 1:
            durable.add_done_callback(self._settle_durable)

    def _settle_durable(self, _future: Any = None) -> None:
        """Settle the waiting transfers whose messages are durable, in order. A group commit
        resolves its futures together, so one call settles the whole batch; it waits again on
        the first future still pending."""
        waits = self.durable_waits
        handler = self.handler
        storage = handler.server.storage
        settled = False
        while waits:
            delivery, future, pending = waits[0]
            if not future.done():
                future.add_done_callback(self._settle_durable)
                break
            waits.popleft()
            error = future.exception() if not future.cancelled() else asyncio.CancelledError()
            if pending and error is None:
                storage.delete_large_pending(pending)
            if self.closed or handler.closed:
                continue
            if error is not None:
                condition, description = _condition_for(error)
                self._reject(delivery, condition, f"message could not be stored: {description}")
            else:
                pn_delivery_update(delivery, PN_ACCEPTED)
                pn_delivery_settle(delivery)
            settled = True
        if settled:
            handler.want_flush()

    def route_large(self, delivery: Any, large: LargeInbound, size: int) -> None:
        """A large message's body is on disk: route its head (the body stays in the file)."""
        message, parsed = amqp_to_core(large.head, self.address or "")
        message.message_id = large.message_id
        message.large = LargeBody(self.handler.server.large_messages, large.message_id, size, large.head_length)
        extra = dict(message.extra or {})
        extra[LARGE_EXTRA] = [size, large.head_length]
        message.extra = extra
        data_address = self.address
        if data_address is None:
            to = parsed.to
            if not to:
                raise AMQPError("amqp:not-found", "anonymous-relay message with no 'to' address")
            to, prefix_routing = self.handler.strip_prefix(to)
            message.address = to
            routing = prefix_routing or _routing_from_annotations(parsed)
        else:
            routing = self.explicit_routing or _routing_from_annotations(parsed)
        result = self.session.server_session.send(message, routing)
        self._settle_routed(delivery, result, pending=large.pending)

    def _reject(self, delivery: Any, condition: str, description: str) -> None:
        local = pn_delivery_local(delivery)
        cond = pn_disposition_condition(local)
        pn_condition_set_name(cond, condition)
        pn_condition_set_description(cond, description)
        pn_delivery_update(delivery, PN_REJECTED)
        pn_delivery_settle(delivery)

    def close(self) -> None:
        self.closed = True
        if self.large is not None:
            self.large.abort()
            self.large = None


def _split(address: str) -> tuple[str, str | None]:
    base, sep, queue = address.partition("::")
    return (base, queue) if sep else (address, None)


def _routing_from_capabilities(capabilities: set[str]) -> RoutingType | None:
    if TOPIC_CAPABILITY in capabilities or TEMP_TOPIC_CAPABILITY in capabilities:
        return RoutingType.MULTICAST
    if QUEUE_CAPABILITY in capabilities or TEMP_QUEUE_CAPABILITY in capabilities:
        return RoutingType.ANYCAST
    return None


def _routing_from_annotations(parsed: Any) -> RoutingType | None:
    if parsed.message_annotations_range is None:
        return None
    annotations = parsed.message_annotations
    value = annotations.get("x-opt-routing-type")
    if value is not None:
        return RoutingType.MULTICAST if int(value) == 0 else RoutingType.ANYCAST
    dest = annotations.get("x-opt-jms-dest")
    if dest is not None:
        # qpid-jms: 0 queue, 1 topic, 2 temporary queue, 3 temporary topic
        return RoutingType.MULTICAST if int(dest) in (1, 3) else RoutingType.ANYCAST
    return None


class SenderLink:
    """A client consumer: the broker sends transfers on this link (a queue deliverer)."""

    __slots__ = (
        "_tag",
        "browse_only",
        "closed",
        "consumer",
        "credit",
        "durable_subscription",
        "handler",
        "link",
        "multicast",
        "presettled",
        "ptr",
        "queue_name",
        "ready",
        "session",
        "source_address",
        "streaming",
        "temporary_queue",
        "unsettled",
    )

    def __init__(self, handler: AMQPConnectionHandler, link: Link, session: AMQPSession) -> None:
        self.handler = handler
        self.link = link
        self.ptr = link._impl
        self.session = session
        self.consumer: ServerConsumer | None = None
        self.unsettled: dict[Any, MessageReference] = {}
        self.presettled = False
        self.closed = False
        # proton's credit for this link as of the last flow event, less what deliver() sent
        # since: never more than the real credit (a flow frame that lowers it is a flow event),
        # so only a count of 0 needs proton's own count
        self.credit = 0
        self._tag = 0
        self.queue_name: str | None = None
        self.source_address: str | None = None
        self.temporary_queue: str | None = None
        self.durable_subscription = False
        self.multicast = False
        self.browse_only = False
        # no transfer may go out before our attach: deliver() refuses until open() finished
        self.ready = False
        self.streaming = False

    def open(self) -> None:
        link = self.link
        source = link.remote_source
        handler = self.handler
        server_session = self.session.server_session
        post_office = server_session.post_office
        filters = _filters(source.filter)
        supported: dict[Any, Any] = {}
        selector: str | None = None
        selector_filter = _find_filter(filters, JMS_SELECTOR_FILTER_IDS)
        if selector_filter is not None:
            key, value = selector_filter
            selector = str(getattr(value, "value", value))
            handler.server.make_filter(selector)  # raises on a bad selector
            supported[key] = value
        capabilities = _symbols(source.capabilities)
        link.source.copy(source)
        if source.type == Terminus.UNSPECIFIED or (source.address is None and not source.dynamic):
            raise AMQPError("amqp:not-found", "a source address is required (subscription recovery is not supported)")
        if source.dynamic:
            queue = server_session.create_temporary_queue(None, RoutingType.ANYCAST)
            self.temporary_queue = queue.name
            queue_name = queue.name
            link.source.address = queue_name
            link.source.dynamic = True
        else:
            address, prefix_routing = handler.strip_prefix(source.address)
            base, fqqn_queue = _split(address)
            shared = SHARED_CAPABILITY in capabilities
            global_ = GLOBAL_CAPABILITY in capabilities
            explicit = _routing_from_capabilities(capabilities) or prefix_routing
            if explicit is not None:
                multicast = explicit is RoutingType.MULTICAST
                info = server_session.address_query(base, explicit, auto_create=True)
                if info is None:
                    raise AMQPError("amqp:not-found", f"Address {base} is not found")
                if multicast and RoutingType.MULTICAST not in info.routing_types:
                    raise AMQPError("amqp:illegal-state", f"Address {base} is not configured for topic support")
                if not multicast and RoutingType.ANYCAST not in info.routing_types and fqqn_queue is None:
                    raise AMQPError("amqp:illegal-state", f"Address {base} is not configured for queue support")
            else:
                default = handler.server.address_settings(base).default_address_routing_type or RoutingType.MULTICAST
                info = server_session.address_query(base, default, auto_create=True)
                if info is None:
                    raise AMQPError("amqp:not-found", f"Address {base} is not found")
                multicast = info.routing_types == {RoutingType.MULTICAST}
            if multicast and fqqn_queue is None:
                no_local = _find_filter(filters, NO_LOCAL_FILTER_IDS)
                if no_local is not None:
                    clause = f"{CONNECTION_ID_PROPERTY}<>'{handler.container_id or ''}'"
                    selector = f"({selector}) AND {clause}" if selector else clause
                    supported[no_local[0]] = no_local[1]
                durable = source.durability in (Terminus.DELIVERIES, Terminus.CONFIGURATION)
                link_name = link.name
                client_id = handler.container_id
                if durable:
                    queue_name = _subscription_name(client_id, link_name, shared, global_, volatile=False)
                    existing = post_office.find_queue(queue_name)
                    if existing is not None and not existing.configuration_managed and (
                        existing.address != base
                        or (getattr(existing.filter, "expression", None) or None) != (selector or None)
                    ):
                        if existing.consumers:
                            raise AMQPError("amqp:illegal-state", "Unable to recreate subscription, consumers already exist")
                        server_session.delete_queue(queue_name)
                        existing = None
                    if existing is None:
                        server_session.create_queue(
                            queue_name, base, RoutingType.MULTICAST, filter_expression=selector, durable=True
                        )
                    self.durable_subscription = True
                elif shared:
                    queue_name = _subscription_name(client_id, link_name, shared, global_, volatile=True)
                    if post_office.find_queue(queue_name) is None:
                        server_session.create_queue(
                            queue_name, base, RoutingType.MULTICAST, filter_expression=selector, durable=False,
                            auto_created=True,
                        )
                else:
                    queue = server_session.create_temporary_queue(
                        base, RoutingType.MULTICAST, filter_expression=selector
                    )
                    queue_name = queue.name
                    self.temporary_queue = queue_name
                selector = None  # the filter lives on the subscription queue
                self.multicast = True
            elif fqqn_queue is not None:
                if post_office.find_queue(fqqn_queue) is None:
                    raise AMQPError("amqp:not-found", f"Queue {address} is not found")
                queue_name = fqqn_queue
            else:
                matching = server_session.matching_queue(base, RoutingType.ANYCAST)
                queue_name = matching.name if matching is not None else base
                if post_office.find_queue(queue_name) is None:
                    raise AMQPError("amqp:not-found", f"Queue {base} is not found")
            self.source_address = address
        browse_only = not self.multicast and source.distribution_mode == Terminus.DIST_MODE_COPY
        self.presettled = link.remote_snd_settle_mode == Link.SND_SETTLED
        if supported:
            link.source.filter.clear()
            link.source.filter.put_dict(supported)
        else:
            link.source.filter.clear()
        self.queue_name = queue_name
        self.browse_only = browse_only
        self.consumer = server_session.create_consumer(
            queue_name, self, filter_expression=selector, browse_only=browse_only
        )
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.open()
        self.ready = True

    # -- Deliverer ---------------------------------------------------------------------------
    def deliver(self, ref: MessageReference) -> bool:
        ptr = self.ptr
        handler = self.handler
        if not self.ready or self.closed or handler.write_blocked:
            return False
        credit = self.credit
        if credit <= 0:
            credit = self.credit = pn_link_credit(ptr)
            if credit <= 0:
                return False
        if self.streaming:
            return False  # a large message is being sent on this link: one delivery at a time
        self.credit = credit - 1
        if ref.message.large is not None:
            return self._deliver_large(ref)
        message = ref.message
        if message.protocol == AMQP_PROTOCOL and not ref.delivery_count and not message.annotations:
            payload = message.body  # a first delivery sends the producer's bytes unchanged
        else:
            payload = core_to_amqp(message, ref.delivery_count)
        self._tag = tag_number = self._tag + 1
        _pack_tag(_TAG_BUFFER, 0, tag_number & 0xFFFFFFFF)
        delivery = lib.pn_delivery(ptr, _TAG)
        lib.pn_link_send(ptr, payload, len(payload))
        pn_link_advance(ptr)
        if self.presettled:
            pn_delivery_settle(delivery)
            if not self.browse_only:
                # at-most-once: the message is gone once it is written
                handler.loop.call_soon(ref.queue.acknowledge, ref)
        else:
            self.unsettled[delivery] = ref
        if not handler._flush_scheduled:
            handler.want_flush()
        return True

    def _deliver_large(self, ref: MessageReference) -> bool:
        handler = self.handler
        store = handler.server.large_messages
        if store is None:
            return False
        self._tag = tag_number = self._tag + 1
        _pack_tag(_TAG_BUFFER, 0, tag_number & 0xFFFFFFFF)
        delivery = lib.pn_delivery(self.ptr, _TAG)
        if not self.presettled:
            self.unsettled[delivery] = ref
        self.streaming = True
        asyncio.get_running_loop().create_task(self._stream(delivery, ref, store))
        return True

    async def _stream(self, delivery: Any, ref: MessageReference, store: Any) -> None:
        """Send a large message from its file in chunks, never holding it whole in memory,
        and never more than LARGE_SEND_BUFFER in proton's session buffer."""
        handler = self.handler
        message = ref.message
        large = message.large
        ptr = self.ptr
        session = pn_link_session(ptr)
        completed = False
        reader = None
        try:
            reader = await store.open_reader(large.message_id)
            offset = 0
            if ref.delivery_count or message.annotations:
                head = core_to_amqp(message, ref.delivery_count)  # the head with a new header
                lib.pn_link_send(ptr, ffi.from_buffer(head), len(head))
                offset = large.head_length
            size = reader.size
            while offset < size:
                while pn_session_outgoing_bytes(session) > LARGE_SEND_BUFFER or handler.write_blocked:
                    if self.closed or handler.closed:
                        return
                    await handler.output_progress()
                if self.closed or handler.closed:
                    return
                chunk = await reader.read(offset, min(LARGE_CHUNK, size - offset))
                if self.closed or handler.closed:
                    return
                lib.pn_link_send(ptr, ffi.from_buffer(chunk), len(chunk))
                offset += len(chunk)
                handler._write_out()
            pn_link_advance(ptr)
            completed = True
            if self.presettled:
                pn_delivery_settle(delivery)
                ref.queue.acknowledge(ref)
        except Exception as error:  # noqa: BLE001 - this delivery fails; the message goes back
            log.warning("sending large message %s failed: %s", large.message_id, error)
        finally:
            if reader is not None:
                with contextlib.suppress(Exception):
                    await reader.close()
            self.streaming = False
            if not completed and not self.closed and not handler.closed:
                pn_delivery_abort(delivery)
                if self.unsettled.pop(delivery, None) is not None and self.consumer is not None:
                    self.consumer.cancel(ref, failed=False)
            if not self.closed and not handler.closed:
                handler._write_out()
                if self.consumer is not None:
                    self.consumer.prompt_delivery()

    def on_disposition(self, delivery: Any) -> None:
        ref = self.unsettled.pop(delivery, None)
        consumer = self.consumer
        if ref is None or consumer is None:
            if pn_delivery_settled(delivery):
                pn_delivery_settle(delivery)
            return
        if consumer.browse_only:
            pn_delivery_settle(delivery)
            return
        state = pn_delivery_remote_state(delivery)
        if state == PN_ACCEPTED:  # the common outcome first
            consumer.acknowledge(ref)
        elif state == TRANSACTIONAL_STATE:
            transaction, outcome = self.session.transactional_outcome(delivery)
            if transaction is None:
                consumer.cancel(ref, failed=False)
            elif outcome == PN_ACCEPTED:
                transaction.acknowledge(consumer, ref)
                if not pn_delivery_settled(delivery):
                    _transactional_outcome(delivery, transaction.tx_id, PN_ACCEPTED)
                    return
            elif outcome == PN_REJECTED:
                consumer.reject(ref)
            else:
                consumer.cancel(ref, failed=outcome == PN_MODIFIED)
        elif state == PN_RELEASED:
            consumer.cancel(ref, failed=False)
        elif state == PN_REJECTED:
            consumer.reject(ref)
        elif state == PN_MODIFIED:
            disposition = pn_delivery_remote(delivery)
            failed = bool(pn_disposition_is_failed(disposition))
            if pn_disposition_is_undeliverable(disposition):
                ref.queue.exclude_consumer(ref, consumer)
            consumer.cancel(ref, failed=failed)
        elif pn_delivery_settled(delivery):
            # settled without an outcome: the source's default outcome (accepted)
            consumer.acknowledge(ref)
        else:
            # a non-terminal state (received): keep waiting for the outcome
            self.unsettled[delivery] = ref
            return
        pn_delivery_settle(delivery)

    def on_flow(self) -> None:
        credit = self.credit = pn_link_credit(self.ptr)
        consumer = self.consumer
        if consumer is None or self.closed:
            return
        if credit > 0:
            consumer.prompt_delivery()
        if pn_link_get_drain(self.ptr):
            pn_link_drained(self.ptr)
            self.credit = 0
            self.handler.want_flush()

    def close(self, *, remote_detach_closed: bool) -> None:
        """The link is going away: unsettled messages go back to the queue."""
        if self.closed:
            return
        self.closed = True
        consumer, self.consumer = self.consumer, None
        server_session = self.session.server_session
        if consumer is not None:
            self.unsettled.clear()
            server_session.close_consumer(consumer, failed=True)
        # a closed (not merely detached) durable subscription link deletes the subscription
        if remote_detach_closed and self.durable_subscription and self.queue_name:
            queue = server_session.find_queue(self.queue_name)
            if queue is not None and not queue.consumers:
                try:
                    server_session.delete_queue(self.queue_name)
                except PyBrokerError as error:
                    log.debug("could not delete subscription %s: %s", self.queue_name, error)
        if self.temporary_queue is not None:
            if server_session.find_queue(self.temporary_queue) is not None:
                try:
                    server_session.delete_queue(self.temporary_queue)
                except PyBrokerError as error:
                    log.debug("could not delete temporary queue %s: %s", self.temporary_queue, error)
            self.temporary_queue = None


def _subscription_name(
    client_id: str | None, link_name: str, shared: bool, global_: bool, *, volatile: bool
) -> str:
    name = link_name if (not client_id or global_) else f"{client_id}.{link_name}"
    if shared:
        name = name.split("|", 1)[0]
        if volatile:
            name += ":shared-volatile"
        if global_:
            name += ":global"
    return name


TRANSACTIONAL_STATE = 0x34
DECLARED = 0x33
DECLARE = 0x31
DISCHARGE = 0x32
_TXN_ID = struct.Struct(">Q")


def _transactional_outcome(delivery: Any, tx_id: int, outcome: int) -> None:
    """Settle ``delivery`` with transactional-state(txn-id, outcome), as Artemis answers."""
    wrapped = Delivery.wrap(delivery)
    wrapped.local.data = [_TXN_ID.pack(tx_id), Described(ulong(outcome), [])]
    wrapped.update(TRANSACTIONAL_STATE)
    wrapped.settle()


class AMQPSession:
    """One AMQP session: its links and the transactions its coordinator declared."""

    __slots__ = ("handler", "links", "server_session", "session", "transactions")

    def __init__(self, session: Session, server_session: ServerSession, handler: Any = None) -> None:
        self.session = session
        self.server_session = server_session
        self.handler = handler
        self.links: dict[Any, ReceiverLink | SenderLink] = {}
        self.transactions: dict[bytes, Any] = {}

    def _txn(self, value: Any) -> Any:
        if isinstance(value, bytes | bytearray | memoryview):
            return self.transactions.get(bytes(value))
        return None

    def transaction_of(self, delivery: Any) -> Any:
        data = Delivery.wrap(delivery).remote.data or []
        return self._txn(data[0]) if data else None

    def transactional_outcome(self, delivery: Any) -> tuple[Any, int | None]:
        data = Delivery.wrap(delivery).remote.data or []
        transaction = self._txn(data[0]) if data else None
        outcome = None
        if len(data) > 1 and data[1] is not None:
            outcome = int(getattr(data[1], "descriptor", 0))
        return transaction, outcome

    def control(self, delivery: Any, data: bytes) -> None:
        """A declare or discharge from the transaction controller."""
        wrapped = Delivery.wrap(delivery)
        try:
            body = parse_message(data).body_value()
        except AMQPDecodeError as error:
            self._refuse(wrapped, "amqp:decode-error", str(error))
            return
        descriptor = getattr(body, "descriptor", None)
        fields = list(getattr(body, "value", None) or [])
        if descriptor in (DECLARE, "amqp:declare:list"):
            if fields and fields[0] is not None:
                self._refuse(wrapped, "amqp:not-implemented", "global transactions are not supported")
                return
            transaction = self.server_session.begin_transaction()
            txn_id = _TXN_ID.pack(transaction.tx_id)
            self.transactions[txn_id] = transaction
            wrapped.local.data = [txn_id]
            wrapped.update(DECLARED)
            wrapped.settle()
        elif descriptor in (DISCHARGE, "amqp:discharge:list"):
            txn_id = bytes(fields[0]) if fields and fields[0] is not None else b""
            fail = bool(fields[1]) if len(fields) > 1 else False
            transaction = self.transactions.pop(txn_id, None)
            if transaction is None:
                self._refuse(wrapped, "amqp:transaction:unknown-id", f"unknown transaction {txn_id.hex()}")
                return
            if fail:
                self.server_session.rollback(transaction)
                wrapped.update(PN_ACCEPTED)
                wrapped.settle()
                return
            handler = self.handler
            future = asyncio.ensure_future(self.server_session.commit(transaction))

            def committed(task: Any) -> None:
                if handler is not None and handler.closed:
                    return
                error = task.exception()
                if error is None:
                    wrapped.update(PN_ACCEPTED)
                    wrapped.settle()
                else:
                    self._refuse(wrapped, "amqp:transaction:rollback", f"commit failed: {error}")
                if handler is not None:
                    handler.want_flush()

            future.add_done_callback(committed)
        else:
            self._refuse(wrapped, "amqp:not-implemented", f"unknown transaction control {descriptor!r}")

    @staticmethod
    def _refuse(wrapped: Any, condition: str, description: str) -> None:
        wrapped.local.condition = Condition(condition, description)
        wrapped.update(PN_REJECTED)
        wrapped.settle()


class Flusher:
    """Writes out every AMQP connection that has output, once per turn of the event loop.

    A producer's batch of transfers usually causes deliveries on other connections; instead
    of one loop callback per connection, the connection that processed input flushes every
    connection with output at the end of its ``data_received`` (and a scheduled callback
    covers output caused elsewhere, e.g. by a timer or another protocol).
    """

    __slots__ = ("dirty", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dirty: list[AMQPConnectionHandler] = []
        self.scheduled = False

    def add(self, handler: AMQPConnectionHandler) -> None:
        self.dirty.append(handler)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        self.scheduled = False
        dirty = self.dirty
        if not dirty:
            return
        self.dirty = []
        for handler in dirty:
            handler._flush_scheduled = False
            if not handler.closed:
                handler._write_out()


class AMQPConnectionHandler:
    """One AMQP connection (the transport's protocol handler)."""

    def __init__(
        self,
        server: BrokerServer,
        context: Any,
        *,
        failover_server_list: Callable[[], list[dict[str, Any]]] | None = None,
        container_id: str | None = None,
    ) -> None:
        self.server = server
        self.context = context
        self.loop = asyncio.get_running_loop()
        acceptor = context.acceptor
        params = getattr(acceptor, "params", {}) or {}
        self.credits = int(params.get("amqpCredits", "1000"))
        self.low_credits = int(params.get("amqpLowCredits", "300"))
        self.max_message_size = int(params.get("amqpMaxMessageSize", "0") or 0) or 0
        # transfers at least this big are streamed to the large-message store (-1: never)
        self.large_threshold = int(params.get("amqpMinLargeMessageSize", "102400"))
        # the smallest transfer either limit applies to (one comparison per whole transfer)
        limits = [limit for limit in (self.max_message_size + 1 if self.max_message_size else -1,
                                      self.large_threshold) if limit >= 0]
        self.size_check = min(limits) if limits else sys.maxsize
        self.anycast_prefix = params.get("anycastPrefix")
        self.multicast_prefix = params.get("multicastPrefix")
        idle_timeout = int(params.get("amqpIdleTimeout", "60000"))
        max_frame = int(params.get("amqpMaxFrameSize", "131072"))
        self._failover_server_list = failover_server_list
        self._local_container = container_id or f"pybroker-{server.configuration.name}"
        security = server.security
        allow_anonymous = security.allows_anonymous()
        sasl = SaslServer(self._authenticate, allow_anonymous=allow_anonymous, allow_no_sasl=allow_anonymous)
        self.engine = ProtonEngine(sasl, idle_timeout_ms=idle_timeout, max_frame_size=max_frame)
        self.principal: Any = None
        self.sessions: dict[Any, AMQPSession] = {}
        self.links: dict[Any, ReceiverLink | SenderLink] = {}
        self.container_id: str | None = None
        flusher = server.protocol_state.get("amqp-flusher")
        if flusher is None:
            flusher = server.protocol_state["amqp-flusher"] = Flusher(self.loop)
        self._flusher: Flusher = flusher
        self.closed = False
        self.write_blocked = False
        self._flush_scheduled = False
        self._tick_handle: asyncio.TimerHandle | None = None
        self._tick_deadline = 0
        self._logged_close = False
        # transfers are read into this buffer and copied out once (grown on demand)
        self.receive_size = 0
        self.receive_buffer: Any = None
        self.grow_receive_buffer(65536)
        # set whenever the peer sent something or the socket drained (large-message sends wait)
        self._progress: asyncio.Event | None = None

    def grow_receive_buffer(self, size: int) -> None:
        """Make the transfer scratch buffer (a C buffer, so pn_link_recv needs no conversion)
        hold at least ``size`` bytes."""
        size = max(size, 2 * self.receive_size)
        self.receive_buffer = ffi.new("char[]", size)
        self.receive_size = size

    # -- authentication --------------------------------------------------------------------
    def _authenticate(self, mechanism: str, user: str | None, password: str | None) -> Any:
        try:
            principal = self.server.authenticate(user, password)
        except SecurityError as error:
            log.warning(
                "AMQ224018: Failed to authenticate AMQP connection from %s (user %r, mechanism %s): %s",
                self.context.remote_address,
                user,
                mechanism,
                error,
            )
            raise
        self.principal = principal
        return principal

    def strip_prefix(self, address: str) -> tuple[str, RoutingType | None]:
        if self.anycast_prefix and address.startswith(self.anycast_prefix):
            return address[len(self.anycast_prefix) :], RoutingType.ANYCAST
        if self.multicast_prefix and address.startswith(self.multicast_prefix):
            return address[len(self.multicast_prefix) :], RoutingType.MULTICAST
        return address, None

    # -- transport callbacks ---------------------------------------------------------------
    async def output_progress(self) -> None:
        """Wait until the peer sends something (flow, dispositions) or the socket drains."""
        if self._progress is None:
            self._progress = asyncio.Event()
        self._progress.clear()
        await self._progress.wait()

    def _made_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._made_progress()
        try:
            self.engine.receive_data(data)
        except ProtocolError as error:
            log.warning("AMQP connection from %s: %s", self.context.remote_address, error)
            self._write_out()
            self.context.close()
            self._shutdown()
            return
        self._process()
        self._write_out()
        self._flusher.run()  # the deliveries this input caused on other connections
        self._schedule_tick()

    def eof_received(self) -> None:
        # an abrupt end makes proton report "framing error: connection aborted": not news
        self._logged_close = True
        self.engine.read_eof()
        self._process()
        self._write_out()

    def connection_lost(self, exc: Exception | None) -> None:
        self._logged_close = True
        self.engine.read_eof()
        self._shutdown()

    def pause_writing(self) -> None:
        self.write_blocked = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._made_progress()
        for link in list(self.links.values()):
            if isinstance(link, SenderLink) and link.consumer is not None:
                link.consumer.prompt_delivery()
        self._write_out()

    # -- output ----------------------------------------------------------------------------
    def want_flush(self) -> None:
        if not self._flush_scheduled and not self.closed:
            self._flush_scheduled = True
            self._flusher.add(self)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self.closed:
            self._write_out()

    def _write_out(self) -> None:
        engine = self.engine
        data = engine.data_to_send()
        if data:
            self.context.write(data)
        if engine.finished_after_send() and not self.context.closing:
            self.context.close()

    def _schedule_tick(self) -> None:
        if self.closed:
            return
        now_ms = int(time.monotonic() * 1000)
        deadline = self.engine.tick(now_ms)
        if deadline <= 0:
            return
        if self._tick_handle is not None and self._tick_deadline <= deadline:
            return
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._tick_deadline = deadline
        self._tick_handle = self.loop.call_later(max(0.0, (deadline - now_ms) / 1000.0), self._on_tick)

    def _on_tick(self) -> None:
        self._tick_handle = None
        self._tick_deadline = 0
        if self.closed:
            return
        self._schedule_tick()
        self._process()
        self._write_out()

    # -- events ----------------------------------------------------------------------------
    def _process(self) -> None:
        collector = self.engine.collector
        links = self.links
        while True:
            event = pn_collector_peek(collector)
            if not event:
                break
            kind = pn_event_type(event)
            try:
                if kind == PN_DELIVERY:
                    delivery = pn_event_delivery(event)
                    link = links.get(pn_delivery_link(delivery))
                    if link is None:
                        pass
                    elif isinstance(link, ReceiverLink):
                        if pn_delivery_readable(delivery):
                            link.on_transfer(delivery, True)
                        elif pn_delivery_aborted(delivery):
                            link.on_transfer(delivery)
                    elif pn_delivery_updated(delivery):
                        link.on_disposition(delivery)
                elif kind == PN_LINK_FLOW:
                    link = links.get(pn_event_link(event))
                    if isinstance(link, SenderLink):
                        link.on_flow()
                    elif link is not None:  # the producer's flow (a drain answer) may use credit
                        link.credit_left = pn_link_credit(link.ptr)
                else:
                    self._on_endpoint_event(kind, event)
            except Exception as error:  # noqa: BLE001 - task boundary for this connection
                log.exception("AMQP connection %s: error handling an event", self.context.connection_id)
                self._close_connection("amqp:internal-error", f"{type(error).__name__}: {error}")
            pn_collector_pop(collector)

    def _on_endpoint_event(self, kind: int, event: Any) -> None:
        if kind == PN_CONNECTION_REMOTE_OPEN:
            self._on_connection_open(Connection.wrap(pn_event_connection(event)))
        elif kind == PN_SESSION_REMOTE_OPEN:
            self._on_session_open(Session.wrap(pn_event_session(event)))
        elif kind == PN_LINK_REMOTE_OPEN:
            self._on_link_open(Link.wrap(pn_event_link(event)))
        elif kind in (PN_LINK_REMOTE_CLOSE, PN_LINK_REMOTE_DETACH):
            link = Link.wrap(pn_event_link(event))
            self._on_link_close(link, closed=kind == PN_LINK_REMOTE_CLOSE)
        elif kind == PN_SESSION_REMOTE_CLOSE:
            self._on_session_close(Session.wrap(pn_event_session(event)))
        elif kind == PN_CONNECTION_REMOTE_CLOSE:
            connection = Connection.wrap(pn_event_connection(event))
            self._close_all_sessions()
            connection.close()
        elif kind == PN_TRANSPORT_ERROR:
            condition = pn_transport_condition(self.engine.transport)
            from cproton import pn_condition_get_description, pn_condition_get_name

            name = pn_condition_get_name(condition)
            description = pn_condition_get_description(condition)
            if name and not self._logged_close:
                self._logged_close = True
                log.warning(
                    "AMQP connection from %s closed on a protocol error: %s: %s",
                    self.context.remote_address,
                    name,
                    description,
                )
        elif kind == PN_TRANSPORT_CLOSED:
            self._close_all_sessions()

    def _on_connection_open(self, connection: Connection) -> None:
        if self.principal is None:
            # no SASL layer ran (cannot happen: the SASL server authenticates even "NONE")
            self._close_connection("amqp:unauthorized-access", "not authenticated")
            return
        self.container_id = connection.remote_container
        connection.container = self._local_container
        properties: dict[Any, Any] = {symbol("product"): PRODUCT, symbol("version"): VERSION}
        if self._failover_server_list is not None:
            servers = self._failover_server_list()
            if servers:
                properties[symbol("failover-server-list")] = [
                    {symbol(key): value for key, value in entry.items()} for entry in servers
                ]
        connection.properties = properties
        connection.offered_capabilities = [symbol(ANONYMOUS_RELAY), symbol(DELAYED_DELIVERY), symbol(SHARED_SUBS)]
        connection.open()

    def _on_session_open(self, session: Session) -> None:
        try:
            server_session = self.server.create_session(
                principal=self.principal,
                protocol="amqp",
                connection_id=self.context.connection_id,
                client_id=self.container_id,
                remote_address=self.context.remote_address,
            )
        except Exception as error:  # noqa: BLE001
            condition, description = _condition_for(error)
            session.condition = Condition(condition, description)
            session.open()
            session.close()
            return
        self.sessions[session._impl] = AMQPSession(session, server_session, self)
        # proton buffers at most this much unread transfer data per session, then closes the
        # peer's incoming window: a large transfer paused for a slow disk stays bounded
        pn_session_set_incoming_capacity(session._impl, SESSION_INCOMING_CAPACITY)
        session.open()

    def _on_link_open(self, link: Link) -> None:
        amqp_session = self.sessions.get(link.session._impl)
        if amqp_session is None:
            link.condition = Condition("amqp:session:unattached-handle", "session is not open")
            link.open()
            link.close()
            return
        context: ReceiverLink | SenderLink
        context = SenderLink(self, link, amqp_session) if pn_link_is_sender(link._impl) else ReceiverLink(self, link, amqp_session)
        try:
            context.open()
        except Exception as error:  # noqa: BLE001 - the attach is refused, the connection goes on
            condition, description = _condition_for(error)
            if not isinstance(error, PyBrokerError):
                log.exception("AMQP attach of link %r failed", link.name)
            else:
                log.debug("AMQP attach of link %r refused: %s: %s", link.name, condition, description)
            if isinstance(context, SenderLink):
                context.close(remote_detach_closed=False)
                link.source.type = Terminus.UNSPECIFIED
            else:
                link.target.type = Terminus.UNSPECIFIED
            link.condition = Condition(condition, description)
            link.open()
            link.close()
            return
        self.links[link._impl] = context
        amqp_session.links[link._impl] = context
        if isinstance(context, SenderLink) and context.consumer is not None and pn_link_credit(link._impl) > 0:
            context.consumer.prompt_delivery()

    def _on_link_close(self, link: Link, *, closed: bool) -> None:
        context = self.links.pop(link._impl, None)
        if context is not None:
            amqp_session = self.sessions.get(link.session._impl)
            if amqp_session is not None:
                amqp_session.links.pop(link._impl, None)
            if isinstance(context, SenderLink):
                context.close(remote_detach_closed=closed)
            else:
                context.close()
        if closed:
            link.close()
        else:
            link.detach()

    def _on_session_close(self, session: Session) -> None:
        amqp_session = self.sessions.pop(session._impl, None)
        if amqp_session is not None:
            self._close_session(amqp_session)
        session.close()

    def _close_session(self, amqp_session: AMQPSession) -> None:
        for key, context in list(amqp_session.links.items()):
            self.links.pop(key, None)
            if isinstance(context, SenderLink):
                context.close(remote_detach_closed=False)
            else:
                context.close()
        amqp_session.links.clear()
        amqp_session.server_session.close(failed=True)

    def _close_all_sessions(self) -> None:
        for amqp_session in list(self.sessions.values()):
            self._close_session(amqp_session)
        self.sessions.clear()

    def _close_connection(self, condition: str, description: str) -> None:
        connection = self.engine.connection_object
        connection.condition = Condition(condition, description)
        self._close_all_sessions()
        connection.close()
        self._write_out()

    def _shutdown(self) -> None:
        if self.closed:
            return
        self._close_all_sessions()
        self.closed = True
        self._made_progress()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self.links.clear()

    def force_close(self, condition: str = "amqp:connection:forced", description: str = "broker stopping") -> None:
        """Close from the broker side (broker stop, failback)."""
        if self.closed:
            return
        self._close_connection(condition, description)
        self.context.close()
        self._shutdown()
