"""Frames written by the stomp.py client decode as the client meant them.

stomp.py's protocol classes escape header values (1.1/1.2, never for CONNECT/STOMP) and add
content-length; its transport turns a frame into bytes with ``stomp.utils.convert_frame`` and
``pack``. A recording transport runs exactly that path, without a socket. The other way round,
stomp.py's own parser reads what our encoder writes.
"""

from __future__ import annotations

from typing import Any

import pytest
import stomp.protocol
import stomp.utils

from pybroker.protocol.stomp.codec import (
    HEART_BEAT,
    NEED_DATA,
    Frame,
    HeartBeat,
    StompCodec,
    negotiate_version,
    parse_heart_beat,
)


class RecordingTransport:
    """What stomp.py's protocol classes need from a transport; keeps the bytes sent."""

    current_host_and_port = ("127.0.0.1", 61613)
    vhost = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.listeners: dict[str, Any] = {}

    def set_listener(self, name: str, listener: Any) -> None:
        self.listeners[name] = listener

    def is_connected(self) -> bool:
        return True

    def transmit(self, frame: stomp.utils.Frame) -> None:
        # stomp.transport.BaseTransport.transmit without the socket: listeners first (the
        # protocol's heart-beat listener adds the heart-beat header to CONNECT), then the bytes.
        for _, listener in sorted(self.listeners.items()):
            if hasattr(listener, "on_send"):
                listener.on_send(frame)
        self.sent.append(stomp.utils.pack(stomp.utils.convert_frame(frame)))


def decode_all(data: bytes, version: str, *, bytewise: bool = False) -> list[Frame | HeartBeat]:
    codec = StompCodec()
    events: list[Frame | HeartBeat] = []
    step = 1 if bytewise else len(data)
    for offset in range(0, len(data), step):
        codec.receive_data(data[offset : offset + step])
        while (event := codec.next_event()) is not NEED_DATA:
            events.append(event)
            # The handler switches the version once CONNECTED has gone out.
            if isinstance(event, Frame) and event.command in ("CONNECT", "STOMP"):
                codec.set_version(negotiate_version(event.header("accept-version")))
    assert codec.version == version
    return events


PROTOCOLS = {
    "1.0": stomp.protocol.Protocol10,
    "1.1": stomp.protocol.Protocol11,
    "1.2": stomp.protocol.Protocol12,
}


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
@pytest.mark.parametrize("bytewise", [False, True])
def test_stomppy_session_frames(version: str, bytewise: bool) -> None:
    transport = RecordingTransport()
    if version == "1.0":
        protocol = PROTOCOLS[version](transport)
    else:
        protocol = PROTOCOLS[version](transport, heartbeats=(4000, 8000))
    protocol.connect("guest", "pass:word \\x", wait=False)
    protocol.subscribe("/queue/a", id="sub:1", ack="client-individual")
    # stomp.py does not escape in 1.0, so a line feed would break its frame: leave it out there.
    note = "a:b\\c" if version == "1.0" else "a:b\nc\\d"
    protocol.send(
        "/queue/a", b"bin\x00ary", content_type="application/octet-stream", headers={"note": note}
    )
    protocol.send("/queue/a", "text é")
    protocol.begin("tx1")
    protocol.send_frame("DISCONNECT", {"receipt": "r1"})

    events = decode_all(b"".join(transport.sent), version, bytewise=bytewise)
    assert all(isinstance(event, Frame) for event in events)
    connect, subscribe, binary, text, begin, disconnect = events
    assert isinstance(connect, Frame) and isinstance(binary, Frame) and isinstance(text, Frame)
    assert connect.command == ("CONNECT" if version == "1.0" else "STOMP")
    assert connect.header("login") == "guest"
    assert connect.header("passcode") == "pass:word \\x"  # CONNECT is never escaped
    if version == "1.0":
        assert connect.header("accept-version") in (None, "1.0")
    else:
        assert connect.header("accept-version") == version
        assert parse_heart_beat(connect.require_header("heart-beat")) == (4000, 8000)
    assert subscribe == Frame(
        "SUBSCRIBE",
        sorted([("ack", "client-individual"), ("destination", "/queue/a"), ("id", "sub:1")]),
    )
    assert binary.body == b"bin\x00ary"
    assert binary.header("note") == note
    assert binary.header("content-length") == "7"
    assert binary.header("content-type") == "application/octet-stream"
    assert text.body == "text é".encode()
    assert begin == Frame("BEGIN", [("transaction", "tx1")])
    assert disconnect == Frame("DISCONNECT", [("receipt", "r1")])


def test_stomppy_ack_and_nack_1_2() -> None:
    transport = RecordingTransport()
    protocol = stomp.protocol.Protocol12(transport)
    protocol.ack("ID:host-1:2", transaction="tx:1", receipt="r")
    protocol.nack("ID:host-1:3")
    codec = StompCodec()
    codec.set_version("1.2")
    codec.receive_data(b"".join(transport.sent))
    ack, nack = codec.next_event(), codec.next_event()
    assert isinstance(ack, Frame) and isinstance(nack, Frame)
    assert ack.command == "ACK" and ack.header_map() == {
        "id": "ID:host-1:2",
        "transaction": "tx:1",
        "receipt": "r",
    }
    assert nack.command == "NACK" and nack.header("id") == "ID:host-1:3"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_stomppy_parser_reads_our_message_frames(version: str) -> None:
    codec = StompCodec()
    codec.set_version(version)
    data = codec.send(
        Frame(
            "MESSAGE",
            [
                ("subscription", "sub:1"),
                ("message-id", "ID:1"),
                ("destination", "/queue/a"),
                ("note", "a:b\nc\\d"),
                ("note", "older"),
            ],
            b"payload",
        )
    )
    # stomp.py's transport splits on NUL and gives parse_frame one frame without it.
    assert data.endswith(b"\x00\n")
    frame = stomp.utils.parse_frame(data[: data.index(b"\x00", data.index(b"\n\n"))])
    assert frame.cmd == "MESSAGE"
    assert frame.headers["note"] == "a:b\nc\\d"  # first value wins in stomp.py too
    assert frame.headers["subscription"] == "sub:1"
    assert frame.headers["content-length"] == "7"
    assert frame.body == b"payload"


def test_stomppy_heartbeat_bytes() -> None:
    # stomp.py's heart-beat listener transmits Frame(None, {}, None): a bare LF on the wire.
    transport = RecordingTransport()
    transport.transmit(stomp.utils.Frame(None, {}, None))
    (data,) = transport.sent
    codec = StompCodec()
    codec.receive_data(data * 3)
    assert [codec.next_event() for _ in range(4)] == [HEART_BEAT] * 3 + [NEED_DATA]
