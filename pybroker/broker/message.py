"""Messages as the broker core sees them, and the seam to protocol-specific encodings.

A :class:`Message` keeps the bytes its producer's protocol sent (``body``), untouched, plus the few
fields routing and delivery need (address, durability, priority, expiry). A protocol that receives
a message from another protocol converts it through the :class:`MessageCodec` of the protocol the
message came in with; the core never decodes a body.

Properties (the application properties filters and duplicate detection look at) are decoded
lazily by the message's codec: most messages are routed and delivered without anyone asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgpack

from pybroker.config.model import RoutingType

#: Property carrying the duplicate-detection id (Artemis's Message.HDR_DUPLICATE_DETECTION_ID).
DUPLICATE_ID_PROPERTY = "_AMQ_DUPL_ID"
ORIGINAL_ADDRESS = "_AMQ_ORIG_ADDRESS"
ORIGINAL_QUEUE = "_AMQ_ORIG_QUEUE"
ORIGINAL_MESSAGE_ID = "_AMQ_ORIG_MESSAGE_ID"
ORIGINAL_ROUTING_TYPE = "_AMQ_ORIG_ROUTING_TYPE"
ACTUAL_EXPIRY = "_AMQ_ACTUAL_EXPIRY"

DEFAULT_PRIORITY = 4

_unpackb = msgpack.unpackb
_packers = threading.local()  # one reusable Packer per thread (packb builds one per call)


def _packer() -> Any:
    try:
        return _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        return packer
_new_message = object.__new__

# Fixed per-message overhead used for memory accounting (object, slots, refs); the body length is
# added to it. Paging limits (max-size-bytes) are computed from this estimate.
MESSAGE_OVERHEAD_BYTES = 200


class MessageCodec(Protocol):
    """What a protocol offers the core about the messages it produced."""

    protocol: str
    #: True when the properties can be decoded again from the body (nothing extra to store)
    properties_in_body: bool

    def decode_properties(self, message: Message) -> dict[str, Any]:
        """Return the application properties of ``message`` (called at most once per message)."""
        ...

    def duplicate_id(self, message: Message) -> Any:
        """The ``_AMQ_DUPL_ID`` property or None; may avoid decoding every property."""
        ...


class _NoCodec:
    protocol = "core"
    properties_in_body = False

    def decode_properties(self, message: Message) -> dict[str, Any]:
        return {}

    def duplicate_id(self, message: Message) -> Any:
        return message.properties.get(DUPLICATE_ID_PROPERTY)


NO_CODEC: MessageCodec = _NoCodec()


class Message:
    """One message in the broker. Shared by every queue it was routed to (see MessageReference)."""

    __slots__ = (
        "_properties",
        "address",
        "annotations",
        "body",
        "codec",
        "durable",
        "expiration",
        "extra",
        "large",
        "message_id",
        "priority",
        "protocol",
        "ref_count",
        "routing_type",
        "size",
        "stored",
        "timestamp",
        "usage",
        "user",
    )

    def __init__(
        self,
        *,
        address: str,
        body: bytes,
        protocol: str = "core",
        codec: MessageCodec = NO_CODEC,
        durable: bool = False,
        priority: int = DEFAULT_PRIORITY,
        expiration: int = 0,
        timestamp: int = 0,
        routing_type: RoutingType | None = None,
        properties: dict[str, Any] | None = None,
        annotations: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        user: str | None = None,
        message_id: int = 0,
    ) -> None:
        self.message_id = message_id
        self.address = address
        self.body = body
        self.protocol = protocol
        self.codec = codec
        self.durable = durable
        self.priority = priority if 0 <= priority <= 9 else (9 if priority > 9 else 0)
        self.expiration = expiration
        self.timestamp = timestamp
        self.routing_type = routing_type
        self._properties = properties
        # broker-added annotations (original address on a DLA move, ...), visible to every protocol
        self.annotations = annotations
        # protocol-specific fields that must survive storage (MQTT retain flag, STOMP headers...)
        self.extra = extra
        self.user = user
        self.large = None
        self.ref_count = 0
        # True once the message record is in the journal: it must be deleted there when the
        # last reference goes, whichever queue that is
        self.stored = False
        # the address memory account this message is counted in while in memory
        self.usage = None
        self.size = MESSAGE_OVERHEAD_BYTES + len(body)

    @classmethod
    def received(
        cls,
        address: str,
        body: bytes,
        protocol: str,
        codec: MessageCodec,
        durable: bool,
        priority: int,
        expiration: int,
        timestamp: int,
    ) -> Message:
        """A message as a protocol just received it: ``Message(...)`` with the receive path's
        arguments, positional and without the keyword parsing (one call per message)."""
        message = _new_message(cls)
        message.message_id = 0
        message.address = address
        message.body = body
        message.protocol = protocol
        message.codec = codec
        message.durable = durable
        message.priority = priority if 0 <= priority <= 9 else (9 if priority > 9 else 0)
        message.expiration = expiration
        message.timestamp = timestamp
        message.routing_type = None
        message._properties = None
        message.annotations = None
        message.extra = None
        message.user = None
        message.large = None
        message.ref_count = 0
        message.stored = False
        message.usage = None
        message.size = MESSAGE_OVERHEAD_BYTES + len(body)
        return message

    @property
    def properties(self) -> dict[str, Any]:
        """Application properties, decoded by the producing protocol's codec on first access."""
        props = self._properties
        if props is None:
            props = self._properties = self.codec.decode_properties(self)
        return props

    def get_property(self, name: str, default: Any = None) -> Any:
        """A property by name: broker annotations first, then application properties."""
        annotations = self.annotations
        if annotations and name in annotations:
            return annotations[name]
        return self.properties.get(name, default)

    @property
    def duplicate_id(self) -> bytes | str | None:
        """The `_AMQ_DUPL_ID` property, if set."""
        props = self._properties
        if props is not None:
            return props.get(DUPLICATE_ID_PROPERTY)
        return self.codec.duplicate_id(self)

    def is_expired(self, now_ms: int) -> bool:
        return self.expiration != 0 and now_ms >= self.expiration

    def copy(self, *, address: str | None = None, annotations: Mapping[str, Any] | None = None) -> Message:
        """A copy for a move (DLA, expiry): new id assigned by the caller, same body."""
        merged = dict(self.annotations or {})
        if annotations:
            merged.update(annotations)
        clone = Message(
            address=self.address if address is None else address,
            body=self.body,
            protocol=self.protocol,
            codec=self.codec,
            durable=self.durable,
            priority=self.priority,
            expiration=self.expiration,
            timestamp=self.timestamp,
            routing_type=self.routing_type,
            properties=self._properties,
            annotations=merged or None,
            extra=self.extra,
            user=self.user,
        )
        clone.large = self.large
        return clone

    # -- persistence ------------------------------------------------------------------------
    def encode(self) -> bytes:
        """The journal/page form of this message (msgpack; properties are not stored separately
        for protocols whose body carries them)."""
        # a codec whose protocol keeps the properties inside the body (AMQP) re-derives them;
        # for every other message they are stored with it
        store_props = None if getattr(self.codec, "properties_in_body", False) else self.properties
        return _packer().pack(
            (
                1,
                self.address,
                self.protocol,
                self.body,
                self.durable,
                self.priority,
                self.expiration,
                self.timestamp,
                None if self.routing_type is None else self.routing_type.value,
                store_props,
                self.annotations,
                self.extra,
                self.user,
            ),
        )

    @classmethod
    def decode(
        cls,
        message_id: int,
        data: bytes,
        codecs: Mapping[str, MessageCodec] | Callable[[str], MessageCodec],
        large_store: Any = None,
    ) -> Message:
        """Inverse of :meth:`encode`; ``codecs`` maps protocol names to their codec;
        ``large_store`` is where a large message's body file is. Fills the slots directly:
        recovery decodes every stored message, so this is on the failover path."""
        (
            _version,
            address,
            protocol,
            body,
            durable,
            priority,
            expiration,
            timestamp,
            routing,
            props,
            annotations,
            extra,
            user,
        ) = _unpackb(data, raw=False, strict_map_key=False)
        codec = codecs(protocol) if callable(codecs) else codecs.get(protocol, NO_CODEC)
        message = _new_message(cls)
        message.message_id = message_id
        message.address = address
        message.body = body
        message.protocol = protocol
        message.codec = codec
        message.durable = durable
        message.priority = priority
        message.expiration = expiration
        message.timestamp = timestamp
        message.routing_type = None if routing is None else RoutingType(routing)
        message._properties = props
        message.annotations = dict(annotations) if annotations else annotations
        message.extra = dict(extra) if extra else extra
        message.user = user
        message.large = None
        if extra and LARGE_EXTRA in extra:
            size, head_length = extra[LARGE_EXTRA]
            message.large = LargeBody(large_store, message_id, size, head_length)
        message.ref_count = 0
        message.stored = False
        message.usage = None
        message.size = MESSAGE_OVERHEAD_BYTES + len(body)
        return message

    def __repr__(self) -> str:
        return (
            f"Message(id={self.message_id}, address={self.address!r}, protocol={self.protocol}, "
            f"durable={self.durable}, size={self.size})"
        )


