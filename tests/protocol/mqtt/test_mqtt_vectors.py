"""Known byte vectors, worked out from the layouts and examples in the MQTT 3.1.1 and 5.0 specs,
and paho-mqtt's v5 property codec as an independent oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt_strategies import connected_pair, properties, transfer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from pybroker.protocol.mqtt.base import PacketType
from pybroker.protocol.mqtt.codec import (
    NEED_DATA,
    ConnAck,
    Connect,
    ConnectReturnCode,
    Disconnect,
    MQTTCodec,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from pybroker.protocol.mqtt.properties import (
    WILL_PROPERTIES,
    Properties,
    PropertyId,
    allowed_properties,
    decode_properties,
    encode_properties,
)
from pybroker.protocol.mqtt.wire import (
    decode_variable_byte_integer,
    encode_variable_byte_integer,
    variable_byte_integer_size,
)

# MQTT 5 §1.5.5 / 3.1.1 §2.2.3 table: the boundaries of 1, 2, 3 and 4 byte encodings.
REMAINING_LENGTHS = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (16_383, "ff7f"),
    (16_384, "808001"),
    (2_097_151, "ffff7f"),
    (2_097_152, "80808001"),
    (268_435_455, "ffffff7f"),
]


@pytest.mark.parametrize("value,encoded", REMAINING_LENGTHS)
def test_variable_byte_integer_vectors(value: int, encoded: str) -> None:
    data = bytes.fromhex(encoded)
    assert encode_variable_byte_integer(value) == data
    assert variable_byte_integer_size(value) == len(data)
    assert decode_variable_byte_integer(data, 0, len(data)) == (value, len(data))


@pytest.mark.parametrize("value,encoded", REMAINING_LENGTHS[1:6])
def test_remaining_length_in_a_publish_header(value: int, encoded: str) -> None:
    """A PUBLISH whose remaining length is each boundary value (QoS 0, topic "t")."""
    client, server = connected_pair(4)
    packet = Publish("t", bytes(value - 3))
    data = client.send(packet)
    assert data[1 : 1 + len(encoded) // 2] == bytes.fromhex(encoded)
    assert len(data) == 1 + len(encoded) // 2 + value
    server.receive_data(data[:-1])
    assert server.next_event() is NEED_DATA
    server.receive_data(data[-1:])
    assert server.next_event() == packet


# MQTT 3.1.1 §3.1.2.10 figure 3.6: protocol name, level 4, flags 0xCE (user name, password,
# will QoS 1, will flag, clean session), keep alive 10; the payload is ours.
CONNECT_311 = bytes.fromhex(
    "10 1c"  # CONNECT, remaining length 28
    "0004 4d515454 04 ce 000a"  # "MQTT", level 4, flags, keep alive 10
    "0002 6331"  # client identifier "c1"
    "0001 77"  # will topic "w"
    "0003 627965"  # will message "bye"
    "0001 75"  # user name "u"
    "0001 70"  # password "p"
)
CONNECT_311_PACKET = Connect(
    "c1", 4, True, 10, "u", b"p", Will("w", b"bye", 1, False)
)

# MQTT 5 §3.1.2.11 figure 3-7: the same flags, keep alive 10, Session Expiry Interval 10.
CONNECT_5 = bytes.fromhex(
    "10 23"  # CONNECT, remaining length 35
    "0004 4d515454 05 ce 000a"  # "MQTT", level 5, flags, keep alive 10
    "05 11 0000000a"  # properties: session expiry interval 10
    "0002 6331"  # client identifier "c1"
    "00"  # will properties: none
    "0001 77 0003 627965 0001 75 0001 70"
)
CONNECT_5_PACKET = Connect(
    "c1", 5, True, 10, "u", b"p", Will("w", b"bye", 1, False),
    Properties(session_expiry_interval=10),
)

# MQTT 3.1 (protocol name "MQIsdp", level 3).
CONNECT_31 = bytes.fromhex("10 12 0006 4d5149736470 03 02 003c 0004 74657374")
CONNECT_31_PACKET = Connect("test", 3, True, 60)


@pytest.mark.parametrize(
    "data,packet",
    [(CONNECT_311, CONNECT_311_PACKET), (CONNECT_5, CONNECT_5_PACKET), (CONNECT_31, CONNECT_31_PACKET)],
    ids=["3.1.1", "5", "3.1"],
)
def test_connect_vectors(data: bytes, packet: Connect) -> None:
    server = MQTTCodec("server")
    server.receive_data(data)
    assert server.next_event() == packet
    assert server.protocol_version == packet.protocol_version
    assert MQTTCodec("client").send(packet) == data


def _server(version: int) -> MQTTCodec:
    server = MQTTCodec("server")
    server.receive_data(MQTTCodec("client").send(Connect("c", version)))
    server.next_event()
    return server


@pytest.mark.parametrize(
    "version,packet,data",
    [
        (4, ConnAck(), "20020000"),
        (4, ConnAck(True), "20020100"),
        (3, ConnAck(True), "20020000"),  # MQTT 3.1 has no session present flag
        (4, ConnAck(False, ConnectReturnCode.NOT_AUTHORIZED), "20020005"),
        (4, ConnAck(False, ReasonCode.BAD_USER_NAME_OR_PASSWORD), "20020004"),  # v5 code mapped
        (5, ConnAck(), "2003000000"),
        (5, ConnAck(False, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), "2003008400"),
        (5, ConnAck(False, ConnectReturnCode.SERVER_UNAVAILABLE), "2003008800"),  # v3 mapped
        (5, ConnAck(False, 0, Properties(topic_alias_maximum=10, retain_available=False)),
         "200800000522000a2500"),
    ],
)
def test_connack_vectors(version: int, packet: ConnAck, data: str) -> None:
    assert _server(version).send(packet) == bytes.fromhex(data)


@pytest.mark.parametrize(
    "version,packet,data",
    [
        (4, PingResp(), "d000"),
        (4, PubAck(1), "40020001"),
        (5, PubAck(1), "40020001"),  # success and no properties: the short form
        (5, PubAck(1, ReasonCode.NO_MATCHING_SUBSCRIBERS), "4003000110"),
        (5, PubAck(1, 0, Properties(reason_string="ok")), "4009000100051f00026f6b"),
        (4, PubRel(7), "62020007"),
        (4, Publish("a/b", b"hi", 1, False, True, 10), "3a090003612f62000a6869"),
        (5, Publish("a/b", b"hi", 0, True), "31080003612f62006869"),
        # MQTT 3.1.1 §3.9.3 figure 3.26: SUBACK granting QoS 0, QoS 2, and a failure.
        (4, SubAck(10, (0, 2, 0x80)), "9005000a000280"),
        (4, SubAck(10, (0, ReasonCode.NOT_AUTHORIZED)), "9004000a0080"),  # v5 failure mapped
        (4, UnsubAck(10), "b002000a"),
        (5, UnsubAck(10, (0, 0x11)), "b005000a000011"),
        (5, Disconnect(), "e000"),
        (5, Disconnect(ReasonCode.SERVER_SHUTTING_DOWN), "e0018b"),
    ],
)
def test_server_packet_vectors(version: int, packet: object, data: str) -> None:
    server = _server(version)
    server.send(ConnAck())
    assert server.send(packet) == bytes.fromhex(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "version,packet,data",
    [
        # MQTT 3.1.1 §3.8.3 figure 3.22: SUBSCRIBE "a/b" QoS 1 and "c/d" QoS 2, packet id 10.
        (4, Subscribe(10, (Subscription("a/b", 1), Subscription("c/d", 2))),
         "820e000a0003612f62010003632f6402"),
        # MQTT 3.1.1 §3.10.3 figure 3.30: UNSUBSCRIBE "a/b" and "c/d".
        (4, Unsubscribe(10, ("a/b", "c/d")), "a20c000a0003612f620003632f64"),
        # MQTT 5 subscription options: QoS 1, no local, retain as published, retain handling 2.
        (5, Subscribe(10, (Subscription("a/b", 1, True, True, 2),)), "8209000a000003612f622d"),
        (5, Subscribe(10, (Subscription("a/b"),), Properties(subscription_identifiers=(300,))),
         "820c000a030bac020003612f6200"),
        (4, PingReq(), "c000"),
        (4, Disconnect(), "e000"),
    ],
)
def test_client_packet_vectors(version: int, packet: object, data: str) -> None:
    client = MQTTCodec("client")
    client.send(Connect("c", version))
    encoded = client.send(packet)  # type: ignore[arg-type]
    assert encoded == bytes.fromhex(data)
    server = _server(version)
    server.receive_data(encoded)
    assert server.next_event() == packet


def test_topic_alias_vector_is_resolved() -> None:
    client, server = connected_pair(5, connack=ConnAck(properties=Properties(topic_alias_maximum=4)))
    first = client.send(Publish("a/b", b"1", properties=Properties(topic_alias=4)))
    second = client.send(Publish("", b"2", properties=Properties(topic_alias=4)))
    assert second == bytes.fromhex("3007 0000 03 230004 32")
    server.receive_data(first + second)
    assert server.next_event() == Publish("a/b", b"1")
    assert server.next_event() == Publish("a/b", b"2")  # alias resolved, property dropped


# --- paho-mqtt's property codec as an oracle ---------------------------------------------------

_PAHO_TYPES = {
    PacketType.CONNECT: PacketTypes.CONNECT, PacketType.CONNACK: PacketTypes.CONNACK,
    PacketType.PUBLISH: PacketTypes.PUBLISH, PacketType.PUBACK: PacketTypes.PUBACK,
    PacketType.PUBREC: PacketTypes.PUBREC, PacketType.PUBREL: PacketTypes.PUBREL,
    PacketType.PUBCOMP: PacketTypes.PUBCOMP, PacketType.SUBSCRIBE: PacketTypes.SUBSCRIBE,
    PacketType.SUBACK: PacketTypes.SUBACK, PacketType.UNSUBSCRIBE: PacketTypes.UNSUBSCRIBE,
    PacketType.UNSUBACK: PacketTypes.UNSUBACK, PacketType.DISCONNECT: PacketTypes.DISCONNECT,
    PacketType.AUTH: PacketTypes.AUTH, WILL_PROPERTIES: PacketTypes.WILLMESSAGE,
}


def _paho_name(identifier: PropertyId) -> str:
    return identifier.name.title().replace("_", "").replace("Qos", "QoS")


def test_allowed_properties_agree_with_paho() -> None:
    paho = PahoProperties(PacketTypes.PUBLISH)
    for context, paho_type in _PAHO_TYPES.items():
        expected = {
            identifier for identifier, (_, packets) in paho.properties.items()
            if paho_type in packets
        }
        assert set(allowed_properties(context)) == expected, context


def _as_paho_values(ours: Properties) -> dict[str, object]:
    values: dict[str, object] = {}
    for identifier in PropertyId:
        from pybroker.protocol.mqtt.properties import property_attribute

        value = getattr(ours, property_attribute(identifier))
        if value is None or value == ():
            continue
        if isinstance(value, bool):
            value = int(value)
        if identifier == PropertyId.USER_PROPERTY:
            value = list(value)
        if identifier == PropertyId.SUBSCRIPTION_IDENTIFIER:
            value = list(value)
        values[_paho_name(identifier)] = value
    return values


_ORACLE_CONTEXTS = [PacketType.CONNECT, PacketType.CONNACK, PacketType.PUBLISH, WILL_PROPERTIES,
                    PacketType.DISCONNECT, PacketType.SUBACK]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_properties_agree_with_paho(data: st.DataObject) -> None:
    context = data.draw(st.sampled_from(_ORACLE_CONTEXTS))
    ours = data.draw(properties(context, subscription_identifiers=3))
    encoded = encode_properties(ours, context)
    # Our bytes, read by paho.
    theirs = PahoProperties(_PAHO_TYPES[context])
    theirs.unpack(encoded)
    paho_values = {
        name: getattr(theirs, name) for name in _as_paho_values(ours)
    }
    assert paho_values == _as_paho_values(ours)
    # Paho's bytes, read by us.
    packed = theirs.pack()
    assert decode_properties(packed, 0, len(packed), context) == (ours, len(packed))


def test_properties_vector() -> None:
    ours = Properties(
        payload_format_indicator=1, correlation_data=b"xy", subscription_identifiers=(3, 500),
        user_properties=(("a", "b"), ("a", "c")),
    )
    # Written by paho-mqtt 2.2 for the same properties (its order: as assigned).
    paho = bytes.fromhex("1a010109000278790b030bf4032600016100016226000161000163")
    assert decode_properties(paho, 0, len(paho), PacketType.PUBLISH) == (ours, len(paho))
    assert len(encode_properties(ours, PacketType.PUBLISH)) == len(paho)


def test_will_properties_round_trip_in_connect() -> None:
    will = Will("w", b"x", 2, True, Properties(will_delay_interval=30, content_type="text/plain"))
    client, server = MQTTCodec("client"), MQTTCodec("server")
    assert transfer(client, server, Connect("c", 5, will=will)).will == will
