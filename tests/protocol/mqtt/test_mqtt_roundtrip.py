"""Round trips of every packet type (MQTT 3.1, 3.1.1, 5.0) and incremental feeding."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqtt_strategies import (
    VERSIONS,
    client_session_packets,
    connacks,
    connected_pair,
    connects,
    disconnects,
    drain,
    handshake_connect,
    server_session_packets,
    transfer,
)

from pybroker.protocol.mqtt.codec import NEED_DATA, ConnAck, Connect, MQTTCodec, Publish
from pybroker.protocol.mqtt.packets import Disconnect

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_connect_round_trip(version: int, data: st.DataObject) -> None:
    connect = data.draw(connects(version))
    client, server = MQTTCodec("client"), MQTTCodec("server")
    assert server.protocol_version is None
    assert transfer(client, server, connect) == connect
    assert server.protocol_version == version
    assert server.connect == connect


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_connack_round_trip(version: int, data: st.DataObject) -> None:
    connack = data.draw(connacks(version))
    client, server = MQTTCodec("client"), MQTTCodec("server")
    transfer(client, server, Connect("c", version))
    decoded = transfer(server, client, connack)
    assert decoded == connack
    expected_state = "CONNECTED" if connack.reason_code == 0 else "CLOSED"
    assert client.state.name == server.state.name == expected_state


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_client_packets_round_trip(version: int, data: st.DataObject) -> None:
    client, server = connected_pair(version)
    for packet in data.draw(st.lists(client_session_packets(version), min_size=1, max_size=5)):
        assert transfer(client, server, packet) == packet


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_server_packets_round_trip(version: int, data: st.DataObject) -> None:
    client, server = connected_pair(version)
    for packet in data.draw(st.lists(server_session_packets(version), min_size=1, max_size=5)):
        assert transfer(server, client, packet) == packet


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_disconnect_round_trip_both_ways(version: int, data: st.DataObject) -> None:
    disconnect = data.draw(disconnects(version))
    client, server = connected_pair(version)
    assert transfer(client, server, disconnect) == disconnect
    assert server.state.name == client.state.name == "CLOSED"
    if version == 5:
        client, server = connected_pair(version)
        assert transfer(server, client, disconnect) == disconnect


def test_decoded_publish_is_frozen_and_hashable() -> None:
    client, server = connected_pair(4)
    packet = Publish("a/b", b"payload", 1, True, True, 9)
    decoded = transfer(client, server, packet)
    assert type(decoded) is Publish and type(decoded.payload) is bytes
    assert hash(decoded) == hash(packet)
    with pytest.raises(AttributeError):
        decoded.topic = "x"  # type: ignore[misc]


# --- incremental feeding ---------------------------------------------------------------------


@st.composite
def client_streams(draw: st.DrawFn) -> tuple[int, list[object], list[bytes]]:
    """A client's packets from CONNECT on, and each packet's bytes."""
    version = draw(st.sampled_from(VERSIONS))
    packets: list[object] = [handshake_connect(version)]
    packets += draw(st.lists(client_session_packets(version), max_size=6))
    if draw(st.booleans()):
        packets.append(Disconnect())
    encoder = MQTTCodec("client")
    return version, packets, [encoder.send(packet) for packet in packets]


@st.composite
def server_streams(draw: st.DrawFn) -> tuple[int, list[object], list[bytes]]:
    """A server's packets from CONNACK on, and each packet's bytes."""
    version = draw(st.sampled_from(VERSIONS))
    encoder = MQTTCodec("server")
    encoder.receive_data(MQTTCodec("client").send(handshake_connect(version)))
    encoder.next_event()
    packets: list[object] = [ConnAck()]
    packets += draw(st.lists(server_session_packets(version), max_size=6))
    return version, packets, [encoder.send(packet) for packet in packets]


def _receiver(role: str, version: int) -> MQTTCodec:
    codec = MQTTCodec(role)  # type: ignore[arg-type]
    if role == "client":
        codec.send(handshake_connect(version))
    return codec


@settings(max_examples=40, deadline=None)
@given(stream=st.one_of(client_streams().map(lambda s: ("server", s)),
                        server_streams().map(lambda s: ("client", s))))
def test_byte_by_byte_gives_the_same_events(stream: tuple[str, tuple]) -> None:
    role, (version, packets, chunks) = stream
    codec = _receiver(role, version)
    events = []
    for byte in b"".join(chunks):
        codec.receive_data(bytes((byte,)))
        events += drain(codec)
    assert events == packets


@settings(max_examples=60, deadline=None)
@given(
    stream=st.one_of(client_streams().map(lambda s: ("server", s)),
                     server_streams().map(lambda s: ("client", s))),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    drain_every_chunk=st.booleans(),
)
def test_random_splits_give_the_same_events(
    stream: tuple[str, tuple], cuts: list[int], drain_every_chunk: bool
) -> None:
    role, (version, packets, chunks) = stream
    data = b"".join(chunks)
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    codec = _receiver(role, version)
    events = []
    for begin, end in itertools.pairwise(points):
        codec.receive_data(bytearray(data[begin:end]) if begin % 2 else data[begin:end])
        if drain_every_chunk:
            events += drain(codec)
    events += drain(codec)
    assert events == packets


@settings(max_examples=25, deadline=None)
@given(stream=st.one_of(client_streams().map(lambda s: ("server", s)),
                        server_streams().map(lambda s: ("client", s))))
def test_every_prefix_gives_need_data_after_its_complete_packets(
    stream: tuple[str, tuple],
) -> None:
    role, (version, packets, chunks) = stream
    data = b"".join(chunks)
    boundaries = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        boundaries.append(total)
    for length in range(len(data)):
        codec = _receiver(role, version)
        codec.receive_data(data[:length])
        complete = sum(1 for boundary in boundaries if boundary <= length)
        assert drain(codec) == packets[:complete]
        assert codec.next_event() is NEED_DATA


def test_large_packet_in_small_chunks_is_joined_once() -> None:
    client, server = connected_pair(4)
    packet = Publish("big", bytes(range(256)) * 4096, 1, packet_id=1)
    data = client.send(packet)
    for offset in range(0, len(data), 1000):
        server.receive_data(data[offset : offset + 1000])
        if offset + 1000 < len(data):
            assert server.next_event() is NEED_DATA
            # Once the header is read the codec waits for the whole packet, no re-joining.
            assert len(server._buffer) <= 1000
    assert server.next_event() == packet
