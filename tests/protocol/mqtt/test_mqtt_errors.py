"""Malformed packets and protocol errors: the reason code, the response, and what follows.

Packets are written out byte by byte here (not through the encoder, which refuses to produce them).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt_strategies import AUTH_METHOD, connected_pair, drain, handshake_connect

from pybroker.errors import ProtocolError
from pybroker.protocol.mqtt.codec import (
    NEED_DATA,
    ConnAck,
    ConnectReturnCode,
    Disconnect,
    MQTTCodec,
    MQTTLocalProtocolError,
    MQTTProtocolError,
    Publish,
    ReasonCode,
    UnsupportedProtocolVersionError,
)
from pybroker.protocol.mqtt.packets import Connect
from pybroker.protocol.mqtt.properties import Properties
from pybroker.protocol.mqtt.wire import encode_variable_byte_integer

R = ReasonCode


def frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_variable_byte_integer(len(body)) + body


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def connect_bytes(
    level: int = 4,
    flags: int = 0x02,
    payload: bytes | None = None,
    properties: bytes = b"\x00",
    name: str = "MQTT",
) -> bytes:
    body = string(name) + bytes((level, flags)) + b"\x00\x3c"
    if level == 5:
        body += properties
    body += string("client") if payload is None else payload
    return frame(0x10, body)


def session(version: int, *, connack_sent: bool = True, **kwargs: object) -> MQTTCodec:
    """A server codec that decoded the handshake CONNECT (and, by default, sent CONNACK)."""
    server = MQTTCodec("server", **kwargs)  # type: ignore[arg-type]
    server.receive_data(MQTTCodec("client").send(handshake_connect(version)))
    assert isinstance(server.next_event(), Connect)
    if connack_sent:
        server.send(ConnAck())
    return server


def fail(codec: MQTTCodec, data: bytes) -> MQTTProtocolError:
    codec.receive_data(data)
    with pytest.raises(MQTTProtocolError) as caught:
        drain(codec)
    return caught.value


# --- the fixed header --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(0x80, b"\x00\x01" + string("a") + b"\x00"), id="SUBSCRIBE flags 0"),
        pytest.param(frame(0x60, b"\x00\x01"), id="PUBREL flags 0"),
        pytest.param(frame(0xA0, b"\x00\x01" + string("a")), id="UNSUBSCRIBE flags 0"),
        pytest.param(frame(0x41, b"\x00\x01"), id="PUBACK flags 1"),
        pytest.param(frame(0xC8, b""), id="PINGREQ flags 8"),
        pytest.param(frame(0xE2, b""), id="DISCONNECT flags 2"),
        pytest.param(frame(0x00, b""), id="reserved type 0"),
        pytest.param(frame(0xF0, b""), id="AUTH in MQTT 3.1.1 (reserved type 15)"),
    ],
)
def test_reserved_flags_and_types_are_malformed(data: bytes) -> None:
    error = fail(session(4), data)
    assert error.reason_code == R.MALFORMED_PACKET
    assert error.response is None  # MQTT 3: close without a response


def test_bad_flags_are_refused_from_the_first_byte() -> None:
    server = session(5)
    server.receive_data(b"\x60")  # PUBREL with flags 0: wrong before any length arrives
    with pytest.raises(MQTTProtocolError) as caught:
        server.next_event()
    assert caught.value.reason_code == R.MALFORMED_PACKET
    assert caught.value.response == Disconnect(R.MALFORMED_PACKET)


def test_remaining_length_of_five_bytes_is_malformed_after_the_fourth() -> None:
    server = session(4)
    server.receive_data(b"\x30\xff\xff\xff")
    assert server.next_event() is NEED_DATA  # 268435455 is still possible
    error = fail(server, b"\xff")  # a fourth continuation byte: the fifth is not allowed
    assert error.reason_code == R.MALFORMED_PACKET
    assert "longer than 4 bytes" in str(error)


def test_largest_remaining_length_waits_for_data() -> None:
    server = session(4)
    server.receive_data(b"\x30\xff\xff\xff\x7f\x00\x01a")
    assert server.next_event() is NEED_DATA
    assert server._needed == 1 + 4 + 268_435_455


def test_packet_size_limit() -> None:
    for version, response in ((4, None), (5, Disconnect(R.PACKET_TOO_LARGE))):
        server = session(version, maximum_packet_size=100)
        properties = b"\x00" if version == 5 else b""
        exactly = frame(0x30, string("t") + properties + bytes(95 - len(properties)))
        assert len(exactly) == 100
        server.receive_data(exactly)
        assert isinstance(server.next_event(), Publish)
        error = fail(server, b"\x30\x63")  # remaining length 99: 101 bytes, only the header sent
        assert error.reason_code == R.PACKET_TOO_LARGE
        assert error.response == response


def test_oversized_connect_is_closed_without_response() -> None:
    server = MQTTCodec("server", maximum_packet_size=20)
    error = fail(server, connect_bytes(5, payload=string("a-rather-long-client-id")))
    assert error.reason_code == R.PACKET_TOO_LARGE
    assert error.response is None


# --- CONNECT ---------------------------------------------------------------------------------


def test_first_packet_must_be_connect() -> None:
    error = fail(MQTTCodec("server"), b"\xc0\x00")
    assert error.reason_code == R.PROTOCOL_ERROR
    assert "first packet is PINGREQ, not CONNECT" in str(error)
    assert error.response is None


def test_http_request_is_refused_at_once() -> None:
    error = fail(MQTTCodec("server"), b"G")
    assert error.reason_code == R.PROTOCOL_ERROR


@pytest.mark.parametrize("version,response", [(4, None), (5, Disconnect(R.PROTOCOL_ERROR))])
def test_second_connect(version: int, response: object) -> None:
    error = fail(session(version), connect_bytes(version))
    assert error.reason_code == R.PROTOCOL_ERROR
    assert "second CONNECT" in str(error)
    assert error.response == response


@pytest.mark.parametrize(
    "name,level", [("MQTT", 6), ("MQTT", 3), ("MQTT", 0), ("MQIsdp", 4), ("MQIsdp", 5)]
)
def test_unsupported_protocol_level_gets_connack_1(name: str, level: int) -> None:
    server = MQTTCodec("server")
    error = fail(server, connect_bytes(level, name=name))
    assert isinstance(error, UnsupportedProtocolVersionError)
    assert isinstance(error, ProtocolError)
    assert (error.protocol_name, error.protocol_level) == (name, level)
    assert error.reason_code == R.UNSUPPORTED_PROTOCOL_VERSION
    assert error.response == ConnAck(False, ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION)
    assert server.send(error.response) == b"\x20\x02\x00\x01"  # MQTT 3.1.1 §3.1.2.2
    with pytest.raises(MQTTLocalProtocolError):
        server.send(error.response)  # once only: the connection is closed now


@pytest.mark.parametrize("name", ["MQTX", "mqtt", "HTTP"])
def test_unknown_protocol_name_is_closed(name: str) -> None:
    error = fail(MQTTCodec("server"), connect_bytes(4, name=name))
    assert isinstance(error, UnsupportedProtocolVersionError)
    assert error.protocol_name == name
    assert error.response is None


@pytest.mark.parametrize(
    "flags,reason",
    [
        (0x03, R.MALFORMED_PACKET),  # reserved bit
        (0x12, R.MALFORMED_PACKET),  # will QoS 2 without the will flag
        (0x22, R.MALFORMED_PACKET),  # will retain without the will flag
        (0x1E, R.MALFORMED_PACKET),  # will QoS 3
    ],
)
@pytest.mark.parametrize("version", [4, 5])
def test_connect_flags(flags: int, reason: ReasonCode, version: int) -> None:
    payload = string("client")
    if flags & 0x04:
        payload += (b"\x00" if version == 5 else b"") + string("will") + string("bye")
    error = fail(MQTTCodec("server"), connect_bytes(version, flags, payload))
    assert error.reason_code == reason
    assert error.response == (ConnAck(False, reason) if version == 5 else None)


def test_v3_password_needs_user_name() -> None:
    error = fail(MQTTCodec("server"), connect_bytes(4, 0x42, string("c") + string("secret")))
    assert error.reason_code == R.MALFORMED_PACKET
    server = MQTTCodec("server")  # MQTT 5 allows it
    server.receive_data(connect_bytes(5, 0x42, string("c") + string("secret")))
    assert server.next_event().password == b"secret"


def test_v311_empty_client_id_needs_clean_session() -> None:
    server = MQTTCodec("server")
    error = fail(server, connect_bytes(4, 0x00, string("")))
    assert error.reason_code == R.CLIENT_IDENTIFIER_NOT_VALID
    assert error.response == ConnAck(False, ConnectReturnCode.IDENTIFIER_REJECTED)
    assert server.send(error.response) == b"\x20\x02\x00\x02"
    accepted = MQTTCodec("server")
    accepted.receive_data(connect_bytes(4, 0x02, string("")))
    assert accepted.next_event().client_id == ""


@pytest.mark.parametrize("version", [4, 5])
def test_will_topic_with_wildcard(version: int) -> None:
    payload = string("c") + (b"\x00" if version == 5 else b"") + string("a/+") + string("x")
    error = fail(MQTTCodec("server"), connect_bytes(version, 0x06, payload))
    assert error.reason_code == R.TOPIC_NAME_INVALID
    assert error.response == (ConnAck(False, R.TOPIC_NAME_INVALID) if version == 5 else None)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(string(b"\xff\xfe"), id="invalid UTF-8"),
        pytest.param(string(b"\xed\xa0\x80"), id="encoded surrogate"),
        pytest.param(string(b"\xc0\x80"), id="overlong U+0000"),
        pytest.param(string(b"a\x00b"), id="U+0000"),
        pytest.param(b"\x00\x09abc", id="string past the end"),
        pytest.param(string("c") + b"!", id="trailing byte"),
    ],
)
def test_malformed_client_identifier(payload: bytes) -> None:
    server = MQTTCodec("server")
    error = fail(server, connect_bytes(5, 0x02, payload))
    assert error.reason_code == R.MALFORMED_PACKET
    assert error.response == ConnAck(False, R.MALFORMED_PACKET)
    assert server.send(error.response) == b"\x20\x03\x00\x81\x00"


def test_v5_connect_properties_errors() -> None:
    cases = [
        (b"\x02\x16\x00", R.MALFORMED_PACKET),  # auth data runs past the properties
        (b"\x03\x16\x00\x00", R.PROTOCOL_ERROR),  # auth data without auth method
        (b"\x03\x21\x00\x00", R.PROTOCOL_ERROR),  # receive maximum 0
        (b"\x05\x27\x00\x00\x00\x00", R.PROTOCOL_ERROR),  # maximum packet size 0
        (b"\x02\x17\x02", R.PROTOCOL_ERROR),  # request problem information 2
        (b"\x02\x19\x07", R.PROTOCOL_ERROR),  # request response information 7
        (b"\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02", R.PROTOCOL_ERROR),  # duplicate
        (b"\x02\x01\x01", R.PROTOCOL_ERROR),  # payload format indicator not on CONNECT
        (b"\x02\x04\x01", R.MALFORMED_PACKET),  # unknown property 0x04
        (b"\x05\x80\x80\x80\x80\x01", R.MALFORMED_PACKET),  # five-byte property identifier
        (b"\x09", R.MALFORMED_PACKET),  # property length past the packet
    ]
    for properties, reason in cases:
        error = fail(MQTTCodec("server"), connect_bytes(5, properties=properties))
        assert error.reason_code == reason, properties
        assert error.response == ConnAck(False, reason)


# --- PUBLISH ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first,body,reason",
    [
        pytest.param(0x36, string("a") + b"\x00\x01", R.MALFORMED_PACKET, id="QoS 3"),
        pytest.param(0x38, string("a"), R.MALFORMED_PACKET, id="QoS 0 with DUP"),
        pytest.param(0x32, string("a") + b"\x00\x00", R.PROTOCOL_ERROR, id="packet id 0"),
        pytest.param(0x32, string("a") + b"\x00", R.MALFORMED_PACKET, id="packet id cut"),
        pytest.param(0x30, string("a/+"), R.TOPIC_NAME_INVALID, id="+ in topic"),
        pytest.param(0x30, string("a/#"), R.TOPIC_NAME_INVALID, id="# in topic"),
        pytest.param(0x30, string(b"a\x00"), R.MALFORMED_PACKET, id="U+0000 in topic"),
        pytest.param(0x30, string(b"\xed\xbf\xbf"), R.MALFORMED_PACKET, id="surrogate"),
        pytest.param(0x30, string(b"\x80"), R.MALFORMED_PACKET, id="bad UTF-8"),
        pytest.param(0x30, b"\x00\x05ab", R.MALFORMED_PACKET, id="topic past the end"),
        pytest.param(0x30, b"\x00", R.MALFORMED_PACKET, id="topic length cut"),
        pytest.param(0x30, string(""), R.PROTOCOL_ERROR, id="empty topic"),
    ],
)
@pytest.mark.parametrize("version", [4, 5])
def test_malformed_publish(first: int, body: bytes, reason: ReasonCode, version: int) -> None:
    if version == 5 and reason != R.MALFORMED_PACKET:
        body += b"\x00"  # empty properties
    error = fail(session(version), frame(first, body))
    assert error.reason_code == reason
    assert error.response == (Disconnect(reason) if version == 5 else None)


def test_v5_publish_properties_errors() -> None:
    cases = [
        (b"\x04\x0b\x01\x26\x00", R.MALFORMED_PACKET),  # user property cut short
        (b"\x02\x0b\x05", R.PROTOCOL_ERROR),  # subscription id from a client
        (b"\x0a\x02\x00\x00\x00\x01\x02\x00\x00\x00\x02", R.PROTOCOL_ERROR),  # expiry twice
        (b"\x05\x11\x00\x00\x00\x01", R.PROTOCOL_ERROR),  # session expiry not on PUBLISH
        (b"\x02\x01\x02", R.PROTOCOL_ERROR),  # payload format indicator 2
        (b"\x03\x23\x00\x00", R.TOPIC_ALIAS_INVALID),  # topic alias 0
        (b"\x03\x23\x00\x01", R.TOPIC_ALIAS_INVALID),  # topic alias above maximum (0)
    ]
    for properties, reason in cases:
        error = fail(session(5), frame(0x30, string("a") + properties))
        assert error.reason_code == reason, properties
        assert error.response == Disconnect(reason)


def test_topic_alias_rules() -> None:
    client, server = connected_pair(5, connack=ConnAck(properties=Properties(topic_alias_maximum=2)))
    alias = Properties(topic_alias=2)
    with pytest.raises(MQTTLocalProtocolError):
        client.send(Publish("", b"x", properties=alias))  # not set yet: refused locally
    server.receive_data(frame(0x30, string("") + b"\x03\x23\x00\x02" + b"x"))
    with pytest.raises(MQTTProtocolError) as caught:
        server.next_event()
    assert caught.value.reason_code == R.PROTOCOL_ERROR
    assert "before it was set" in str(caught.value)
    client, server = connected_pair(5, connack=ConnAck(properties=Properties(topic_alias_maximum=2)))
    error = fail(server, frame(0x30, string("t") + b"\x03\x23\x00\x03"))
    assert error.reason_code == R.TOPIC_ALIAS_INVALID


def test_publish_with_user_properties_may_repeat_names() -> None:
    server = session(5)
    server.receive_data(
        frame(0x30, string("t") + b"\x0e" + (b"\x26" + string("k") + string("v")) * 2 + b"p")
    )
    event = server.next_event()
    assert event.properties.user_properties == (("k", "v"), ("k", "v"))
    assert event.payload == b"p"


# --- acknowledgements, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, AUTH ----------------------------------


@pytest.mark.parametrize(
    "version,data,reason",
    [
        (4, frame(0x40, b"\x00\x00"), R.PROTOCOL_ERROR),  # PUBACK packet id 0
        (4, frame(0x40, b"\x00\x01\x00"), R.MALFORMED_PACKET),  # v3 PUBACK of 3 bytes
        (4, frame(0x40, b"\x00"), R.MALFORMED_PACKET),  # PUBACK of 1 byte
        (5, frame(0x40, b"\x00\x01\x05"), R.PROTOCOL_ERROR),  # reason 0x05 not valid
        (5, frame(0x62, b"\x00\x01\x10"), R.PROTOCOL_ERROR),  # PUBREL cannot say 0x10
        (5, frame(0x50, b"\x00\x01\x00\x05"), R.MALFORMED_PACKET),  # properties past the end
        (5, frame(0x70, b"\x00\x01\x00\x00\x00"), R.MALFORMED_PACKET),  # byte after properties
        (4, frame(0x82, b"\x00\x01"), R.PROTOCOL_ERROR),  # SUBSCRIBE without filters
        (5, frame(0x82, b"\x00\x01\x00"), R.PROTOCOL_ERROR),  # SUBSCRIBE without filters
        (4, frame(0x82, b"\x00\x00" + string("a") + b"\x00"), R.PROTOCOL_ERROR),  # id 0
        (4, frame(0x82, b"\x00\x01" + string("a") + b"\x03"), R.MALFORMED_PACKET),  # QoS 3
        (4, frame(0x82, b"\x00\x01" + string("a") + b"\x04"), R.MALFORMED_PACKET),  # reserved
        (4, frame(0x82, b"\x00\x01" + string("a")), R.MALFORMED_PACKET),  # no options byte
        (5, frame(0x82, b"\x00\x01\x00" + string("a") + b"\x40"), R.MALFORMED_PACKET),
        (5, frame(0x82, b"\x00\x01\x00" + string("a") + b"\x30"), R.PROTOCOL_ERROR),  # RH 3
        (5, frame(0x82, b"\x00\x01\x00" + string("$share/g/a") + b"\x04"), R.PROTOCOL_ERROR),
        (5, frame(0x82, b"\x00\x01\x02\x0b\x00" + string("a") + b"\x00"), R.PROTOCOL_ERROR),
        (5, frame(0x82, b"\x00\x01\x04\x0b\x01\x0b\x02" + string("a") + b"\x00"),
         R.PROTOCOL_ERROR),  # two subscription identifiers
        (4, frame(0x82, b"\x00\x01" + string("a/#/b") + b"\x00"), R.TOPIC_FILTER_INVALID),
        (4, frame(0x82, b"\x00\x01" + string("a+") + b"\x00"), R.TOPIC_FILTER_INVALID),
        (4, frame(0x82, b"\x00\x01" + string("") + b"\x00"), R.TOPIC_FILTER_INVALID),
        (4, frame(0x82, b"\x00\x01" + string("$share/g") + b"\x00"), R.TOPIC_FILTER_INVALID),
        (4, frame(0x82, b"\x00\x01" + string("$share//a") + b"\x00"), R.TOPIC_FILTER_INVALID),
        (5, frame(0x82, b"\x00\x01\x00" + string("$share/g#/a") + b"\x00"),
         R.TOPIC_FILTER_INVALID),
        (4, frame(0xA2, b"\x00\x01"), R.PROTOCOL_ERROR),  # UNSUBSCRIBE without filters
        (4, frame(0xA2, b"\x00\x01" + string("#/a")), R.TOPIC_FILTER_INVALID),
        (4, frame(0xA2, b"\x00\x01" + string(b"\xff")), R.MALFORMED_PACKET),
        (4, frame(0xC0, b"\x00"), R.MALFORMED_PACKET),  # PINGREQ with a body
        (4, frame(0xE0, b"\x00"), R.MALFORMED_PACKET),  # v3 DISCONNECT with a body
        (5, frame(0xE0, b"\x03"), R.PROTOCOL_ERROR),  # DISCONNECT reason 0x03
        (5, frame(0xE0, b"\x00\x03\x26\x00"), R.MALFORMED_PACKET),  # user property cut
        (5, frame(0xF0, b"\x00"), R.PROTOCOL_ERROR),  # client AUTH success
        (5, frame(0xF0, b"\x05"), R.PROTOCOL_ERROR),  # AUTH reason 0x05
        (5, frame(0xF0, b"\x18\x00"), R.PROTOCOL_ERROR),  # AUTH without the method
        (5, frame(0xF0, b"\x18" + frame(0x00, b"\x15" + string("OTHER"))[1:]),
         R.PROTOCOL_ERROR),  # AUTH naming another method
        (4, frame(0x20, b"\x00\x00"), R.PROTOCOL_ERROR),  # a client sending CONNACK
        (4, frame(0x90, b"\x00\x01\x00"), R.PROTOCOL_ERROR),  # a client sending SUBACK
        (4, frame(0xD0, b""), R.PROTOCOL_ERROR),  # a client sending PINGRESP
    ],
)
def test_malformed_session_packets(version: int, data: bytes, reason: ReasonCode) -> None:
    server = session(version)
    error = fail(server, data)
    assert error.reason_code == reason
    if version == 5:
        assert error.response == Disconnect(reason)
        assert server.send(error.response)[:3] == bytes((0xE0, 1, reason))
    else:
        assert error.response is None


def test_auth_needs_a_method_in_connect() -> None:
    server = session(4 + 1, connack_sent=False)
    assert server.connect.properties.authentication_method == AUTH_METHOD
    plain = MQTTCodec("server")
    plain.receive_data(MQTTCodec("client").send(Connect("c", 5)))
    plain.next_event()
    auth = frame(0xF0, b"\x18" + frame(0x00, b"\x15" + string(AUTH_METHOD))[1:])
    error = fail(plain, auth)
    assert error.reason_code == R.PROTOCOL_ERROR
    assert error.response == ConnAck(False, R.PROTOCOL_ERROR)  # before CONNACK: refuse
    server.receive_data(auth)
    assert server.next_event().reason_code == R.CONTINUE_AUTHENTICATION


def test_disconnect_cannot_set_session_expiry_after_zero() -> None:
    plain = MQTTCodec("server")
    plain.receive_data(MQTTCodec("client").send(Connect("c", 5)))
    plain.next_event()
    plain.send(ConnAck())
    error = fail(plain, frame(0xE0, b"\x00\x05\x11\x00\x00\x00\x0a"))
    assert error.reason_code == R.PROTOCOL_ERROR
    ok = session(5)  # the handshake CONNECT set a session expiry interval
    ok.receive_data(frame(0xE0, b"\x00\x05\x11\x00\x00\x00\x0a"))
    assert ok.next_event() == Disconnect(0, Properties(session_expiry_interval=10))


def test_data_after_disconnect_is_refused() -> None:
    server = session(4)
    error = fail(server, b"\xe0\x00\xc0\x00")
    assert error.reason_code == R.PROTOCOL_ERROR
    assert "PINGREQ" in str(error)


def test_error_before_connack_is_answered_with_connack() -> None:
    server = session(5, connack_sent=False)
    error = fail(server, frame(0x82, b"\x00\x01\x00" + string("a/#/b") + b"\x00"))
    assert error.reason_code == R.TOPIC_FILTER_INVALID
    # 0x8F is not a CONNACK reason code, and no DISCONNECT may precede the CONNACK.
    assert error.response == ConnAck(False, R.UNSPECIFIED_ERROR)
    assert server.send(error.response) == b"\x20\x03\x00\x80\x00"


# --- after an error ---------------------------------------------------------------------------


def test_codec_refuses_everything_after_an_error() -> None:
    server = session(5)
    error = fail(server, b"\x36\x00")
    assert server.state.name == "FAILED"
    assert server.error is error
    with pytest.raises(MQTTProtocolError) as again:
        server.next_event()
    assert again.value is error
    with pytest.raises(MQTTProtocolError):
        server.receive_data(b"\xc0\x00")
    with pytest.raises(MQTTLocalProtocolError, match="cannot send PUBLISH in state FAILED"):
        server.send(Publish("a", b""))
    with pytest.raises(MQTTLocalProtocolError, match="only Disconnect is allowed, not CONNACK"):
        server.send(ConnAck())
    assert server.send(error.response) == b"\xe0\x01\x81"
    assert server.state.name == "CLOSED"
    with pytest.raises(MQTTLocalProtocolError):
        server.send(Disconnect())


def test_error_names_packet_and_offset() -> None:
    server = session(4)
    ping = b"\xc0\x00"
    error = fail(server, ping + ping + b"\x36\x00")
    assert str(error).startswith("PUBLISH packet at stream offset ")
    offset = len(MQTTCodec("client").send(handshake_connect(4))) + 4
    assert f"offset {offset}:" in str(error)
    assert "QoS 3" in str(error) and "0x81 MALFORMED_PACKET" in str(error)


# --- garbage ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    garbage=st.binary(min_size=1, max_size=64),
    version=st.sampled_from([None, 3, 4, 5]),
    chunk=st.integers(1, 8),
)
def test_garbage_input_only_raises_protocol_errors(
    garbage: bytes, version: int | None, chunk: int
) -> None:
    server = MQTTCodec("server", maximum_packet_size=1024) if version is None else session(version)
    try:
        for offset in range(0, len(garbage), chunk):
            server.receive_data(garbage[offset : offset + chunk])
            drain(server)
    except MQTTProtocolError as error:
        assert server.state.name == "FAILED"
        if error.response is not None:
            assert server.send(error.response)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_valid_packets_never_raise_anything_else(data: st.DataObject) -> None:
    from mqtt_strategies import client_session_packets

    version = data.draw(st.sampled_from([4, 5]))
    client, server = connected_pair(version)
    packet = data.draw(client_session_packets(version))
    encoded = bytearray(client.send(packet))
    for _ in range(data.draw(st.integers(1, 3))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    server.receive_data(bytes(encoded))
    try:
        drain(server)
    except MQTTProtocolError:
        pass
