"""AMQP messages in the broker core: the core keeps the encoded bytes a producer sent.

Inbound, only the header (durable, priority, ttl) and the properties section (``to``, expiry)
are decoded; application properties are decoded lazily, when a filter or duplicate detection
asks. Outbound to an AMQP consumer, the original bytes go out unchanged on a first delivery;
a redelivery gets a new header (delivery-count), and a message the broker moved (DLA, expiry)
gets its ``x-opt-ORIG-*`` message annotations, as Artemis adds them.

Messages that came in through another protocol are converted with :func:`core_to_amqp`.
"""

from __future__ import annotations

import time
from typing import Any

from pybroker.broker.message import DUPLICATE_ID_PROPERTY, Message

from .codec import (
    AMQPDecodeError,
    Symbol,
    build_message,
    head_length,
    head_view,
    parse_message,
    with_header,
    with_message_annotations,
)

PROTOCOL = "amqp"
_DUPLICATE_ID_BYTES = DUPLICATE_ID_PROPERTY.encode()
# bytes.find covers 8 KiB in about the time head_length() takes on a typical head (~1.8 us)
_SCAN_WHOLE_UP_TO = 8192

# Artemis annotations for moved messages (core property -> AMQP message annotation)
_ANNOTATION_NAMES = {
    "_AMQ_ORIG_ADDRESS": "x-opt-ORIG-ADDRESS",
    "_AMQ_ORIG_QUEUE": "x-opt-ORIG-QUEUE",
    "_AMQ_ORIG_MESSAGE_ID": "x-opt-ORIG-MESSAGE-ID",
    "_AMQ_ORIG_ROUTING_TYPE": "x-opt-ORIG-ROUTING-TYPE",
    "_AMQ_ACTUAL_EXPIRY": "x-opt-ACTUAL-EXPIRY",
}


class AMQPMessageCodec:
    """The core's view of AMQP-encoded messages (see :class:`pybroker.broker.message.MessageCodec`)."""

    protocol = PROTOCOL
    properties_in_body = True

    def decode_properties(self, message: Message) -> dict[str, Any]:
        try:
            parsed = parse_message(message.body)
            return {str(key): value for key, value in parsed.application_properties.items()}
        except AMQPDecodeError:
            return {}

    def header_fields(self, message: Message) -> dict[str, Any]:
        """Properties-section fields for filters (JMSCorrelationID, JMSType, ...)."""
        try:
            parsed = parse_message(message.body)
            fields = parsed.properties
            return {
                "message_id": fields.message_id,
                "correlation_id": fields.correlation_id,
                "subject": fields.subject,
                "user_id": fields.user_id,
                "group_id": fields.group_id,
                "group_sequence": fields.group_sequence,
                "message_annotations": parsed.message_annotations,
            }
        except AMQPDecodeError:
            return {}

    def duplicate_id(self, message: Message) -> Any:
        # cheap pre-check: most messages carry no duplicate id, and then nothing is decoded
        # (find, not ``in``: bytes.__contains__ first tries the argument as an int and pays
        # for a TypeError on every call). The id can only be in the sections before the body:
        # past a few KiB, finding where the body starts is cheaper than scanning it.
        body = message.body
        end = len(body)
        if end > _SCAN_WHOLE_UP_TO:
            try:
                head = head_length(body)
            except AMQPDecodeError:
                head = None  # decoding the properties reports it
            if head is not None:
                end = head
        if body.find(_DUPLICATE_ID_BYTES, 0, end) < 0:
            return None
        return message.properties.get(DUPLICATE_ID_PROPERTY)


AMQP_CODEC = AMQPMessageCodec()
_received = Message.received
_time = time.time


def amqp_to_core(data: bytes, address: str, *, now_ms: int | None = None) -> tuple[Message, Any]:
    """Build a core message from AMQP bytes (header and properties decoded, nothing else);
    returns the message and a view with ``header``, ``properties`` and ``to``."""
    header, properties, application_properties = head_view(data)
    message = _core_message(data, address, header, properties, application_properties, now_ms)
    return message, _RoutingView(data, header, properties)


def amqp_message(data: bytes, address: str) -> Message:
    """:func:`amqp_to_core` without the view: the receive path of a link whose address and
    routing type are known."""
    header, properties, application_properties = head_view(data)
    return _core_message(data, address, header, properties, application_properties, None)


def _core_message(data: bytes, address: str, header: Any, properties: Any,
                  application_properties: bool, now_ms: int | None) -> Message:
    now = int(_time() * 1000) if now_ms is None else now_ms
    expiration = properties.absolute_expiry_time or 0
    if not expiration and header.ttl:
        expiration = now + header.ttl
    message = _received(
        address, data, PROTOCOL, AMQP_CODEC, header.durable, header.priority, expiration,
        properties.creation_time or now,
    )
    if not application_properties:
        # none to decode: routing's duplicate-id check then reads nothing of the body
        message._properties = {}
    return message


