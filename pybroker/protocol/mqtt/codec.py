"""Sans-I/O MQTT 3.1, 3.1.1 and 5.0 codec: bytes in, packets out; packets in, bytes out.

    codec = MQTTCodec(role="server", maximum_packet_size=None)
    codec.receive_data(data)          # whatever the socket gave
    event = codec.next_event()        # a packet, or NEED_DATA; call until NEED_DATA
    data = codec.send(packet)         # bytes to write, in the negotiated protocol version

Theory of operation
-------------------
Received bytes are kept as a list of chunks and only joined when a whole packet may be there (the
fixed header tells how long the packet is), so a large packet arriving in pieces is copied once,
and a read holding whole packets is decoded in place. Incomplete input never raises: it is
NEED_DATA. Header-level faults (reserved type, wrong fixed-header flags, a packet the peer may not
send now, a length beyond ``maximum_packet_size`` or a five-byte length) are raised as soon as the
bytes showing them arrive, before the rest of the packet.

The connection's phases form the table ``_TRANSITIONS``: (state, sender, packet type) -> next
state. Every packet sent or received must have an entry. A received packet without one is a
:class:`MQTTProtocolError`; a packet we try to send without one is an
:class:`MQTTLocalProtocolError` naming the state and the packet (nothing is sent, the state is
unchanged). A peer's protocol error moves the codec to FAILED: it refuses further input (the same
error is raised again), and only ``error.response`` may still be sent.

The protocol version is fixed by the CONNECT (decoded by a server, sent by a client). From then on
the codec also keeps the per-connection facts the wire format depends on: the peer's Maximum Packet
Size (larger packets are refused by ``send``; reason strings and user properties are dropped first,
as v5 allows), inbound Topic Aliases (resolved on decode, so handlers always see full topic names),
Request Problem Information, the CONNECT's Session Expiry Interval and Authentication Method.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from enum import IntEnum
from typing import Final, Literal

from pybroker.protocol.mqtt.base import (
    V3_SUBACK_CODES,
    VALID_REASON_CODES,
    ConnectReturnCode,
    MQTTLocalProtocolError,
    MQTTProtocolError,
    PacketTooLargeError,
    PacketType,
    ReasonCode,
    UnsupportedProtocolVersionError,
    v3_connect_return_code,
    v5_connack_reason_code,
)
from pybroker.protocol.mqtt.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    PROTOCOL_NAMES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    RetainHandling,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from pybroker.protocol.mqtt.properties import (
    EMPTY_PROPERTIES,
    WILL_PROPERTIES,
    Properties,
    decode_properties,
    encode_properties,
)
from pybroker.protocol.mqtt.topics import topic_filter_problem, topic_name_problem
from pybroker.protocol.mqtt.wire import (
    MAX_VARIABLE_BYTE_INTEGER,
    decode_binary,
    decode_two_byte_integer,
    decode_utf8,
    encode_binary,
    encode_utf8,
    encode_variable_byte_integer,
)


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`MQTTCodec.next_event` when no complete packet is buffered.
NEED_DATA: Final = _NeedData()

Role = Literal["server", "client"]
_SERVER: Final = "server"
_CLIENT: Final = "client"


class ConnectionState(IntEnum):
    """Phases of one MQTT connection, as seen by the codec."""

    AWAIT_CONNECT = 0  # nothing exchanged yet
    AWAIT_CONNACK = 1  # CONNECT exchanged, CONNACK not yet
    CONNECTED = 2  # an accepting CONNACK exchanged
    CLOSED = 3  # DISCONNECT or a refusing CONNACK exchanged: nothing more may flow
    FAILED = 4  # the peer broke the protocol: only the error response may be sent


_T = PacketType
_S = ConnectionState
_CLIENT_PACKETS = frozenset(
    {_T.CONNECT, _T.PUBLISH, _T.PUBACK, _T.PUBREC, _T.PUBREL, _T.PUBCOMP, _T.SUBSCRIBE,
     _T.UNSUBSCRIBE, _T.PINGREQ, _T.DISCONNECT, _T.AUTH}
)
_SERVER_PACKETS = frozenset(
    {_T.CONNACK, _T.PUBLISH, _T.PUBACK, _T.PUBREC, _T.PUBREL, _T.PUBCOMP, _T.SUBACK,
     _T.UNSUBACK, _T.PINGRESP, _T.DISCONNECT, _T.AUTH}
)
_SESSION_CLIENT = _CLIENT_PACKETS - {_T.CONNECT, _T.DISCONNECT}
_SESSION_SERVER = _SERVER_PACKETS - {_T.CONNACK, _T.DISCONNECT}

# (state, sender, packet type) -> next state. A client may send before it sees the CONNACK
# (MQTT 5 §3.1.4); the server sends nothing but AUTH before its CONNACK, and no DISCONNECT before
# it (§3.14). A CONNACK refusing the connection leads to CLOSED instead (_after_connect_exchange).
_TRANSITIONS: dict[tuple[ConnectionState, str, PacketType], ConnectionState] = {
    (_S.AWAIT_CONNECT, _CLIENT, _T.CONNECT): _S.AWAIT_CONNACK,
    **{(_S.AWAIT_CONNACK, _CLIENT, packet): _S.AWAIT_CONNACK for packet in _SESSION_CLIENT},
    (_S.AWAIT_CONNACK, _CLIENT, _T.DISCONNECT): _S.CLOSED,
    (_S.AWAIT_CONNACK, _SERVER, _T.AUTH): _S.AWAIT_CONNACK,
    (_S.AWAIT_CONNACK, _SERVER, _T.CONNACK): _S.CONNECTED,
    **{(_S.CONNECTED, _CLIENT, packet): _S.CONNECTED for packet in _SESSION_CLIENT},
    **{(_S.CONNECTED, _SERVER, packet): _S.CONNECTED for packet in _SESSION_SERVER},
    (_S.CONNECTED, _CLIENT, _T.DISCONNECT): _S.CLOSED,
    (_S.CONNECTED, _SERVER, _T.DISCONNECT): _S.CLOSED,
    # After a peer's protocol error: the one response the error names, then nothing.
    (_S.FAILED, _SERVER, _T.CONNACK): _S.CLOSED,
    (_S.FAILED, _SERVER, _T.DISCONNECT): _S.CLOSED,
    (_S.FAILED, _CLIENT, _T.DISCONNECT): _S.CLOSED,
}

# The same table indexed [sender][state][packet type number] for the hot path.
_TABLES: dict[str, tuple[tuple[ConnectionState | None, ...], ...]] = {
    sender: tuple(
        tuple(
            _TRANSITIONS.get((state, sender, PacketType(number))) if number else None
            for number in range(16)
        )
        for state in ConnectionState
    )
    for sender in (_CLIENT, _SERVER)
}

# Fixed-header flags each packet type must carry (PUBLISH's are DUP/QoS/RETAIN): §2.1.3 / §2.2.2.
_FIXED_FLAGS: tuple[int | None, ...] = (
    None, 0, 0, None, 0, 0, 0b0010, 0, 0b0010, 0, 0b0010, 0, 0, 0, 0, 0,
)
_PACKET_TYPES: tuple[PacketType | None, ...] = (None, *PacketType)
# Plain ints for the hot path (IntEnum attribute lookups cost more than the comparison).
_CONNECT, _CONNACK, _DISCONNECT, _AUTH = 1, 2, 14, 15
_FAILED = ConnectionState.FAILED

_MALFORMED = ReasonCode.MALFORMED_PACKET
_PROTOCOL = ReasonCode.PROTOCOL_ERROR
_PACK_H = struct.Struct(">H").pack
_PACK_BBH = struct.Struct(">BBH").pack
_PACK_BBBH = struct.Struct(">BBBH").pack
_ONE_BYTE = tuple(bytes((value,)) for value in range(256))
_ACK_CLASSES = {_T.PUBACK: PubAck, _T.PUBREC: PubRec, _T.PUBREL: PubRel, _T.PUBCOMP: PubComp}
# Packets whose Reason String / User Properties may be dropped to respect the peer's limits.
_TRIMMABLE = frozenset(
    {_T.CONNACK, _T.PUBACK, _T.PUBREC, _T.PUBREL, _T.PUBCOMP, _T.SUBACK, _T.UNSUBACK,
     _T.DISCONNECT, _T.AUTH}
)
# Request Problem Information = 0: no Reason String / User Properties except on these [MQTT-3.1.2-29].
_PROBLEM_INFORMATION_ALWAYS = frozenset({_T.PUBLISH, _T.CONNACK, _T.DISCONNECT})


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple:
    return tuple(cls.__dict__[name].__set__ for name in names)


_SET_PUBLISH = _slot_setters(
    Publish, ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
)


def _new_publish(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int | None,
    properties: Properties,
) -> Publish:
    """Publish(...) for the decoder's hot path: fills the slots directly, which is what the
    frozen dataclass's __init__ does too (through object.__setattr__), at half the cost."""
    packet = object.__new__(Publish)
    set_topic, set_payload, set_qos, set_retain, set_dup, set_packet_id, set_properties = (
        _SET_PUBLISH
    )
    set_topic(packet, topic)
    set_payload(packet, payload)
    set_qos(packet, qos)
    set_retain(packet, retain)
    set_dup(packet, dup)
    set_packet_id(packet, packet_id)
    set_properties(packet, properties)
    return packet


