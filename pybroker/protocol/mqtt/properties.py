"""MQTT 5 properties (§2.2.2): the typed :class:`Properties` value and its wire form.

Every property of §2.2.2.2 is one attribute of :class:`Properties`; ``None`` (or an empty tuple for
the two repeatable ones) means absent. ``_RULES`` is the spec's table in one place: identifier,
attribute, wire type, the packets (and the will) that may carry it, and value limits. Decoding
enforces it: an unknown identifier is a malformed packet (0x81); a property on a packet that may not
carry it, a second copy of a non-repeatable property, or a forbidden value (receive maximum 0, ...)
is a protocol error (0x82). Encoding enforces the same table and raises
:class:`~pybroker.protocol.mqtt.base.MQTTLocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum

from pybroker.protocol.mqtt.base import (
    MQTTLocalProtocolError,
    MQTTProtocolError,
    PacketType,
    ReasonCode,
)
from pybroker.protocol.mqtt.wire import (
    MAX_VARIABLE_BYTE_INTEGER,
    decode_binary,
    decode_utf8,
    decode_variable_byte_integer,
    encode_binary,
    encode_utf8,
    encode_variable_byte_integer,
)

#: The property context of will properties in a CONNECT payload (packet type 0 is reserved, so
#: it never clashes with a real packet type).
WILL_PROPERTIES = 0


class PropertyId(IntEnum):
    """MQTT 5 property identifiers (§2.2.2.2)."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """MQTT 5 properties of one packet (or of a will). Absent properties are ``None``.

    Byte properties that only take 0 or 1 (request_problem_information, retain_available, ...)
    decode as ``bool``. ``user_properties`` is an ordered tuple of ``(name, value)`` pairs (names
    may repeat, order is kept [MQTT-3.3.2-18]); ``subscription_identifiers`` holds the
    Subscription Identifiers (several on a server-to-client PUBLISH, at most one on SUBSCRIBE).
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: bool | None = None
    will_delay_interval: int | None = None
    request_response_information: bool | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: bool | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: bool | None = None
    subscription_identifier_available: bool | None = None
    shared_subscription_available: bool | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.present().items())
        return f"Properties({shown})"

    def present(self) -> dict[str, object]:
        """The properties that are set, by attribute name (for logs and tests)."""
        return {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if getattr(self, field.name) not in (None, ())
        }


#: The shared empty value: packets default to it, and the decoder returns it for "no properties".
EMPTY_PROPERTIES = Properties()

# Wire types of §2.2.2.2 (FLAG is a Byte restricted to 0/1, decoded as bool).
_BYTE, _FLAG, _TWO, _FOUR, _VBI, _UTF8, _BINARY, _PAIR = range(8)

_P = PacketType
_ACKS = frozenset({_P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP})
_MESSAGE = frozenset({_P.PUBLISH, WILL_PROPERTIES})


@dataclass(frozen=True, slots=True)
class _Rule:
    identifier: PropertyId
    attribute: str
    kind: int
    contexts: frozenset[int]
    repeatable_in: frozenset[int] = frozenset()
    check: Callable[[int], str | None] | None = None


def _not_zero(value: int) -> str | None:
    return "must not be 0" if value == 0 else None


def _zero_or_one(value: int) -> str | None:
    return None if value in (0, 1) else f"must be 0 or 1, not {value}"


