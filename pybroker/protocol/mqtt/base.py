"""Wire constants and errors shared by the MQTT codec modules.

Packet types (MQTT 3.1.1 §2.2.1, 5.0 §2.1.2), the MQTT 5 reason codes (§2.4) with the set of codes
each packet may carry, the MQTT 3 CONNACK return codes, and the errors:

* :class:`MQTTProtocolError`: the peer sent something the protocol forbids. It carries the v5
  reason code and the packet the server should answer with before closing (``response``).
* :class:`MQTTLocalProtocolError`: our own side asked the codec to send something the protocol
  forbids (a bug in the caller, or a packet the peer's limits do not allow).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from pybroker.errors import ProtocolError


class PacketType(IntEnum):
    """MQTT control packet types (the high nibble of the first byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ReasonCode(IntEnum):
    """MQTT 5 reason codes (§2.4). Values below 0x80 are successes, 0x80 and above failures."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2

    @property
    def is_failure(self) -> bool:
        """True for 0x80 and above."""
        return self >= 0x80


class ConnectReturnCode(IntEnum):
    """MQTT 3.1 / 3.1.1 CONNACK return codes (3.1.1 §3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


_R = ReasonCode

#: The reason codes each v5 packet may carry (§3.x.2.1 tables). AUTH's 0x00 comes from the server.
VALID_REASON_CODES: dict[PacketType, frozenset[int]] = {
    PacketType.CONNACK: frozenset(
        {
            _R.SUCCESS, _R.UNSPECIFIED_ERROR, _R.MALFORMED_PACKET, _R.PROTOCOL_ERROR,
            _R.IMPLEMENTATION_SPECIFIC_ERROR, _R.UNSUPPORTED_PROTOCOL_VERSION,
            _R.CLIENT_IDENTIFIER_NOT_VALID, _R.BAD_USER_NAME_OR_PASSWORD, _R.NOT_AUTHORIZED,
            _R.SERVER_UNAVAILABLE, _R.SERVER_BUSY, _R.BANNED, _R.BAD_AUTHENTICATION_METHOD,
            _R.TOPIC_NAME_INVALID, _R.PACKET_TOO_LARGE, _R.QUOTA_EXCEEDED,
            _R.PAYLOAD_FORMAT_INVALID, _R.RETAIN_NOT_SUPPORTED, _R.QOS_NOT_SUPPORTED,
            _R.USE_ANOTHER_SERVER, _R.SERVER_MOVED, _R.CONNECTION_RATE_EXCEEDED,
        }
    ),
    PacketType.PUBACK: frozenset(
        {
            _R.SUCCESS, _R.NO_MATCHING_SUBSCRIBERS, _R.UNSPECIFIED_ERROR,
            _R.IMPLEMENTATION_SPECIFIC_ERROR, _R.NOT_AUTHORIZED, _R.TOPIC_NAME_INVALID,
            _R.PACKET_IDENTIFIER_IN_USE, _R.QUOTA_EXCEEDED, _R.PAYLOAD_FORMAT_INVALID,
        }
    ),
    PacketType.PUBREL: frozenset({_R.SUCCESS, _R.PACKET_IDENTIFIER_NOT_FOUND}),
    PacketType.SUBACK: frozenset(
        {
            _R.GRANTED_QOS_0, _R.GRANTED_QOS_1, _R.GRANTED_QOS_2, _R.UNSPECIFIED_ERROR,
            _R.IMPLEMENTATION_SPECIFIC_ERROR, _R.NOT_AUTHORIZED, _R.TOPIC_FILTER_INVALID,
            _R.PACKET_IDENTIFIER_IN_USE, _R.QUOTA_EXCEEDED,
            _R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED, _R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            _R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
        }
    ),
    PacketType.UNSUBACK: frozenset(
        {
            _R.SUCCESS, _R.NO_SUBSCRIPTION_EXISTED, _R.UNSPECIFIED_ERROR,
            _R.IMPLEMENTATION_SPECIFIC_ERROR, _R.NOT_AUTHORIZED, _R.TOPIC_FILTER_INVALID,
            _R.PACKET_IDENTIFIER_IN_USE,
        }
    ),
    PacketType.DISCONNECT: frozenset(
        {
            _R.NORMAL_DISCONNECTION, _R.DISCONNECT_WITH_WILL_MESSAGE, _R.UNSPECIFIED_ERROR,
            _R.MALFORMED_PACKET, _R.PROTOCOL_ERROR, _R.IMPLEMENTATION_SPECIFIC_ERROR,
            _R.NOT_AUTHORIZED, _R.SERVER_BUSY, _R.SERVER_SHUTTING_DOWN,
            _R.KEEP_ALIVE_TIMEOUT, _R.SESSION_TAKEN_OVER, _R.TOPIC_FILTER_INVALID,
            _R.TOPIC_NAME_INVALID, _R.RECEIVE_MAXIMUM_EXCEEDED, _R.TOPIC_ALIAS_INVALID,
            _R.PACKET_TOO_LARGE, _R.MESSAGE_RATE_TOO_HIGH, _R.QUOTA_EXCEEDED,
            _R.ADMINISTRATIVE_ACTION, _R.PAYLOAD_FORMAT_INVALID, _R.RETAIN_NOT_SUPPORTED,
            _R.QOS_NOT_SUPPORTED, _R.USE_ANOTHER_SERVER, _R.SERVER_MOVED,
            _R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED, _R.CONNECTION_RATE_EXCEEDED,
            _R.MAXIMUM_CONNECT_TIME, _R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            _R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
        }
    ),
    PacketType.AUTH: frozenset({_R.SUCCESS, _R.CONTINUE_AUTHENTICATION, _R.RE_AUTHENTICATE}),
}
VALID_REASON_CODES[PacketType.PUBREC] = VALID_REASON_CODES[PacketType.PUBACK]
VALID_REASON_CODES[PacketType.PUBCOMP] = VALID_REASON_CODES[PacketType.PUBREL]

#: MQTT 3 SUBACK return codes: granted QoS 0-2, or 0x80 failure (3.1.1 §3.9.3).
V3_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80})