class LargeBody:
    """A message body kept in a file of the large-message store (``<message_id>.msg``): the
    message holds only its head (the protocol's header and properties) in memory.

    ``head_length`` is where the body begins in the file (AMQP: after the header, annotations
    and properties sections), so a redelivery can send a new header followed by the rest.
    """

    __slots__ = ("head_length", "message_id", "released", "size", "store")

    def __init__(self, store: Any, message_id: int, size: int, head_length: int) -> None:
        self.store = store
        self.message_id = message_id
        self.size = size
        self.head_length = head_length
        self.released = False

    def release(self) -> None:
        """The last reference went: delete the file (in the background)."""
        if self.released or self.store is None:
            return
        self.released = True
        store, message_id = self.store, self.message_id

        async def delete() -> None:
            try:
                await store.delete(message_id)
            except Exception as error:  # noqa: BLE001 - an orphan file is cleaned at start
                logging.getLogger("pybroker.storage").warning(
                    "could not delete large message file %s: %s", message_id, error
                )

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(delete())

    def __repr__(self) -> str:
        return f"LargeBody(message_id={self.message_id}, size={self.size})"


LARGE_EXTRA = "_large"


class MessageReference:
    """A message's place in one queue: its delivery count and who holds it now."""

    __slots__ = ("consumer", "delivery_count", "excluded", "message", "page", "queue", "scheduled")

    def __init__(self, message: Message, queue: Any, delivery_count: int = 0) -> None:
        self.message = message
        self.queue = queue
        self.delivery_count = delivery_count
        self.consumer: Any = None
        self.scheduled = 0
        # consumer ids that must not get this reference again (AMQP undeliverable-here)
        self.excluded: set[int] | None = None
        # (page, index) for a reference read back from a page file
        self.page: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return (
            f"MessageReference(message={self.message.message_id}, queue={self.queue.name!r}, "
            f"delivery_count={self.delivery_count})"
        )


class IdGenerator:
    """Message/queue id source. Ids are unique across restarts: the storage manager seeds it
    above every id it recovered (and reserves blocks in the journal when persistent)."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)

    def next(self) -> int:
        return next(self._counter)

    def advance_past(self, value: int) -> None:
        current = next(self._counter)
        self._counter = itertools.count(max(current, value + 1))