_RULES: tuple[_Rule, ...] = (
    _Rule(PropertyId.PAYLOAD_FORMAT_INDICATOR, "payload_format_indicator", _BYTE, _MESSAGE,
          check=_zero_or_one),
    _Rule(PropertyId.MESSAGE_EXPIRY_INTERVAL, "message_expiry_interval", _FOUR, _MESSAGE),
    _Rule(PropertyId.CONTENT_TYPE, "content_type", _UTF8, _MESSAGE),
    _Rule(PropertyId.RESPONSE_TOPIC, "response_topic", _UTF8, _MESSAGE),
    _Rule(PropertyId.CORRELATION_DATA, "correlation_data", _BINARY, _MESSAGE),
    # Several on a PUBLISH to a subscriber [MQTT-3.3.4-3]; at most one on SUBSCRIBE (§3.8.2.1.2).
    _Rule(PropertyId.SUBSCRIPTION_IDENTIFIER, "subscription_identifiers", _VBI,
          frozenset({_P.PUBLISH, _P.SUBSCRIBE}), repeatable_in=frozenset({_P.PUBLISH}),
          check=_not_zero),
    _Rule(PropertyId.SESSION_EXPIRY_INTERVAL, "session_expiry_interval", _FOUR,
          frozenset({_P.CONNECT, _P.CONNACK, _P.DISCONNECT})),
    _Rule(PropertyId.ASSIGNED_CLIENT_IDENTIFIER, "assigned_client_identifier", _UTF8,
          frozenset({_P.CONNACK})),
    _Rule(PropertyId.SERVER_KEEP_ALIVE, "server_keep_alive", _TWO, frozenset({_P.CONNACK})),
    _Rule(PropertyId.AUTHENTICATION_METHOD, "authentication_method", _UTF8,
          frozenset({_P.CONNECT, _P.CONNACK, _P.AUTH})),
    _Rule(PropertyId.AUTHENTICATION_DATA, "authentication_data", _BINARY,
          frozenset({_P.CONNECT, _P.CONNACK, _P.AUTH})),
    _Rule(PropertyId.REQUEST_PROBLEM_INFORMATION, "request_problem_information", _FLAG,
          frozenset({_P.CONNECT})),
    _Rule(PropertyId.WILL_DELAY_INTERVAL, "will_delay_interval", _FOUR,
          frozenset({WILL_PROPERTIES})),
    _Rule(PropertyId.REQUEST_RESPONSE_INFORMATION, "request_response_information", _FLAG,
          frozenset({_P.CONNECT})),
    _Rule(PropertyId.RESPONSE_INFORMATION, "response_information", _UTF8,
          frozenset({_P.CONNACK})),
    _Rule(PropertyId.SERVER_REFERENCE, "server_reference", _UTF8,
          frozenset({_P.CONNACK, _P.DISCONNECT})),
    _Rule(PropertyId.REASON_STRING, "reason_string", _UTF8,
          frozenset({_P.CONNACK, _P.SUBACK, _P.UNSUBACK, _P.DISCONNECT, _P.AUTH}) | _ACKS),
    _Rule(PropertyId.RECEIVE_MAXIMUM, "receive_maximum", _TWO,
          frozenset({_P.CONNECT, _P.CONNACK}), check=_not_zero),
    _Rule(PropertyId.TOPIC_ALIAS_MAXIMUM, "topic_alias_maximum", _TWO,
          frozenset({_P.CONNECT, _P.CONNACK})),
    # Topic Alias 0 and aliases above the maximum are checked by the codec (reason 0x94).
    _Rule(PropertyId.TOPIC_ALIAS, "topic_alias", _TWO, frozenset({_P.PUBLISH})),
    _Rule(PropertyId.MAXIMUM_QOS, "maximum_qos", _BYTE, frozenset({_P.CONNACK}),
          check=_zero_or_one),
    _Rule(PropertyId.RETAIN_AVAILABLE, "retain_available", _FLAG, frozenset({_P.CONNACK})),
    _Rule(PropertyId.USER_PROPERTY, "user_properties", _PAIR,
          frozenset({_P.CONNECT, _P.CONNACK, _P.PUBLISH, WILL_PROPERTIES, _P.SUBSCRIBE,
                     _P.SUBACK, _P.UNSUBSCRIBE, _P.UNSUBACK, _P.DISCONNECT, _P.AUTH}) | _ACKS,
          repeatable_in=frozenset(range(16))),
    _Rule(PropertyId.MAXIMUM_PACKET_SIZE, "maximum_packet_size", _FOUR,
          frozenset({_P.CONNECT, _P.CONNACK}), check=_not_zero),
    _Rule(PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE, "wildcard_subscription_available", _FLAG,
          frozenset({_P.CONNACK})),
    _Rule(PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE, "subscription_identifier_available",
          _FLAG, frozenset({_P.CONNACK})),
    _Rule(PropertyId.SHARED_SUBSCRIPTION_AVAILABLE, "shared_subscription_available", _FLAG,
          frozenset({_P.CONNACK})),
)
_RULES_BY_ID: dict[int, _Rule] = {rule.identifier: rule for rule in _RULES}
_REPEATABLE = frozenset({"subscription_identifiers", "user_properties"})


