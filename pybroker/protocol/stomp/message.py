"""STOMP messages in the broker core: SEND frames in, MESSAGE frame headers out.

A message that came in through STOMP keeps its body bytes untouched as ``Message.body``. The
SEND headers are split the way Artemis's ``StompUtils`` splits them:

* headers that describe the frame (``destination``, ``destination-type``, ``transaction``,
  ``receipt``, ``content-length``) are not kept (Artemis keeps most of them as properties and
  echoes them on MESSAGE frames; we do not);
* ``persistent``, ``priority`` and ``expires`` (absolute ms since the epoch, 0 = never) become the
  core message's durability, priority and expiration; the timestamp is the arrival time;
* ``correlation-id``, ``reply-to``, ``type``, ``content-type`` and ``JMSXGroupID`` go to
  ``Message.extra`` (keys ``correlation_id``, ``reply_to``, ``type``, ``content_type``,
  ``group_id``, the names the filter module reads for ``JMSCorrelationID``/``JMSType``/...), as
  does the acceptor prefix the destination was sent with (``prefix``), so a MESSAGE frame names
  the destination as the producer wrote it;
* ``AMQ_SCHEDULED_DELAY`` / ``AMQ_SCHEDULED_TIME`` become the ``_AMQ_SCHED_DELIVERY`` property;
* every other header is an application property (string valued), ``_AMQ_DUPL_ID`` included, so
  selectors and duplicate detection see them.

The properties are stored with the message (``properties_in_body`` is False): the body alone
cannot give them back.

Outbound, :func:`message_headers` builds the standard MESSAGE headers (``destination``,
``expires``, ``redelivered``, ``priority``, ``persistent``, ``timestamp``, ...) and one header per
property, for messages of any protocol: those from AMQP or MQTT go through
:func:`pybroker.protocol.convert.portable`.
"""

from __future__ import annotations

from typing import Any

from pybroker.broker.message import DUPLICATE_ID_PROPERTY, Message
from pybroker.config.model import RoutingType

from .frames import Frame, StompProtocolError

PROTOCOL = "stomp"

#: Artemis's scheduled-delivery property (``Message.HDR_SCHEDULED_DELIVERY_TIME``).
SCHEDULED_DELIVERY_PROPERTY = "_AMQ_SCHED_DELIVERY"

#: SEND headers that describe the frame rather than the message.
FRAME_HEADERS = frozenset(
    {"destination", "destination-type", "transaction", "receipt", "content-length"}
)

# SEND header -> Message.extra key
_EXTRA_HEADERS = {
    "correlation-id": "correlation_id",
    "reply-to": "reply_to",
    "type": "type",
    "content-type": "content_type",
    "JMSXGroupID": "group_id",
}

_CONSUMED_HEADERS = FRAME_HEADERS | frozenset(
    {"persistent", "priority", "expires", "AMQ_SCHEDULED_DELAY", "AMQ_SCHEDULED_TIME"}
) | frozenset(_EXTRA_HEADERS)

# Headers of a MESSAGE frame that a property must not shadow (the standard ones come first and
# the first occurrence of a header is its value, but a property called "destination" would still
# confuse readers that take the last one).
_RESERVED_OUT = frozenset(
    {
        "destination",
        "message-id",
        "subscription",
        "ack",
        "content-length",
        "expires",
        "redelivered",
        "priority",
        "persistent",
        "timestamp",
        "correlation-id",
        "reply-to",
        "type",
        "content-type",
        "JMSXUserID",
        "destination-type",
    }
)


class StompMessageCodec:
    """The core's view of STOMP messages (see :class:`pybroker.broker.message.MessageCodec`)."""

    protocol = PROTOCOL
    properties_in_body = False

    def decode_properties(self, message: Message) -> dict[str, Any]:
        # The properties are given when the message is built and stored with it.
        return {}

    def duplicate_id(self, message: Message) -> Any:
        return message.properties.get(DUPLICATE_ID_PROPERTY)


CODEC = StompMessageCodec()


def _parse_long(frame: Frame, name: str, value: str) -> int:
    text = value.strip()
    try:
        number = int(text, 10)
    except ValueError:
        raise StompProtocolError(
            f"STOMP {frame.command} frame: header {name} is not a number: {value[:40]!r}"
        ) from None
    if not -(2**63) <= number < 2**63:
        raise StompProtocolError(
            f"STOMP {frame.command} frame: header {name} is out of range: {value[:40]!r}"
        )
    return number


def stomp_to_core(
    frame: Frame,
    address: str,
    *,
    routing_type: RoutingType | None,
    prefix: str | None,
    now_ms: int,
) -> Message:
    """Build the core message for a SEND frame bound for ``address``.

    Raises :class:`StompProtocolError` for a ``priority``, ``expires`` or scheduling header that
    is not a number.
    """
    headers = frame.header_map()
    priority = 4
    value = headers.get("priority")
    if value is not None:
        priority = _parse_long(frame, "priority", value)
        if not -128 <= priority <= 127:  # Artemis parses it as a Java byte
            raise StompProtocolError(
                f"STOMP {frame.command} frame: priority {value!r} is out of range"
            )
    durable = headers.get("persistent", "").strip().lower() == "true"
    expiration = 0
    value = headers.get("expires")
    if value is not None:
        expiration = max(0, _parse_long(frame, "expires", value))
    extra: dict[str, Any] = {}
    for header, key in _EXTRA_HEADERS.items():
        value = headers.get(header)
        if value is not None:
            extra[key] = value
    if prefix:
        extra["prefix"] = prefix
    properties: dict[str, Any] = {
        name: value for name, value in headers.items() if name not in _CONSUMED_HEADERS
    }
    value = headers.get("AMQ_SCHEDULED_DELAY")
    if value is not None:
        delay = _parse_long(frame, "AMQ_SCHEDULED_DELAY", value)
        if delay > 0:
            properties[SCHEDULED_DELIVERY_PROPERTY] = now_ms + delay
    value = headers.get("AMQ_SCHEDULED_TIME")
    if value is not None:
        when = _parse_long(frame, "AMQ_SCHEDULED_TIME", value)
        if when > 0:
            properties[SCHEDULED_DELIVERY_PROPERTY] = when
    return Message(
        address=address,
        body=frame.body,
        protocol=PROTOCOL,
        codec=CODEC,
        durable=durable,
        priority=priority,
        expiration=expiration,
        timestamp=now_ms,
        routing_type=routing_type,
        properties=properties,
        extra=extra or None,
    )


