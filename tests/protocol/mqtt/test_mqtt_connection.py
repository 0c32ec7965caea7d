"""Connection-level behaviour: the state table, what ``send`` refuses, the peer's limits."""

from __future__ import annotations

import pytest
from mqtt_strategies import connected_pair, handshake_connect, transfer

from pybroker.protocol.mqtt.base import v3_connect_return_code, v5_connack_reason_code
from pybroker.protocol.mqtt.codec import (
    NEED_DATA,
    Auth,
    ConnAck,
    Connect,
    ConnectionState,
    ConnectReturnCode,
    Disconnect,
    MQTTCodec,
    MQTTLocalProtocolError,
    MQTTProtocolError,
    PacketTooLargeError,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from pybroker.protocol.mqtt.properties import Properties


def server_after(connect: Connect, *, connack: ConnAck | None = ConnAck()) -> MQTTCodec:
    server = MQTTCodec("server")
    transfer(MQTTCodec("client"), server, connect)
    if connack is not None:
        server.send(connack)
    return server


def test_states_through_a_connection() -> None:
    client, server = MQTTCodec("client"), MQTTCodec("server")
    assert client.state is server.state is ConnectionState.AWAIT_CONNECT
    transfer(client, server, handshake_connect(5))
    assert client.state is server.state is ConnectionState.AWAIT_CONNACK
    assert client.protocol_version == server.protocol_version == 5
    transfer(client, server, PingReq())  # a client need not wait for the CONNACK
    transfer(server, client, ConnAck())
    assert client.state is server.state is ConnectionState.CONNECTED
    transfer(client, server, Disconnect())
    assert client.state is server.state is ConnectionState.CLOSED
    with pytest.raises(MQTTLocalProtocolError, match="cannot send PINGREQ in state CLOSED"):
        client.send(PingReq())


@pytest.mark.parametrize("version,code", [(4, ConnectReturnCode.NOT_AUTHORIZED),
                                          (5, ReasonCode.BANNED)])
def test_refusing_connack_closes(version: int, code: int) -> None:
    client, server = MQTTCodec("client"), MQTTCodec("server")
    transfer(client, server, Connect("c", version))
    assert transfer(server, client, ConnAck(False, code)).reason_code == code
    assert client.state is server.state is ConnectionState.CLOSED
    with pytest.raises(MQTTLocalProtocolError):
        server.send(PingResp())


@pytest.mark.parametrize(
    "packet,message",
    [
        (Publish("a", b""), "cannot send PUBLISH in state AWAIT_CONNACK"),
        (Disconnect(), "cannot send DISCONNECT in state AWAIT_CONNACK"),
        (Connect("again"), "a server cannot send CONNECT"),
        (PingReq(), "a server cannot send PINGREQ"),
    ],
)
def test_server_send_state_rules(packet: object, message: str) -> None:
    server = server_after(handshake_connect(5), connack=None)
    with pytest.raises(MQTTLocalProtocolError, match=message):
        server.send(packet)  # type: ignore[arg-type]
    assert server.state is ConnectionState.AWAIT_CONNACK  # unchanged
    server.send(Auth(ReasonCode.CONTINUE_AUTHENTICATION,
                     Properties(authentication_method="SCRAM-SHA-256")))
    server.send(ConnAck())


def test_nothing_before_connect() -> None:
    with pytest.raises(MQTTLocalProtocolError, match="in state AWAIT_CONNECT"):
        MQTTCodec("server").send(ConnAck())
    with pytest.raises(MQTTLocalProtocolError, match="in state AWAIT_CONNECT"):
        MQTTCodec("client").send(PingReq())
    client = MQTTCodec("client")
    client.receive_data(b"\x20\x02\x00\x00")
    with pytest.raises(MQTTProtocolError, match="before CONNECT was sent"):
        client.next_event()


def test_client_needs_connack_first() -> None:
    client = MQTTCodec("client")
    client.send(Connect("c", 5))
    client.receive_data(b"\x30\x04\x00\x01a\x00")
    with pytest.raises(MQTTProtocolError, match="PUBLISH is not allowed in state AWAIT_CONNACK"):
        client.next_event()


def test_mqtt3_has_no_server_disconnect_nor_auth() -> None:
    client, server = connected_pair(4)
    with pytest.raises(MQTTLocalProtocolError, match="close the connection"):
        server.send(Disconnect())
    with pytest.raises(MQTTLocalProtocolError, match="MQTT 3 has no AUTH"):
        client.send(Auth())
    client.receive_data(b"\xe0\x00")
    with pytest.raises(MQTTProtocolError, match="MQTT 3 servers do not send DISCONNECT"):
        client.next_event()


@pytest.mark.parametrize(
    "packet,message",
    [
        (Publish("a", b"", 3, packet_id=1), "QoS must be 0, 1 or 2"),
        (Publish("a", b"", 1), "packet identifier must be 1..65535"),
        (Publish("a", b"", 1, packet_id=0), "packet identifier must be 1..65535"),
        (Publish("a", b"", 2, packet_id=65_536), "packet identifier must be 1..65535"),
        (Publish("a", b"", 0, packet_id=5), "QoS 0 PUBLISH has no packet identifier"),
        (Publish("a", b"", 0, dup=True), "cannot have DUP"),
        (Publish("a/+", b""), "wildcard"),
        (Publish("", b""), "topic name is empty"),
        (Publish("a\x00", b""), "U\\+0000"),
        (Publish("\ud800", b""), "cannot be encoded"),
        (Publish("a", "text"), "payload must be bytes"),  # type: ignore[arg-type]
        (Publish("a", b"", properties=Properties(session_expiry_interval=1)), "not allowed"),
        (Publish("a", b"", properties=Properties(topic_alias=1)), "outside the peer's 1..0"),
        (Publish("a", b"", properties=Properties(subscription_identifiers=(1,))),
         "client PUBLISH cannot carry subscription identifiers"),
        (Publish("a", b"", properties=Properties(payload_format_indicator=2)), "must be 0 or 1"),
        (Publish("a", b"", properties=Properties(message_expiry_interval=-1)), "0..4294967295"),
        (Publish("a", b"", properties=Properties(user_properties=(("a",),))), "pair"),
        (Publish("a", b"", properties=Properties(content_type=b"x")), "must be a str"),
        (Publish("a", b"", properties=Properties(correlation_data="x")), "must be bytes"),
        (PubAck(0), "packet identifier"),
        (PubAck(1, ReasonCode.GRANTED_QOS_2), "not valid in PUBACK"),
        (Subscribe(1, ()), "at least one subscription"),
        (Subscribe(1, (Subscription("a/#/b"),)), "'#' must be the whole last level"),
        (Subscribe(1, (Subscription("a", 0, retain_handling=3),)), "retain handling"),
        (Subscribe(1, (Subscription("$share/g/a", 0, no_local=True),)), "shared"),
        (Subscribe(1, (Subscription("a"),), Properties(subscription_identifiers=(1, 2))),
         "only once"),
        (Subscribe(1, (Subscription("a"),), Properties(subscription_identifiers=(0,))),
         "must not be 0"),
        (Unsubscribe(1, ()), "at least one topic filter"),
        (Unsubscribe(1, ("+x",)), "'\\+' must be a whole level"),
        (Disconnect(ReasonCode.GRANTED_QOS_1), "not valid in DISCONNECT"),
        (Auth(ReasonCode.NOT_AUTHORIZED), "not valid in AUTH"),
        ("not a packet", "not an MQTT packet"),
    ],
)
def test_client_send_refuses_invalid_packets(packet: object, message: str) -> None:
    client, server = connected_pair(5)
    with pytest.raises(MQTTLocalProtocolError, match=message):
        client.send(packet)  # type: ignore[arg-type]
    assert client.state is ConnectionState.CONNECTED
    assert transfer(client, server, PingReq()) == PingReq()  # still usable


@pytest.mark.parametrize(
    "version,packet,message",
    [
        (5, ConnAck(True, ReasonCode.NOT_AUTHORIZED), "session present with a refusing"),
        (5, ConnAck(False, ReasonCode.TOPIC_FILTER_INVALID), "not valid in CONNACK"),
        (4, ConnAck(False, ReasonCode.MALFORMED_PACKET), "no MQTT 3 return code"),
        (4, ConnAck(True, ConnectReturnCode.IDENTIFIER_REJECTED), "session present"),
        (5, ConnAck(False, 0, Properties(maximum_qos=2)), "must be 0 or 1"),
        (5, ConnAck(False, 0, Properties(receive_maximum=0)), "must not be 0"),
        (5, ConnAck(False, 0, Properties(will_delay_interval=1)), "not allowed in CONNACK"),
    ],
)
def test_connack_send_rules(version: int, packet: ConnAck, message: str) -> None:
    server = server_after(Connect("c", version), connack=None)
    with pytest.raises(MQTTLocalProtocolError, match=message):
        server.send(packet)
    assert server.state is ConnectionState.AWAIT_CONNACK


def test_server_packet_rules() -> None:
    _client, server = connected_pair(4)
    with pytest.raises(MQTTLocalProtocolError, match="neither QoS nor failure"):
        server.send(SubAck(1, (5,)))
    with pytest.raises(MQTTLocalProtocolError, match="at least one reason code"):
        server.send(SubAck(1, ()))
    _client, server = connected_pair(5)
    with pytest.raises(MQTTLocalProtocolError, match="one reason code per filter"):
        server.send(UnsubAck(1))
    with pytest.raises(MQTTLocalProtocolError, match="not valid in SUBACK"):
        server.send(SubAck(1, (ReasonCode.NO_SUBSCRIPTION_EXISTED,)))


def test_v3_leaves_out_v5_fields() -> None:
    client, server = connected_pair(4)
    reason = Properties(reason_string="why", user_properties=(("k", "v"),))
    assert server.send(PubAck(1, ReasonCode.NO_MATCHING_SUBSCRIBERS, reason)) == b"\x40\x02\x00\x01"
    sent = server.send(Publish("a", b"x", properties=Properties(content_type="text/plain")))
    assert sent == b"\x30\x04\x00\x01ax"
    data = client.send(Subscribe(1, (Subscription("a", 1, True, True, 2),)))
    assert data.endswith(b"\x01")  # only the QoS survives
    assert server.send(UnsubAck(1, (ReasonCode.NO_SUBSCRIPTION_EXISTED,))) == b"\xb0\x02\x00\x01"


def test_peer_maximum_packet_size() -> None:
    connect = Connect("c", 5, properties=Properties(maximum_packet_size=32))
    server = server_after(connect)
    assert server.peer_maximum_packet_size == 32
    fits = Publish("t", bytes(26))  # 2 + 3 + 1 + 26 = 32
    assert len(server.send(fits)) == 32
    with pytest.raises(PacketTooLargeError) as caught:
        server.send(Publish("t", bytes(27)))
    assert (caught.value.size, caught.value.limit) == (33, 32)
    assert server.state is ConnectionState.CONNECTED
    # Acknowledgements drop the Reason String, then the User Properties, to fit (v5 §3.4.2.2.2).
    user = (("key", "value"),)
    big_reason = PubAck(1, ReasonCode.QUOTA_EXCEEDED,
                        Properties(reason_string="x" * 40, user_properties=user))
    trimmed = server.send(big_reason)
    assert len(trimmed) <= 32
    client = MQTTCodec("client")
    client.send(connect)
    client.receive_data(b"\x20\x03\x00\x00\x00" + trimmed)
    client.next_event()
    assert client.next_event() == PubAck(1, ReasonCode.QUOTA_EXCEEDED, Properties(user_properties=user))
    huge_user = PubAck(2, 0, Properties(user_properties=(("k" * 40, "v"),)))
    client.receive_data(server.send(huge_user))
    assert client.next_event() == PubAck(2)
    with pytest.raises(PacketTooLargeError):
        server.send(SubAck(1, tuple([0] * 40)))


def test_request_problem_information_false_strips_reason_strings() -> None:
    connect = Connect("c", 5, properties=Properties(request_problem_information=False))
    client = MQTTCodec("client")
    server = MQTTCodec("server")
    transfer(client, server, connect)
    info = Properties(reason_string="because", user_properties=(("k", "v"),))
    assert transfer(server, client, ConnAck(False, 0, info)).properties == info  # CONNACK keeps
    assert transfer(server, client, PubAck(1, ReasonCode.NOT_AUTHORIZED, info)) == PubAck(
        1, ReasonCode.NOT_AUTHORIZED
    )
    assert transfer(server, client, Disconnect(ReasonCode.SERVER_BUSY, info)).properties == info


def test_outbound_topic_alias() -> None:
    connect = Connect("c", 5, properties=Properties(topic_alias_maximum=3))
    client = MQTTCodec("client")
    server = MQTTCodec("server")
    transfer(client, server, connect)
    transfer(server, client, ConnAck())
    alias = Properties(topic_alias=3)
    with pytest.raises(MQTTLocalProtocolError, match="before it was set"):
        server.send(Publish("", b"x", properties=alias))
    assert transfer(server, client, Publish("a/b", b"1", properties=alias)) == Publish("a/b", b"1")
    assert transfer(server, client, Publish("", b"2", properties=alias)) == Publish("a/b", b"2")
    with pytest.raises(MQTTLocalProtocolError, match=r"outside the peer's 1\.\.3"):
        server.send(Publish("a", b"", properties=Properties(topic_alias=4)))


def test_receive_data_accepts_bytes_like() -> None:
    client, server = connected_pair(4)
    data = client.send(Publish("a/b", b"payload", 1, packet_id=3))
    server.receive_data(bytearray(data[:4]))
    server.receive_data(memoryview(data)[4:])
    server.receive_data(b"")
    event = server.next_event()
    assert event == Publish("a/b", b"payload", 1, packet_id=3)
    assert type(event.payload) is bytes
    assert server.next_event() is NEED_DATA


def test_connack_code_mappings() -> None:
    assert v3_connect_return_code(ReasonCode.BAD_USER_NAME_OR_PASSWORD) == 4
    assert v3_connect_return_code(ReasonCode.SERVER_BUSY) == ConnectReturnCode.SERVER_UNAVAILABLE
    assert v3_connect_return_code(3) == ConnectReturnCode.SERVER_UNAVAILABLE
    assert v3_connect_return_code(ReasonCode.PACKET_TOO_LARGE) is None
    assert v5_connack_reason_code(ConnectReturnCode.IDENTIFIER_REJECTED) == 0x85
    assert v5_connack_reason_code(0x9C) == ReasonCode.USE_ANOTHER_SERVER


def test_constructor_arguments() -> None:
    with pytest.raises(ValueError):
        MQTTCodec("broker")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MQTTCodec("server", maximum_packet_size=1)
    assert repr(NEED_DATA) == "NEED_DATA"


def test_codec_modules_are_sans_io() -> None:
    """DESIGN §5 rule 1: no asyncio, socket or os in the codec modules."""
    import ast
    from pathlib import Path

    import pybroker.protocol.mqtt.codec as codec_module

    package = Path(codec_module.__file__).parent
    for name in ("base", "wire", "properties", "packets", "codec", "topics"):
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & {"asyncio", "socket", "os", "selectors"}, (name, roots)