_V3_RETURN_CODE_FOR_REASON: dict[int, ConnectReturnCode] = {
    _R.SUCCESS: ConnectReturnCode.ACCEPTED,
    _R.UNSUPPORTED_PROTOCOL_VERSION: ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
    _R.CLIENT_IDENTIFIER_NOT_VALID: ConnectReturnCode.IDENTIFIER_REJECTED,
    _R.SERVER_UNAVAILABLE: ConnectReturnCode.SERVER_UNAVAILABLE,
    _R.SERVER_BUSY: ConnectReturnCode.SERVER_UNAVAILABLE,
    _R.BAD_USER_NAME_OR_PASSWORD: ConnectReturnCode.BAD_USER_NAME_OR_PASSWORD,
    _R.NOT_AUTHORIZED: ConnectReturnCode.NOT_AUTHORIZED,
    _R.BANNED: ConnectReturnCode.NOT_AUTHORIZED,
}
_REASON_FOR_V3_RETURN_CODE: dict[int, ReasonCode] = {
    ConnectReturnCode.ACCEPTED: _R.SUCCESS,
    ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION: _R.UNSUPPORTED_PROTOCOL_VERSION,
    ConnectReturnCode.IDENTIFIER_REJECTED: _R.CLIENT_IDENTIFIER_NOT_VALID,
    ConnectReturnCode.SERVER_UNAVAILABLE: _R.SERVER_UNAVAILABLE,
    ConnectReturnCode.BAD_USER_NAME_OR_PASSWORD: _R.BAD_USER_NAME_OR_PASSWORD,
    ConnectReturnCode.NOT_AUTHORIZED: _R.NOT_AUTHORIZED,
}


def v3_connect_return_code(code: int) -> ConnectReturnCode | None:
    """The MQTT 3 CONNACK return code for a CONNACK code, or None if v3 has no equivalent.

    Accepts an MQTT 3 return code (0-5, returned as is) or a v5 reason code (0x80 and above).
    MQTT 3.1.1 §3.2.2.3: when no return code applies the server closes without a CONNACK.
    """
    if 0 <= code <= 5:
        return ConnectReturnCode(code)
    return _V3_RETURN_CODE_FOR_REASON.get(code)


def v5_connack_reason_code(code: int) -> ReasonCode:
    """The v5 CONNACK reason code for a CONNACK code given as a v3 return code (1-5) or a v5 code."""
    if 0 <= code <= 5:
        return _REASON_FOR_V3_RETURN_CODE[code]
    return ReasonCode(code)


class MQTTProtocolError(ProtocolError):
    """The peer broke the MQTT protocol; the connection must be closed.

    ``reason_code`` is the v5 reason code naming the fault (0x81 malformed packet, 0x82 protocol
    error, 0x95 packet too large, ...). ``response`` is the packet to send before closing, already
    chosen for the negotiated version and connection phase (pass it to ``MQTTCodec.send``):
    a v5 ``ConnAck`` while the CONNACK has not been sent yet, a v5 ``Disconnect`` afterwards,
    a v3 ``ConnAck`` with a return code where MQTT 3.1.1 demands one (unacceptable protocol level,
    identifier rejected), otherwise ``None``: just close.
    """

    def __init__(self, reason_code: int, message: str, *, response: Any = None) -> None:
        self.reason_code = ReasonCode(reason_code)
        self.message = message
        self.response = response
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} (reason code 0x{self.reason_code:02X} {self.reason_code.name})"


class UnsupportedProtocolVersionError(MQTTProtocolError):
    """A CONNECT naming a protocol (name, level) this codec does not speak.

    ``protocol_name`` and ``protocol_level`` are what the client sent. For a known name with an
    unknown level, ``response`` is a v3.1.1-format CONNACK with return code 0x01 (unacceptable
    protocol version), as MQTT 3.1.1 §3.1.2.2 requires; for an unknown name it is ``None``.
    """

    def __init__(
        self, message: str, *, protocol_name: str, protocol_level: int, response: Any = None
    ) -> None:
        self.protocol_name = protocol_name
        self.protocol_level = protocol_level
        super().__init__(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, message, response=response)


class MQTTLocalProtocolError(ProtocolError):
    """Our side asked the codec to send a packet the protocol forbids (nothing was sent).

    The codec's state is unchanged, so the caller may carry on with something else.
    """


class PacketTooLargeError(MQTTLocalProtocolError):
    """A packet to send is larger than the Maximum Packet Size the peer announced.

    MQTT 5 §3.1.2.11.4: the server discards such a PUBLISH and behaves as if it had been sent.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message)


__all__ = [
    "V3_SUBACK_CODES",
    "VALID_REASON_CODES",
    "ConnectReturnCode",
    "MQTTLocalProtocolError",
    "MQTTProtocolError",
    "PacketTooLargeError",
    "PacketType",
    "ReasonCode",
    "UnsupportedProtocolVersionError",
    "v3_connect_return_code",
    "v5_connack_reason_code",
]