def _malformed(message: str) -> MQTTProtocolError:
    return MQTTProtocolError(_MALFORMED, message)


def _protocol(message: str) -> MQTTProtocolError:
    return MQTTProtocolError(_PROTOCOL, message)


class MQTTCodec:
    """One MQTT connection's codec, for the server side (``role="server"``) or a client.

    ``maximum_packet_size`` bounds the size (fixed header included) of packets accepted from the
    peer; a larger one is refused with reason 0x95 as soon as its header arrives. It should match
    the Maximum Packet Size the server announces in its v5 CONNACK. ``None``: the protocol limit.
    """

    def __init__(self, role: Role = "server", maximum_packet_size: int | None = None) -> None:
        if role not in (_SERVER, _CLIENT):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        if maximum_packet_size is not None and maximum_packet_size < 2:
            raise ValueError(f"maximum_packet_size must be at least 2, not {maximum_packet_size}")
        self.role: Role = role
        self.maximum_packet_size = maximum_packet_size
        self._peer = _CLIENT if role == _SERVER else _SERVER
        self._receive_table = _TABLES[self._peer]
        self._send_table = _TABLES[role]
        self._state = ConnectionState.AWAIT_CONNECT
        self._version: int | None = None  # wire version; set provisionally while decoding CONNECT
        self._protocol_version: int | None = None  # public: set once CONNECT is exchanged
        self._error: MQTTProtocolError | None = None
        # Receive buffer: ``_buffer[_position:]`` then the ``_pending`` chunks, in stream order.
        self._buffer = b""
        self._position = 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._needed = 1  # bytes from _position needed before decoding can progress
        self._base = 0  # stream offset of _buffer[0]
        # Facts of this connection.
        self._connect: Connect | None = None
        self._peer_maximum_packet_size: int | None = None
        self._peer_topic_alias_maximum = 0
        self._topic_alias_maximum = 0  # ours: aliases the peer may use towards us
        self._inbound_aliases: dict[int, str] = {}
        self._outbound_aliases: dict[int, str] = {}
        self._problem_information = True
        self._decoders = (
            None, self._decode_connect, self._decode_connack, self._decode_publish,
            self._decode_publish_response, self._decode_publish_response,
            self._decode_publish_response, self._decode_publish_response,
            self._decode_subscribe, self._decode_suback, self._decode_unsubscribe,
            self._decode_unsuback, self._decode_ping, self._decode_ping,
            self._decode_disconnect, self._decode_auth,
        )
        self._encoders = {
            Connect: self._encode_connect, ConnAck: self._encode_connack,
            Publish: self._encode_publish, PubAck: self._encode_publish_response,
            PubRec: self._encode_publish_response, PubRel: self._encode_publish_response,
            PubComp: self._encode_publish_response, Subscribe: self._encode_subscribe,
            SubAck: self._encode_suback, Unsubscribe: self._encode_unsubscribe,
            UnsubAck: self._encode_unsuback, PingReq: self._encode_ping,
            PingResp: self._encode_ping, Disconnect: self._encode_disconnect,
            Auth: self._encode_auth,
        }

    # --- public state -------------------------------------------------------------------------

    @property
    def protocol_version(self) -> int | None:
        """3 (3.1), 4 (3.1.1) or 5 once the CONNECT has been decoded (or sent); else None."""
        return self._protocol_version

    @property
    def state(self) -> ConnectionState:
        """The connection phase (see :class:`ConnectionState`)."""
        return self._state

    @property
    def connect(self) -> Connect | None:
        """The CONNECT of this connection, once exchanged."""
        return self._connect

    @property
    def peer_maximum_packet_size(self) -> int | None:
        """The Maximum Packet Size the peer announced (v5), or None for no limit."""
        return self._peer_maximum_packet_size

    @property
    def error(self) -> MQTTProtocolError | None:
        """The peer's protocol error, once one was found."""
        return self._error

    # --- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer. Raises the earlier error if the codec has failed."""
        if self._error is not None:
            raise self._error
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._pending.append(data)
        self._pending_size += len(data)

    def next_event(self) -> Packet | _NeedData:
        """The next complete packet from the peer, or NEED_DATA.

        Raises :class:`MQTTProtocolError` when the peer broke the protocol; the error's
        ``response`` is what to send before closing.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        start = self._position
        if len(buffer) - start + self._pending_size < self._needed:
            return NEED_DATA
        try:
            if self._pending:
                if start == len(buffer) and len(self._pending) == 1:  # the common case
                    self._base += start
                    self._buffer = buffer = self._pending.pop()
                    self._pending_size = 0
                    self._position = 0
                else:
                    buffer = self._merge()
                start = 0
            first = buffer[start]
            type_number = first >> 4
            next_state = self._receive_table[self._state][type_number]
            expected_flags = _FIXED_FLAGS[type_number]
            if (
                next_state is None
                or type_number >= _DISCONNECT  # DISCONNECT and AUTH depend on the version
                or (expected_flags is not None and first & 0x0F != expected_flags)
            ):
                self._check_header(first)
            limit = len(buffer)
            index = start + 1
            length = 0
            shift = 0
            while True:
                if index >= limit:
                    self._needed = index - start + 1
                    return NEED_DATA
                byte = buffer[index]
                index += 1
                length |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift == 28:
                    raise _malformed("remaining length longer than 4 bytes")
            end = index + length
            if self.maximum_packet_size is not None and end - start > self.maximum_packet_size:
                raise MQTTProtocolError(
                    ReasonCode.PACKET_TOO_LARGE,
                    f"packet of {end - start} bytes exceeds the maximum packet size "
                    f"{self.maximum_packet_size}",
                )
            if end > limit:
                self._needed = end - start
                return NEED_DATA
            packet = self._decoders[type_number](first, buffer, index, end)
        except MQTTProtocolError as error:
            self._fail(error)
            raise
        self._needed = 1
        self._position = end
        self._state = next_state  # type: ignore[assignment]
        if type_number <= _CONNACK:
            self._after_connect_exchange(packet)
        return packet

    def _merge(self) -> bytes:
        """Join the unread rest of the buffer with the pending chunks; return the new buffer."""
        pending = self._pending
        rest = self._buffer[self._position :]
        self._base += self._position
        if not rest and len(pending) == 1:
            self._buffer = pending[0]
        else:
            self._buffer = b"".join([rest, *pending])
        self._position = 0
        pending.clear()
        self._pending_size = 0
        return self._buffer

    def _check_header(self, first: int) -> None:
        """Raise the error a fixed header's first byte shows (the slow path of next_event)."""
        type_number = first >> 4
        if type_number == 0 or (type_number == _AUTH and self._version not in (None, MQTT_5)):
            raise _malformed(f"reserved packet type {type_number}")
        packet_type = _PACKET_TYPES[type_number]
        assert packet_type is not None
        if self._receive_table[self._state][type_number] is None:
            raise self._transition_error(packet_type)
        if type_number == _DISCONNECT and self._peer == _SERVER and self._version != MQTT_5:
            raise _protocol("MQTT 3 servers do not send DISCONNECT")
        expected = _FIXED_FLAGS[type_number]
        if expected is not None and first & 0x0F != expected:
            raise _malformed(
                f"fixed header flags 0b{first & 0x0F:04b}, must be 0b{expected:04b}"
            )

    def _transition_error(self, packet_type: PacketType) -> MQTTProtocolError:
        state = self._state
        name = packet_type.name
        if self.role == _SERVER and state is _S.AWAIT_CONNECT:
            return _protocol(f"first packet is {name}, not CONNECT")
        if self.role == _CLIENT and state is _S.AWAIT_CONNECT:
            return _protocol(f"{name} received before CONNECT was sent")
        if packet_type == _T.CONNECT and self.role == _SERVER:
            return _protocol("second CONNECT on the connection")
        if state is _S.CLOSED:
            return _protocol(f"{name} after the connection was closed by DISCONNECT or CONNACK")
        allowed = _CLIENT_PACKETS if self._peer == _CLIENT else _SERVER_PACKETS
        if packet_type not in allowed:
            return _protocol(f"a {self._peer} may not send {name}")
        return _protocol(f"{name} is not allowed in state {state.name}")

    def _fail(self, error: MQTTProtocolError) -> None:
        # The failing packet starts at _position: it only advances past decoded packets.
        where = f"packet at stream offset {self._base + self._position}"
        if self._position < len(self._buffer):
            type_number = self._buffer[self._position] >> 4
            if 0 < type_number < 15 or (type_number == 15 and self._version in (None, MQTT_5)):
                where = f"{PacketType(type_number).name} {where}"
        error.message = f"{where}: {error.message}"
        error.args = (error.message,)
        if error.response is None and not isinstance(error, UnsupportedProtocolVersionError):
            error.response = self._response_for(error.reason_code)
        if error.response is not None and self._version is None:
            self._version = MQTT_3_1_1  # a v3 CONNACK for a CONNECT we could not accept
        self._state = ConnectionState.FAILED
        self._error = error

    def _response_for(self, reason: ReasonCode) -> Packet | None:
        """What to send the peer before closing, after ``reason`` (MQTT 5 §4.13)."""
        if self._version != MQTT_5:
            return None  # MQTT 3: just close the connection
        state = self._state
        if self.role == _SERVER and state in (_S.AWAIT_CONNECT, _S.AWAIT_CONNACK):
            # No DISCONNECT before the CONNACK: refuse the connection with a CONNACK.
            if reason not in VALID_REASON_CODES[_T.CONNACK]:
                reason = ReasonCode.UNSPECIFIED_ERROR
            return ConnAck(False, reason)
        if state is _S.CONNECTED:
            if reason not in VALID_REASON_CODES[_T.DISCONNECT]:
                reason = ReasonCode.PROTOCOL_ERROR
            return Disconnect(reason)
        return None

    def _after_connect_exchange(self, packet: Packet) -> None:
        """Record what a CONNECT / CONNACK says about the connection (either direction)."""
        if isinstance(packet, Connect):
            self._connect = packet
            self._version = self._protocol_version = packet.protocol_version
            if self.role == _SERVER:
                properties = packet.properties
                self._peer_maximum_packet_size = properties.maximum_packet_size
                self._peer_topic_alias_maximum = properties.topic_alias_maximum or 0
                self._problem_information = properties.request_problem_information is not False
            else:
                self._topic_alias_maximum = packet.properties.topic_alias_maximum or 0
        elif isinstance(packet, ConnAck):
            if self.role == _CLIENT:
                self._peer_maximum_packet_size = packet.properties.maximum_packet_size
                self._peer_topic_alias_maximum = packet.properties.topic_alias_maximum or 0
            else:
                self._topic_alias_maximum = packet.properties.topic_alias_maximum or 0
            if packet.reason_code != 0:
                self._state = ConnectionState.CLOSED

    # --- decoders: (first byte, buffer, start of variable header, end of packet) -> packet --------

    def _decode_connect(self, first: int, buffer: bytes, position: int, end: int) -> Connect:
        name, position = decode_utf8(buffer, position, end)
        if position >= end:
            raise _malformed("CONNECT ends before the protocol level")
        level = buffer[position]
        position += 1
        if PROTOCOL_NAMES.get(level) != name or level not in (MQTT_3_1, MQTT_3_1_1, MQTT_5):
            if name in ("MQTT", "MQIsdp"):
                raise UnsupportedProtocolVersionError(
                    f"unsupported protocol level {level} for protocol name {name!r}",
                    protocol_name=name,
                    protocol_level=level,
                    response=ConnAck(False, ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION),
                )
            raise UnsupportedProtocolVersionError(
                f"unknown protocol name {name!r} (level {level})",
                protocol_name=name,
                protocol_level=level,
            )
        self._version = level  # error responses from here on use this version
        v5 = level == MQTT_5
        if position >= end:
            raise _malformed("CONNECT ends before the connect flags")
        connect_flags = buffer[position]
        position += 1
        if connect_flags & 0x01:
            raise _malformed("reserved connect flag is set")
        will_flag = connect_flags & 0x04
        will_qos = (connect_flags >> 3) & 0x03
        will_retain = bool(connect_flags & 0x20)
        password_flag = connect_flags & 0x40
        username_flag = connect_flags & 0x80
        if will_qos == 3:
            raise _malformed("will QoS 3")
        if not will_flag and (will_qos or will_retain):
            raise _malformed("will QoS or will retain set without the will flag")
        if password_flag and not username_flag and not v5:
            raise _malformed("password flag set without the user name flag")
        keep_alive, position = decode_two_byte_integer(buffer, position, end)
        properties = EMPTY_PROPERTIES
        if v5:
            properties, position = decode_properties(buffer, position, end, _T.CONNECT)
            if (
                properties.authentication_data is not None
                and properties.authentication_method is None
            ):
                raise _protocol("authentication data without an authentication method")
        client_id, position = decode_utf8(buffer, position, end)
        will = None
        if will_flag:
            will_properties = EMPTY_PROPERTIES
            if v5:
                will_properties, position = decode_properties(
                    buffer, position, end, WILL_PROPERTIES
                )
            will_topic, position = decode_utf8(buffer, position, end)
            problem = topic_name_problem(will_topic)
            if problem is not None:
                raise MQTTProtocolError(ReasonCode.TOPIC_NAME_INVALID, f"will {problem}")
            will_payload, position = decode_binary(buffer, position, end)
            will = Will(will_topic, will_payload, will_qos, will_retain, will_properties)
        username = None
        if username_flag:
            username, position = decode_utf8(buffer, position, end)
        password = None
        if password_flag:
            password, position = decode_binary(buffer, position, end)
        if position != end:
            raise _malformed(f"{end - position} bytes after the CONNECT payload")
        if not client_id and (level == MQTT_3_1 or (level == MQTT_3_1_1 and not connect_flags & 2)):
            # MQTT 3.1.1 [MQTT-3.1.3-8]; MQTT 3.1 requires 1 to 23 characters.
            raise MQTTProtocolError(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                "empty client identifier requires clean session"
                if level == MQTT_3_1_1
                else "empty client identifier in MQTT 3.1",
                response=ConnAck(False, ConnectReturnCode.IDENTIFIER_REJECTED),
            )
        return Connect(
            client_id, level, bool(connect_flags & 0x02), keep_alive, username, password, will,
            properties,
        )

    def _decode_connack(self, first: int, buffer: bytes, position: int, end: int) -> ConnAck:
        if end - position < 2:
            raise _malformed("CONNACK shorter than 2 bytes")
        acknowledge_flags = buffer[position]
        code = buffer[position + 1]
        position += 2
        if self._version == MQTT_5:
            if acknowledge_flags & 0xFE:
                raise _malformed("reserved CONNACK flags are set")
            if code not in VALID_REASON_CODES[_T.CONNACK]:
                raise _protocol(f"reason code 0x{code:02X} is not valid in CONNACK")
            properties, position = decode_properties(buffer, position, end, _T.CONNACK)
            if position != end:
                raise _malformed("bytes after the CONNACK properties")
            if code and acknowledge_flags:
                raise _protocol("session present with a refusing reason code")
            return ConnAck(bool(acknowledge_flags), ReasonCode(code), properties)
        if position != end:
            raise _malformed("MQTT 3 CONNACK longer than 2 bytes")
        if self._version == MQTT_3_1_1 and acknowledge_flags & 0xFE:
            raise _malformed("reserved CONNACK flags are set")
        if code > 5:
            raise _protocol(f"CONNACK return code {code} is reserved")
        session_present = self._version == MQTT_3_1_1 and bool(acknowledge_flags & 1)
        return ConnAck(session_present, ConnectReturnCode(code))

    def _decode_publish(self, first: int, buffer: bytes, position: int, end: int) -> Publish:
        qos = (first >> 1) & 0x03
        if qos == 3:
            raise _malformed("PUBLISH with QoS 3")
        dup = bool(first & 0x08)
        if dup and not qos:
            raise _malformed("PUBLISH with QoS 0 and DUP set")
        if position + 2 > end:
            raise _malformed("topic length runs past the packet end")
        topic_start = position + 2
        position = topic_start + ((buffer[position] << 8) | buffer[position + 1])
        if position > end:
            raise _malformed("topic name runs past the packet end")
        try:
            topic = buffer[topic_start:position].decode("utf-8")
        except UnicodeDecodeError as error:
            raise _malformed(f"topic name is not well-formed UTF-8 ({error.reason})") from None
        if "\x00" in topic:
            raise _malformed("topic name contains U+0000")
        if "+" in topic or "#" in topic:
            raise MQTTProtocolError(
                ReasonCode.TOPIC_NAME_INVALID, f"topic name {topic!r} contains a wildcard"
            )
        packet_id = None
        if qos:
            if position + 2 > end:
                raise _malformed("packet identifier runs past the packet end")
            packet_id = (buffer[position] << 8) | buffer[position + 1]
            position += 2
            if not packet_id:
                raise _protocol(f"QoS {qos} PUBLISH with packet identifier 0")
        properties = EMPTY_PROPERTIES
        if self._version == MQTT_5:
            if position < end and buffer[position] == 0:
                position += 1
            else:
                properties, position = decode_properties(buffer, position, end, _T.PUBLISH)
                if properties.subscription_identifiers and self.role == _SERVER:
                    raise _protocol("a client PUBLISH carries a subscription identifier")
                alias = properties.topic_alias
                if alias is not None:
                    topic = self._resolve_alias(alias, topic)
                    properties = replace(properties, topic_alias=None)
        if not topic:
            raise _protocol("zero-length topic name without a topic alias")
        return _new_publish(
            topic, buffer[position:end], qos, bool(first & 1), dup, packet_id, properties
        )

    def _resolve_alias(self, alias: int, topic: str) -> str:
        if not 0 < alias <= self._topic_alias_maximum:
            raise MQTTProtocolError(
                ReasonCode.TOPIC_ALIAS_INVALID,
                f"topic alias {alias} outside 1..{self._topic_alias_maximum}",
            )
        if topic:
            self._inbound_aliases[alias] = topic
            return topic
        known = self._inbound_aliases.get(alias)
        if known is None:
            raise _protocol(f"topic alias {alias} used before it was set")
        return known

    def _decode_publish_response(
        self, first: int, buffer: bytes, position: int, end: int
    ) -> PubAck | PubRec | PubRel | PubComp:
        packet_type: PacketType = _PACKET_TYPES[first >> 4]  # type: ignore[assignment]
        size = end - position
        if size < 2:
            raise _malformed(f"{packet_type.name} shorter than 2 bytes")
        packet_id = (buffer[position] << 8) | buffer[position + 1]
        if not packet_id:
            raise _protocol("packet identifier 0")
        cls = _ACK_CLASSES[packet_type]
        if self._version != MQTT_5:
            if size != 2:
                raise _malformed(f"MQTT 3 {packet_type.name} longer than 2 bytes")
            return cls(packet_id)
        if size == 2:
            return cls(packet_id)
        code = buffer[position + 2]
        if code not in VALID_REASON_CODES[packet_type]:
            raise _protocol(f"reason code 0x{code:02X} is not valid in {packet_type.name}")
        properties = EMPTY_PROPERTIES
        if size > 3:
            properties, position = decode_properties(buffer, position + 3, end, packet_type)
            if position != end:
                raise _malformed(f"bytes after the {packet_type.name} properties")
        return cls(packet_id, ReasonCode(code), properties)

    def _decode_packet_id(self, buffer: bytes, position: int, end: int) -> tuple[int, int]:
        packet_id, position = decode_two_byte_integer(buffer, position, end)
        if not packet_id:
            raise _protocol("packet identifier 0")
        return packet_id, position

    def _filter(self, topic_filter: str) -> str:
        problem = topic_filter_problem(topic_filter)
        if problem is not None:
            raise MQTTProtocolError(ReasonCode.TOPIC_FILTER_INVALID, problem)
        return topic_filter

    def _decode_subscribe(self, first: int, buffer: bytes, position: int, end: int) -> Subscribe:
        packet_id, position = self._decode_packet_id(buffer, position, end)
        v5 = self._version == MQTT_5
        properties = EMPTY_PROPERTIES
        if v5:
            properties, position = decode_properties(buffer, position, end, _T.SUBSCRIBE)
        subscriptions = []
        while position < end:
            topic_filter, position = decode_utf8(buffer, position, end)
            if position >= end:
                raise _malformed(f"no subscription options after {topic_filter!r}")
            options = buffer[position]
            position += 1
            qos = options & 0x03
            if qos == 3:
                raise _malformed(f"QoS 3 requested for {topic_filter!r}")
            self._filter(topic_filter)
            if v5:
                if options & 0xC0:
                    raise _malformed("reserved subscription option bits are set")
                retain_handling = (options >> 4) & 0x03
                if retain_handling == 3:
                    raise _protocol("retain handling 3")
                no_local = bool(options & 0x04)
                if no_local and topic_filter.startswith("$share/"):
                    raise _protocol(f"no local on shared subscription {topic_filter!r}")
                subscriptions.append(
                    Subscription(topic_filter, qos, no_local, bool(options & 0x08), retain_handling)
                )
            else:
                if options & 0xFC:
                    raise _malformed("reserved bits of the requested QoS byte are set")
                subscriptions.append(Subscription(topic_filter, qos))
        if not subscriptions:
            raise _protocol("SUBSCRIBE without topic filters")
        return Subscribe(packet_id, tuple(subscriptions), properties)

    def _decode_suback(self, first: int, buffer: bytes, position: int, end: int) -> SubAck:
        packet_id, position = self._decode_packet_id(buffer, position, end)
        properties = EMPTY_PROPERTIES
        if self._version == MQTT_5:
            properties, position = decode_properties(buffer, position, end, _T.SUBACK)
            valid = VALID_REASON_CODES[_T.SUBACK]
            codes = tuple(ReasonCode(code) for code in buffer[position:end] if code in valid)
        else:
            valid = V3_SUBACK_CODES
            codes = tuple(code for code in buffer[position:end] if code in valid)
        if len(codes) != end - position:
            raise _protocol("SUBACK carries an invalid return code")
        if not codes:
            raise _protocol("SUBACK without return codes")
        return SubAck(packet_id, codes, properties)

    def _decode_unsubscribe(
        self, first: int, buffer: bytes, position: int, end: int
    ) -> Unsubscribe:
        packet_id, position = self._decode_packet_id(buffer, position, end)
        properties = EMPTY_PROPERTIES
        if self._version == MQTT_5:
            properties, position = decode_properties(buffer, position, end, _T.UNSUBSCRIBE)
        topic_filters = []
        while position < end:
            topic_filter, position = decode_utf8(buffer, position, end)
            topic_filters.append(self._filter(topic_filter))
        if not topic_filters:
            raise _protocol("UNSUBSCRIBE without topic filters")
        return Unsubscribe(packet_id, tuple(topic_filters), properties)

    def _decode_unsuback(self, first: int, buffer: bytes, position: int, end: int) -> UnsubAck:
        packet_id, position = self._decode_packet_id(buffer, position, end)
        if self._version != MQTT_5:
            if position != end:
                raise _malformed("MQTT 3 UNSUBACK longer than 2 bytes")
            return UnsubAck(packet_id)
        properties, position = decode_properties(buffer, position, end, _T.UNSUBACK)
        valid = VALID_REASON_CODES[_T.UNSUBACK]
        codes = tuple(ReasonCode(code) for code in buffer[position:end] if code in valid)
        if len(codes) != end - position:
            raise _protocol("UNSUBACK carries an invalid reason code")
        if not codes:
            raise _protocol("UNSUBACK without reason codes")
        return UnsubAck(packet_id, codes, properties)

    def _decode_ping(self, first: int, buffer: bytes, position: int, end: int) -> Packet:
        if position != end:
            raise _malformed("PINGREQ/PINGRESP with a non-zero remaining length")
        return PingReq() if first >> 4 == _T.PINGREQ else PingResp()

    def _decode_disconnect(
        self, first: int, buffer: bytes, position: int, end: int
    ) -> Disconnect:
        if self._version != MQTT_5:
            if position != end:
                raise _malformed("MQTT 3 DISCONNECT with a non-zero remaining length")
            return Disconnect()
        if position == end:
            return Disconnect()
        code = buffer[position]
        if code not in VALID_REASON_CODES[_T.DISCONNECT]:
            raise _protocol(f"reason code 0x{code:02X} is not valid in DISCONNECT")
        properties = EMPTY_PROPERTIES
        if end - position > 1:
            properties, position = decode_properties(buffer, position + 1, end, _T.DISCONNECT)
            if position != end:
                raise _malformed("bytes after the DISCONNECT properties")
        if self.role == _SERVER and self._connect is not None:
            expiry = properties.session_expiry_interval
            if expiry and not self._connect.properties.session_expiry_interval:
                raise _protocol(
                    "DISCONNECT sets a session expiry interval after CONNECT set none"
                )
        return Disconnect(ReasonCode(code), properties)

    def _decode_auth(self, first: int, buffer: bytes, position: int, end: int) -> Auth:
        if position == end:
            packet = Auth()
        else:
            code = buffer[position]
            if code not in VALID_REASON_CODES[_T.AUTH]:
                raise _protocol(f"reason code 0x{code:02X} is not valid in AUTH")
            properties = EMPTY_PROPERTIES
            if end - position > 1:
                properties, position = decode_properties(buffer, position + 1, end, _T.AUTH)
                if position != end:
                    raise _malformed("bytes after the AUTH properties")
            packet = Auth(ReasonCode(code), properties)
        if self.role == _SERVER:
            assert self._connect is not None
            method = self._connect.properties.authentication_method
            if method is None:
                raise _protocol("AUTH although CONNECT named no authentication method")
            if packet.reason_code == ReasonCode.SUCCESS:
                raise _protocol("a client AUTH must continue or restart authentication")
            if packet.properties.authentication_method != method:
                raise _protocol(
                    f"AUTH authentication method "
                    f"{packet.properties.authentication_method!r} is not CONNECT's {method!r}"
                )
        return packet

    # --- sending ------------------------------------------------------------------------------

    def send(self, packet: Packet) -> bytes:
        """Encode ``packet`` for the peer in the negotiated protocol version.

        Raises :class:`MQTTLocalProtocolError` if the packet may not be sent now or cannot be
        encoded (nothing changes then); :class:`PacketTooLargeError` if it exceeds the peer's
        Maximum Packet Size even without its Reason String and User Properties. Fields MQTT 3
        cannot carry (properties, non-success acknowledgement reason codes, v5 subscription
        options) are left out for an MQTT 3 peer.
        """
        try:
            packet_type = packet.packet_type
            encoder = self._encoders[type(packet)]
        except (AttributeError, KeyError):
            raise MQTTLocalProtocolError(f"{packet!r} is not an MQTT packet") from None
        state = self._state
        next_state = self._send_table[state][packet_type]
        if next_state is None or state == _FAILED:
            self._check_send(packet, next_state)
        if packet_type == _CONNECT:
            version = packet.protocol_version  # type: ignore[union-attr]
        else:
            version = self._version or MQTT_3_1_1
            if version != MQTT_5:
                if packet_type == _AUTH or (packet_type == _DISCONNECT and self.role == _SERVER):
                    raise MQTTLocalProtocolError(
                        f"MQTT 3 has no {packet_type.name} from the {self.role}; "
                        "close the connection instead"
                    )
            elif not self._problem_information and packet_type in _TRIMMABLE:
                packet = self._without_problem_information(packet)
        data = encoder(packet, version)
        limit = self._peer_maximum_packet_size
        if limit is not None and len(data) > limit:
            data = self._shrink(packet, version, encoder, data, limit)
        self._state = next_state  # type: ignore[assignment]
        if packet_type <= _CONNACK:
            self._after_connect_exchange(packet)
        return data

    def _check_send(self, packet: Packet, next_state: ConnectionState | None) -> None:
        """Raise why ``packet`` may not be sent now (the slow path of send)."""
        packet_type = packet.packet_type
        if next_state is None:
            raise MQTTLocalProtocolError(
                f"a {self.role} cannot send {packet_type.name} in state {self._state.name}"
            )
        response = self._error.response if self._error is not None else None
        if response is None or type(packet) is not type(response):
            allowed = type(response).__name__ if response is not None else "closing"
            raise MQTTLocalProtocolError(
                f"after a protocol error only {allowed} is allowed, not {packet_type.name}"
            )

    def _without_problem_information(self, packet: Packet) -> Packet:
        if packet.packet_type in _PROBLEM_INFORMATION_ALWAYS:
            return packet
        properties = packet.properties  # type: ignore[union-attr]
        if properties.reason_string is None and not properties.user_properties:
            return packet
        return replace(  # type: ignore[type-var]
            packet, properties=replace(properties, reason_string=None, user_properties=())
        )

    def _shrink(self, packet: Packet, version: int, encoder, data: bytes, limit: int) -> bytes:
        """Drop the Reason String, then the User Properties, to fit the peer's limit (v5)."""
        if packet.packet_type in _TRIMMABLE and version == MQTT_5:
            properties = packet.properties  # type: ignore[union-attr]
            for trimmed in (
                replace(properties, reason_string=None),
                replace(properties, reason_string=None, user_properties=()),
            ):
                data = encoder(replace(packet, properties=trimmed), version)  # type: ignore[type-var]
                if len(data) <= limit:
                    return data
        raise PacketTooLargeError(
            f"{packet.packet_type.name} of {len(data)} bytes exceeds the peer's maximum "
            f"packet size {limit}",
            size=len(data),
            limit=limit,
        )

    @staticmethod
    def _frame(first: int, body: bytes) -> bytes:
        if len(body) > MAX_VARIABLE_BYTE_INTEGER:
            raise MQTTLocalProtocolError(
                f"packet body of {len(body)} bytes exceeds the MQTT limit {MAX_VARIABLE_BYTE_INTEGER}"
            )
        return bytes((first,)) + encode_variable_byte_integer(len(body)) + body

    @staticmethod
    def _check_packet_id(packet_id: object, what: str) -> int:
        if type(packet_id) is not int or not 0 < packet_id <= 65_535:  # type: ignore[operator]
            raise MQTTLocalProtocolError(f"{what} packet identifier must be 1..65535, not {packet_id!r}")
        return packet_id  # type: ignore[return-value]

    @staticmethod
    def _check_qos(qos: object, what: str) -> int:
        if qos not in (0, 1, 2):
            raise MQTTLocalProtocolError(f"{what} QoS must be 0, 1 or 2, not {qos!r}")
        return int(qos)  # type: ignore[call-overload]

    @staticmethod
    def _check_reason(packet: Packet, code: int, packet_type: PacketType) -> None:
        if code not in VALID_REASON_CODES[packet_type]:
            raise MQTTLocalProtocolError(
                f"reason code {code!r} is not valid in {packet_type.name}: {packet!r}"
            )

    def _encode_connect(self, packet: Connect, version: int) -> bytes:
        if version not in PROTOCOL_NAMES:
            raise MQTTLocalProtocolError(f"unknown protocol version {version!r}")
        if not 0 <= packet.keep_alive <= 65_535:
            raise MQTTLocalProtocolError(f"keep alive {packet.keep_alive} outside 0..65535")
        v5 = version == MQTT_5
        flags = 0x02 if packet.clean_start else 0
        payload = [encode_utf8(packet.client_id, "client identifier")]
        will = packet.will
        if will is not None:
            problem = topic_name_problem(will.topic)
            if problem is not None:
                raise MQTTLocalProtocolError(f"will {problem}")
            flags |= 0x04 | (self._check_qos(will.qos, "will") << 3) | (0x20 if will.retain else 0)
            if v5:
                payload.append(encode_properties(will.properties, WILL_PROPERTIES))
            payload.append(encode_utf8(will.topic, "will topic"))
            payload.append(encode_binary(will.payload, "will payload"))
        if packet.username is not None:
            flags |= 0x80
            payload.append(encode_utf8(packet.username, "user name"))
        if packet.password is not None:
            if packet.username is None and not v5:
                raise MQTTLocalProtocolError("MQTT 3 allows a password only with a user name")
            flags |= 0x40
            payload.append(encode_binary(packet.password, "password"))
        if not v5 and not packet.client_id and (version == MQTT_3_1 or not packet.clean_start):
            raise MQTTLocalProtocolError("an empty client identifier requires clean session")
        header = (
            encode_utf8(PROTOCOL_NAMES[version])
            + bytes((version, flags))
            + _PACK_H(packet.keep_alive)
        )
        if v5:
            header += encode_properties(packet.properties, _T.CONNECT)
        return self._frame(0x10, header + b"".join(payload))

    def _encode_connack(self, packet: ConnAck, version: int) -> bytes:
        if version == MQTT_5:
            code = v5_connack_reason_code(packet.reason_code)
            self._check_reason(packet, code, _T.CONNACK)
            if packet.session_present and code:
                raise MQTTLocalProtocolError("session present with a refusing CONNACK")
            body = bytes((1 if packet.session_present else 0, code))
            return self._frame(0x20, body + encode_properties(packet.properties, _T.CONNACK))
        return_code = v3_connect_return_code(packet.reason_code)
        if return_code is None:
            raise MQTTLocalProtocolError(
                f"CONNACK code 0x{packet.reason_code:02X} has no MQTT 3 return code; "
                "close the connection without a CONNACK"
            )
        if packet.session_present and return_code:
            raise MQTTLocalProtocolError("session present with a refusing CONNACK")
        session_present = 1 if packet.session_present and version == MQTT_3_1_1 else 0
        return bytes((0x20, 2, session_present, return_code))

    def _encode_publish(self, packet: Publish, version: int) -> bytes:
        qos = packet.qos
        topic = packet.topic
        try:
            topic_bytes = topic.encode("utf-8")
        except (UnicodeEncodeError, AttributeError):
            raise MQTTLocalProtocolError(f"topic name {topic!r} cannot be encoded") from None
        if "+" in topic or "#" in topic or "\x00" in topic or len(topic_bytes) > 65_535:
            raise MQTTLocalProtocolError(topic_name_problem(topic) or "invalid topic name")
        payload = packet.payload
        if type(payload) is not bytes and not isinstance(payload, bytearray | memoryview):
            raise MQTTLocalProtocolError(f"payload must be bytes, not {type(payload).__name__}")
        if not topic and (version != MQTT_5 or packet.properties.topic_alias is None):
            raise MQTTLocalProtocolError("topic name is empty and there is no topic alias")
        first = 0x30 | (qos << 1) | (1 if packet.retain else 0)
        if qos == 0:
            if packet.packet_id is not None:
                raise MQTTLocalProtocolError("a QoS 0 PUBLISH has no packet identifier")
            if packet.dup:
                raise MQTTLocalProtocolError("a QoS 0 PUBLISH cannot have DUP set")
            packet_id = b""
        elif qos == 1 or qos == 2:
            number = packet.packet_id
            if type(number) is not int or not 0 < number <= 65_535:
                raise MQTTLocalProtocolError(
                    f"PUBLISH packet identifier must be 1..65535, not {number!r}"
                )
            packet_id = _PACK_H(number)
            if packet.dup:
                first |= 0x08
        else:
            raise MQTTLocalProtocolError(f"PUBLISH QoS must be 0, 1 or 2, not {qos!r}")
        properties = b""
        if version == MQTT_5:
            properties = packet.properties
            if properties is EMPTY_PROPERTIES:
                properties = b"\x00"
            else:
                self._check_outbound_publish_properties(properties, topic)
                properties = encode_properties(properties, _T.PUBLISH)
        topic_length = len(topic_bytes)
        length = 2 + topic_length + len(packet_id) + len(properties) + len(payload)
        # Fixed header and topic length in one pack for the usual one- and two-byte lengths.
        if length < 128:
            header = _PACK_BBH(first, length, topic_length)
        elif length < 16_384:
            header = _PACK_BBBH(first, (length & 0x7F) | 0x80, length >> 7, topic_length)
        elif length <= MAX_VARIABLE_BYTE_INTEGER:
            header = b"".join(
                (_ONE_BYTE[first], encode_variable_byte_integer(length), _PACK_H(topic_length))
            )
        else:
            raise MQTTLocalProtocolError(
                f"PUBLISH of {length} bytes exceeds the MQTT limit {MAX_VARIABLE_BYTE_INTEGER}"
            )
        return b"".join((header, topic_bytes, packet_id, properties, payload))

    def _check_outbound_publish_properties(self, properties: Properties, topic: str) -> None:
        if properties.subscription_identifiers and self.role == _CLIENT:
            raise MQTTLocalProtocolError("a client PUBLISH cannot carry subscription identifiers")
        alias = properties.topic_alias
        if alias is None:
            return
        if not 0 < alias <= self._peer_topic_alias_maximum:
            raise MQTTLocalProtocolError(
                f"topic alias {alias} outside the peer's 1..{self._peer_topic_alias_maximum}"
            )
        if topic:
            self._outbound_aliases[alias] = topic
        elif alias not in self._outbound_aliases:
            raise MQTTLocalProtocolError(f"topic alias {alias} used before it was set")

    def _encode_publish_response(
        self, packet: PubAck | PubRec | PubRel | PubComp, version: int
    ) -> bytes:
        packet_type = packet.packet_type
        first = (packet_type << 4) | (0b0010 if packet_type == _T.PUBREL else 0)
        packet_id = _PACK_H(self._check_packet_id(packet.packet_id, packet_type.name))
        if version != MQTT_5:
            return bytes((first, 2)) + packet_id
        code = packet.reason_code
        properties = packet.properties
        if properties is EMPTY_PROPERTIES or properties == EMPTY_PROPERTIES:
            if code == 0:
                return bytes((first, 2)) + packet_id
            self._check_reason(packet, code, packet_type)
            return bytes((first, 3)) + packet_id + bytes((code,))
        self._check_reason(packet, code, packet_type)
        return self._frame(
            first, packet_id + bytes((code,)) + encode_properties(properties, packet_type)
        )

    def _encode_subscribe(self, packet: Subscribe, version: int) -> bytes:
        body = [_PACK_H(self._check_packet_id(packet.packet_id, "SUBSCRIBE"))]
        v5 = version == MQTT_5
        if v5:
            body.append(encode_properties(packet.properties, _T.SUBSCRIBE))
        if not packet.subscriptions:
            raise MQTTLocalProtocolError("SUBSCRIBE needs at least one subscription")
        for subscription in packet.subscriptions:
            problem = topic_filter_problem(subscription.topic_filter)
            if problem is not None:
                raise MQTTLocalProtocolError(problem)
            options = self._check_qos(subscription.qos, "subscription")
            if v5:
                if subscription.retain_handling not in (0, 1, 2):
                    raise MQTTLocalProtocolError(
                        f"retain handling must be 0, 1 or 2, not {subscription.retain_handling!r}"
                    )
                if subscription.no_local and subscription.topic_filter.startswith("$share/"):
                    raise MQTTLocalProtocolError("no local cannot be set on a shared subscription")
                options |= (
                    (0x04 if subscription.no_local else 0)
                    | (0x08 if subscription.retain_as_published else 0)
                    | (subscription.retain_handling << 4)
                )
            body.append(encode_utf8(subscription.topic_filter, "topic filter"))
            body.append(bytes((options,)))
        return self._frame(0x82, b"".join(body))

    def _encode_suback(self, packet: SubAck, version: int) -> bytes:
        body = [_PACK_H(self._check_packet_id(packet.packet_id, "SUBACK"))]
        if not packet.reason_codes:
            raise MQTTLocalProtocolError("SUBACK needs at least one reason code")
        if version == MQTT_5:
            body.append(encode_properties(packet.properties, _T.SUBACK))
            for code in packet.reason_codes:
                self._check_reason(packet, code, _T.SUBACK)
            body.append(bytes(packet.reason_codes))
        else:
            codes = []
            for code in packet.reason_codes:
                if code in (0, 1, 2):
                    codes.append(code)
                elif isinstance(code, int) and 0x80 <= code <= 0xFF:
                    codes.append(0x80)
                else:
                    raise MQTTLocalProtocolError(f"SUBACK code {code!r} is neither QoS nor failure")
            body.append(bytes(codes))
        return self._frame(0x90, b"".join(body))

    def _encode_unsubscribe(self, packet: Unsubscribe, version: int) -> bytes:
        body = [_PACK_H(self._check_packet_id(packet.packet_id, "UNSUBSCRIBE"))]
        if version == MQTT_5:
            body.append(encode_properties(packet.properties, _T.UNSUBSCRIBE))
        if not packet.topic_filters:
            raise MQTTLocalProtocolError("UNSUBSCRIBE needs at least one topic filter")
        for topic_filter in packet.topic_filters:
            problem = topic_filter_problem(topic_filter)
            if problem is not None:
                raise MQTTLocalProtocolError(problem)
            body.append(encode_utf8(topic_filter, "topic filter"))
        return self._frame(0xA2, b"".join(body))

    def _encode_unsuback(self, packet: UnsubAck, version: int) -> bytes:
        packet_id = _PACK_H(self._check_packet_id(packet.packet_id, "UNSUBACK"))
        if version != MQTT_5:
            return b"\xb0\x02" + packet_id
        if not packet.reason_codes:
            raise MQTTLocalProtocolError("an MQTT 5 UNSUBACK needs one reason code per filter")
        for code in packet.reason_codes:
            self._check_reason(packet, code, _T.UNSUBACK)
        return self._frame(
            0xB0,
            packet_id
            + encode_properties(packet.properties, _T.UNSUBACK)
            + bytes(packet.reason_codes),
        )

    def _encode_ping(self, packet: PingReq | PingResp, version: int) -> bytes:
        return b"\xc0\x00" if packet.packet_type == _T.PINGREQ else b"\xd0\x00"

    def _encode_reason_packet(
        self, packet: Disconnect | Auth, version: int, first: int
    ) -> bytes:
        if version != MQTT_5:
            return bytes((first, 0))
        code = packet.reason_code
        self._check_reason(packet, code, packet.packet_type)
        properties = packet.properties
        if properties is EMPTY_PROPERTIES or properties == EMPTY_PROPERTIES:
            return bytes((first, 0)) if code == 0 else bytes((first, 1, code))
        return self._frame(first, bytes((code,)) + encode_properties(properties, packet.packet_type))

    def _encode_disconnect(self, packet: Disconnect, version: int) -> bytes:
        return self._encode_reason_packet(packet, version, 0xE0)

    def _encode_auth(self, packet: Auth, version: int) -> bytes:
        return self._encode_reason_packet(packet, version, 0xF0)


__all__ = [
    "EMPTY_PROPERTIES",
    "NEED_DATA",
    "Auth",
    "ConnAck",
    "Connect",
    "ConnectReturnCode",
    "ConnectionState",
    "Disconnect",
    "MQTTCodec",
    "MQTTLocalProtocolError",
    "MQTTProtocolError",
    "Packet",
    "PacketTooLargeError",
    "PacketType",
    "PingReq",
    "PingResp",
    "Properties",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "ReasonCode",
    "RetainHandling",
    "Role",
    "SubAck",
    "Subscribe",
    "Subscription",
    "UnsubAck",
    "Unsubscribe",
    "UnsupportedProtocolVersionError",
    "Will",
    "v3_connect_return_code",
    "v5_connack_reason_code",
]