class _RoutingView:
    """What the receive path knows of a message; the rest decodes on first access."""

    __slots__ = ("_parsed", "data", "header", "properties")

    def __init__(self, data: bytes, header: Any, properties: Any) -> None:
        self.data = data
        self.header = header
        self.properties = properties
        self._parsed = None

    @property
    def to(self) -> str | None:
        return self.properties.to

    def __getattr__(self, name: str) -> Any:
        # message annotations and the other sections: from a full parse, made once
        parsed = self._parsed
        if parsed is None:
            parsed = self._parsed = parse_message(self.data)
        return getattr(parsed, name)


def core_to_amqp(message: Message, delivery_count: int) -> bytes:
    """The bytes to send an AMQP consumer for ``message`` at ``delivery_count``."""
    if message.protocol == PROTOCOL:
        annotations = message.annotations
        if delivery_count == 0 and not annotations:
            return message.body
        parsed = parse_message(message.body)
        data = with_header(parsed, delivery_count=delivery_count) if delivery_count else message.body
        if annotations:
            if delivery_count:
                parsed = parse_message(data)
            updates = {
                Symbol(_ANNOTATION_NAMES.get(key, key)): value for key, value in annotations.items()
            }
            data = with_message_annotations(parsed, updates)
        return data
    return _convert_foreign(message, delivery_count)


def to_portable(message: Message) -> Any:
    """The neutral view of an AMQP message (see :mod:`pybroker.protocol.convert`)."""
    from pybroker.protocol.convert import PortableMessage

    data = message.body
    if message.large is not None:
        data = _read_large(message)
    parsed = parse_message(data)
    kind = parsed.body_kind
    text = False
    if kind is None:
        body = b""
    else:
        value = parsed.body_value()
        if kind == "data":
            body = bytes(value)
        elif isinstance(value, str):
            body, text = value.encode("utf-8"), True
        elif isinstance(value, bytes | bytearray | memoryview):
            body = bytes(value)
        else:
            body, text = str(value).encode("utf-8"), True
    properties = parsed.properties
    return PortableMessage(
        body=body,
        text=text,
        content_type=properties.content_type,
        properties={str(k): v for k, v in parsed.application_properties.items()},
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        subject=properties.subject,
        user_id=properties.user_id,
        group_id=properties.group_id,
    )


#: a large AMQP message converted for another protocol is read whole: up to this size
MAX_CONVERTED_LARGE = 64 << 20


def _read_large(message: Message) -> bytes:
    """The whole AMQP bytes of a large message (for MQTT/STOMP consumers: those protocols get
    one frame per message, so the body is read into memory, up to MAX_CONVERTED_LARGE)."""
    large = message.large
    if large.size > MAX_CONVERTED_LARGE:
        raise ValueError(
            f"large message {large.message_id} ({large.size} bytes) is too big to convert for "
            f"another protocol (limit {MAX_CONVERTED_LARGE})"
        )
    with open(large.store.path(large.message_id), "rb") as handle:
        return handle.read()


_JMS_MSG_TYPE = Symbol("x-opt-jms-msg-type")
_JMS_BYTES_MESSAGE = 3
_JMS_TEXT_MESSAGE = 5


def _convert_foreign(message: Message, delivery_count: int) -> bytes:
    """A message from MQTT/STOMP as an AMQP message: text as an amqp-value string (a JMS
    TextMessage), bytes as a data section (a JMS BytesMessage)."""
    from pybroker.protocol.convert import portable

    view = portable(message)
    ttl = None
    if message.expiration:
        ttl = max(1, message.expiration - int(time.time() * 1000))
    properties: dict[str, Any] = {"to": message.address}
    for key in ("message_id", "correlation_id", "reply_to", "content_type", "subject", "user_id", "group_id"):
        value = getattr(view, key)
        if value is not None:
            properties[key] = value
    if message.timestamp:
        properties["creation_time"] = message.timestamp
    application_properties = {str(k): v for k, v in view.properties.items() if _is_simple(v)}
    annotations: dict[Any, Any] = {}
    for key in list(application_properties):
        if key in _ANNOTATION_NAMES:
            annotations[Symbol(_ANNOTATION_NAMES[key])] = application_properties.pop(key)
    if view.text:
        annotations[_JMS_MSG_TYPE] = _JMS_TEXT_MESSAGE
        body: Any = view.body.decode("utf-8", errors="replace")
        body_kind = "amqp-value"
    else:
        annotations[_JMS_MSG_TYPE] = _JMS_BYTES_MESSAGE
        body = view.body
        body_kind = "data"
    return build_message(
        body=body,
        body_kind=body_kind,
        durable=message.durable,
        priority=message.priority,
        ttl=ttl,
        delivery_count=delivery_count,
        properties=properties,
        application_properties=application_properties,
        message_annotations=annotations,
    )


def _is_simple(value: Any) -> bool:
    return value is None or isinstance(value, str | bytes | bool | int | float)