def header_text(value: Any) -> str:
    """A property value as header text (Java's ``toString`` spelling for booleans and null)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    # AMQP's typed numbers (UByte, ULong, ...) subclass int/float with a descriptive repr
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    return str(value)


def _is_text(content_type: str | None, body: bytes) -> bool:
    if content_type is not None:
        return content_type.strip().lower().startswith("text/")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def to_portable(message: Message) -> Any:
    """The neutral view of a STOMP message (see :mod:`pybroker.protocol.convert`).

    The body is text when ``content-type`` is ``text/*``, or when there is no content type and
    the body is valid UTF-8.
    """
    from pybroker.protocol.convert import PortableMessage

    extra = message.extra or {}
    content_type = extra.get("content_type")
    body = bytes(message.body)
    return PortableMessage(
        body=body,
        text=_is_text(content_type, body),
        content_type=content_type,
        properties=dict(message.properties),
        correlation_id=extra.get("correlation_id"),
        reply_to=extra.get("reply_to"),
        subject=extra.get("type"),
        group_id=extra.get("group_id"),
    )


def message_headers(message: Message, delivery_count: int) -> tuple[list[tuple[str, str]], bytes]:
    """The standard and property headers of a MESSAGE frame for ``message``, and its body.

    ``delivery_count`` is the number of failed deliveries so far (``redelivered`` is true when it
    is not 0). The caller adds ``subscription``, ``message-id`` and ``ack``.
    """
    if message.protocol == PROTOCOL:
        extra = message.extra or {}
        destination = extra.get("prefix", "") + message.address
        correlation_id = extra.get("correlation_id")
        reply_to = extra.get("reply_to")
        message_type = extra.get("type")
        content_type = extra.get("content_type")
        properties: dict[str, Any] = message.properties
        body = message.body
        routing_type = message.routing_type
    else:
        from pybroker.protocol.convert import portable

        view = portable(message)
        destination = message.address
        correlation_id = view.correlation_id
        reply_to = view.reply_to
        message_type = view.subject
        content_type = view.content_type
        properties = view.properties
        body = view.body
        routing_type = None
    headers: list[tuple[str, str]] = [("destination", destination)]
    if correlation_id is not None:
        headers.append(("correlation-id", header_text(correlation_id)))
    expiration, priority, timestamp = message.expiration, message.priority, message.timestamp
    headers += (
        # plain ints (the common case) without header_text's type checks
        ("expires", str(expiration) if type(expiration) is int else header_text(expiration)),
        ("redelivered", "true" if delivery_count > 0 else "false"),
        ("priority", str(priority) if type(priority) is int else header_text(priority)),
        ("persistent", "true" if message.durable else "false"),
    )
    if reply_to is not None:
        headers.append(("reply-to", header_text(reply_to)))
    headers.append(("timestamp", str(timestamp) if type(timestamp) is int else header_text(timestamp)))
    if message_type is not None:
        headers.append(("type", header_text(message_type)))
    if content_type is not None:
        headers.append(("content-type", header_text(content_type)))
    if message.user:
        headers.append(("JMSXUserID", message.user))
    if routing_type is not None:
        headers.append(("destination-type", routing_type.value))
    for name, value in properties.items():
        if name and name not in _RESERVED_OUT:
            headers.append((name, header_text(value)))
    annotations = message.annotations
    if annotations and message.protocol == PROTOCOL:
        # portable() already merged them for foreign messages
        for name, value in annotations.items():
            if name not in properties and name not in _RESERVED_OUT:
                headers.append((name, header_text(value)))
    return headers, bytes(body)


def encodable_headers(headers: list[tuple[str, str]], version: str) -> list[tuple[str, str]]:
    """``headers`` without those the negotiated version cannot carry.

    STOMP 1.0 has no escapes (no ':' in names, no line breaks anywhere); 1.1 cannot escape a
    carriage return. A property that cannot be written is left out rather than failing the
    delivery.
    """
    if version == "1.2":
        return headers
    kept = []
    for name, value in headers:
        if version == "1.0":
            if ":" in name or "\n" in name or "\r" in name or "\n" in value or "\r" in value:
                continue
        elif "\r" in name or "\r" in value:
            continue
        kept.append((name, value))
    return kept


__all__ = [
    "CODEC",
    "FRAME_HEADERS",
    "PROTOCOL",
    "SCHEDULED_DELIVERY_PROPERTY",
    "StompMessageCodec",
    "encodable_headers",
    "header_text",
    "message_headers",
    "stomp_to_core",
    "to_portable",
]