def allowed_properties(context: int) -> tuple[PropertyId, ...]:
    """The property identifiers a packet type (or ``WILL_PROPERTIES``) may carry."""
    return tuple(rule.identifier for rule in _RULES if context in rule.contexts)


def property_attribute(identifier: int) -> str:
    """The :class:`Properties` attribute holding property ``identifier``."""
    return _RULES_BY_ID[identifier].attribute


def context_name(context: int) -> str:
    """``PUBLISH``, ``CONNECT``, ... or ``will properties``, for messages."""
    return "will properties" if context == WILL_PROPERTIES else PacketType(context).name


def decode_properties(
    buffer: bytes, position: int, end: int, context: int
) -> tuple[Properties, int]:
    """Decode a property length and the properties after it, for packet type ``context``."""
    length, position = decode_variable_byte_integer(buffer, position, end)
    if length == 0:
        return EMPTY_PROPERTIES, position
    stop = position + length
    if stop > end:
        raise MQTTProtocolError(
            ReasonCode.MALFORMED_PACKET,
            f"property length {length} runs past the packet end",
        )
    values: dict[str, object] = {}
    user_properties: list[tuple[str, str]] = []
    subscription_identifiers: list[int] = []
    while position < stop:
        identifier, position = decode_variable_byte_integer(buffer, position, stop)
        rule = _RULES_BY_ID.get(identifier)
        if rule is None:
            raise MQTTProtocolError(
                ReasonCode.MALFORMED_PACKET, f"unknown property identifier 0x{identifier:02X}"
            )
        if context not in rule.contexts:
            raise MQTTProtocolError(
                ReasonCode.PROTOCOL_ERROR,
                f"property {rule.identifier.name} is not allowed in {context_name(context)}",
            )
        kind = rule.kind
        value: object
        if kind == _BYTE or kind == _FLAG:
            if position >= stop:
                raise MQTTProtocolError(ReasonCode.MALFORMED_PACKET, "byte runs past properties")
            value = buffer[position]
            position += 1
        elif kind == _TWO:
            if position + 2 > stop:
                raise MQTTProtocolError(ReasonCode.MALFORMED_PACKET, "integer runs past properties")
            value = (buffer[position] << 8) | buffer[position + 1]
            position += 2
        elif kind == _FOUR:
            if position + 4 > stop:
                raise MQTTProtocolError(ReasonCode.MALFORMED_PACKET, "integer runs past properties")
            value = int.from_bytes(buffer[position : position + 4], "big")
            position += 4
        elif kind == _VBI:
            value, position = decode_variable_byte_integer(buffer, position, stop)
        elif kind == _UTF8:
            value, position = decode_utf8(buffer, position, stop)
        elif kind == _BINARY:
            value, position = decode_binary(buffer, position, stop)
        else:  # _PAIR
            name, position = decode_utf8(buffer, position, stop)
            pair_value, position = decode_utf8(buffer, position, stop)
            user_properties.append((name, pair_value))
            continue
        if rule.check is not None:
            problem = rule.check(value)  # type: ignore[arg-type]
            if problem is not None:
                raise MQTTProtocolError(
                    ReasonCode.PROTOCOL_ERROR, f"property {rule.identifier.name} {problem}"
                )
        if kind == _FLAG:
            if value not in (0, 1):
                raise MQTTProtocolError(
                    ReasonCode.PROTOCOL_ERROR,
                    f"property {rule.identifier.name} must be 0 or 1, not {value}",
                )
            value = bool(value)
        if kind == _VBI:  # the subscription identifier, the only VBI property
            if subscription_identifiers and context not in rule.repeatable_in:
                raise MQTTProtocolError(
                    ReasonCode.PROTOCOL_ERROR,
                    f"property {rule.identifier.name} appears twice in {context_name(context)}",
                )
            subscription_identifiers.append(value)  # type: ignore[arg-type]
            continue
        if rule.attribute in values:
            raise MQTTProtocolError(
                ReasonCode.PROTOCOL_ERROR,
                f"property {rule.identifier.name} appears twice in {context_name(context)}",
            )
        values[rule.attribute] = value
    if user_properties:
        values["user_properties"] = tuple(user_properties)
    if subscription_identifiers:
        values["subscription_identifiers"] = tuple(subscription_identifiers)
    return Properties(**values), position  # type: ignore[arg-type]


def _integer(value: object, limit: int, name: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= limit:
        raise MQTTLocalProtocolError(f"property {name} must be an integer 0..{limit}, not {value!r}")
    return value


def encode_properties(properties: Properties, context: int) -> bytes:
    """The wire form (length then properties) of ``properties`` on packet type ``context``."""
    if properties is EMPTY_PROPERTIES:
        return b"\x00"
    if not isinstance(properties, Properties):
        raise MQTTLocalProtocolError(
            f"properties must be a Properties, not {type(properties).__name__}"
        )
    body = bytearray()
    for rule in _RULES:
        value = getattr(properties, rule.attribute)
        if value is None or value == ():
            continue
        name = rule.identifier.name
        if context not in rule.contexts:
            raise MQTTLocalProtocolError(
                f"property {name} is not allowed in {context_name(context)}"
            )
        kind = rule.kind
        if rule.attribute in _REPEATABLE:
            items = tuple(value)
            if len(items) > 1 and context not in rule.repeatable_in:
                raise MQTTLocalProtocolError(
                    f"property {name} may appear only once in {context_name(context)}"
                )
        else:
            items = (value,)
        for item in items:
            body += encode_variable_byte_integer(rule.identifier)
            if kind == _BYTE or kind == _FLAG:
                number = _integer(item, 1 if kind == _FLAG else 255, name)
                if rule.check is not None and (problem := rule.check(number)) is not None:
                    raise MQTTLocalProtocolError(f"property {name} {problem}")
                body.append(number)
            elif kind == _TWO:
                number = _integer(item, 65_535, name)
                if rule.check is not None and (problem := rule.check(number)) is not None:
                    raise MQTTLocalProtocolError(f"property {name} {problem}")
                body += number.to_bytes(2, "big")
            elif kind == _FOUR:
                number = _integer(item, 0xFFFF_FFFF, name)
                if rule.check is not None and (problem := rule.check(number)) is not None:
                    raise MQTTLocalProtocolError(f"property {name} {problem}")
                body += number.to_bytes(4, "big")
            elif kind == _VBI:
                number = _integer(item, MAX_VARIABLE_BYTE_INTEGER, name)
                if rule.check is not None and (problem := rule.check(number)) is not None:
                    raise MQTTLocalProtocolError(f"property {name} {problem}")
                body += encode_variable_byte_integer(number)
            elif kind == _UTF8:
                body += encode_utf8(item, f"property {name}")
            elif kind == _BINARY:
                body += encode_binary(item, f"property {name}")
            else:
                try:
                    pair_name, pair_value = item
                except (TypeError, ValueError):
                    raise MQTTLocalProtocolError(
                        f"user property {item!r} is not a (name, value) pair"
                    ) from None
                body += encode_utf8(pair_name, "user property name")
                body += encode_utf8(pair_value, "user property value")
    return encode_variable_byte_integer(len(body)) + bytes(body)


__all__ = [
    "EMPTY_PROPERTIES",
    "WILL_PROPERTIES",
    "Properties",
    "PropertyId",
    "allowed_properties",
    "context_name",
    "decode_properties",
    "encode_properties",
    "property_attribute",
]
