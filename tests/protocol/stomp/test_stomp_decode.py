"""Decoding valid STOMP input: the specification's examples, versions, splits, heart-beats."""

from __future__ import annotations

import pytest

from pybroker.protocol.stomp.codec import (
    HEART_BEAT,
    NEED_DATA,
    Frame,
    HeartBeat,
    StompCodec,
)


def drain(codec: StompCodec) -> list[Frame | HeartBeat]:
    events: list[Frame | HeartBeat] = []
    while (event := codec.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def decode(data: bytes, version: str = "1.2") -> list[Frame | HeartBeat]:
    codec = StompCodec()
    codec.set_version(version)
    codec.receive_data(data)
    return drain(codec)


def decode_bytewise(data: bytes, version: str = "1.2") -> list[Frame | HeartBeat]:
    codec = StompCodec()
    codec.set_version(version)
    events: list[Frame | HeartBeat] = []
    for index in range(len(data)):
        codec.receive_data(data[index : index + 1])
        events.extend(drain(codec))
    return events


# The frames of the STOMP 1.2 specification, as bytes and as the frame they must decode to.
SPEC_EXAMPLES: list[tuple[bytes, Frame]] = [
    (
        b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\x00",
        Frame("CONNECT", [("accept-version", "1.2"), ("host", "stomp.github.org")]),
    ),
    (
        b"STOMP\naccept-version:1.0,1.1,2.0\nhost:stomp.github.org\n\n\x00",
        Frame("STOMP", [("accept-version", "1.0,1.1,2.0"), ("host", "stomp.github.org")]),
    ),
    (b"CONNECTED\nversion:1.2\n\n\x00", Frame("CONNECTED", [("version", "1.2")])),
    (
        b"ERROR\nversion:1.2,2.1\ncontent-type:text/plain\n\n"
        b"Supported protocol versions are 1.2 2.1\x00",
        Frame(
            "ERROR",
            [("version", "1.2,2.1"), ("content-type", "text/plain")],
            b"Supported protocol versions are 1.2 2.1",
        ),
    ),
    (
        b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\nheart-beat:1000,2000\n\n\x00",
        Frame(
            "CONNECT",
            [
                ("accept-version", "1.2"),
                ("host", "stomp.github.org"),
                ("heart-beat", "1000,2000"),
            ],
        ),
    ),
    (
        b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\n\x00",
        Frame(
            "SEND",
            [("destination", "/queue/a"), ("content-type", "text/plain")],
            b"hello queue a\n",
        ),
    ),
    (
        b"SUBSCRIBE\nid:0\ndestination:/queue/foo\nack:client\n\n\x00",
        Frame("SUBSCRIBE", [("id", "0"), ("destination", "/queue/foo"), ("ack", "client")]),
    ),
    (b"UNSUBSCRIBE\nid:0\n\n\x00", Frame("UNSUBSCRIBE", [("id", "0")])),
    (
        b"ACK\nid:12345\ntransaction:tx1\n\n\x00",
        Frame("ACK", [("id", "12345"), ("transaction", "tx1")]),
    ),
    (
        b"NACK\nid:12345\ntransaction:tx1\n\n\x00",
        Frame("NACK", [("id", "12345"), ("transaction", "tx1")]),
    ),
    (b"BEGIN\ntransaction:tx1\n\n\x00", Frame("BEGIN", [("transaction", "tx1")])),
    (b"COMMIT\ntransaction:tx1\n\n\x00", Frame("COMMIT", [("transaction", "tx1")])),
    (b"ABORT\ntransaction:tx1\n\n\x00", Frame("ABORT", [("transaction", "tx1")])),
    (b"DISCONNECT\nreceipt:77\n\n\x00", Frame("DISCONNECT", [("receipt", "77")])),
    (b"RECEIPT\nreceipt-id:77\n\n\x00", Frame("RECEIPT", [("receipt-id", "77")])),
    (
        b"MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\n"
        b"content-type:text/plain\n\nhello queue a\x00",
        Frame(
            "MESSAGE",
            [
                ("subscription", "0"),
                ("message-id", "007"),
                ("destination", "/queue/a"),
                ("content-type", "text/plain"),
            ],
            b"hello queue a",
        ),
    ),
    (
        b"MESSAGE\nfoo:World\nfoo:Hello\n\n\x00",
        Frame("MESSAGE", [("foo", "World"), ("foo", "Hello")]),
    ),
    (
        b"SEND\ndestination:/queue/a\nreceipt:message-12345\n\nhello queue a\x00",
        Frame(
            "SEND",
            [("destination", "/queue/a"), ("receipt", "message-12345")],
            b"hello queue a",
        ),
    ),
]

ERROR_BODY = (
    b"The message:\n-----\nMESSAGE\ndestined:/queue/a\nreceipt:message-12345\n\n"
    b"Hello queue a!\n-----\nDid not contain a destination header, which is REQUIRED\n"
    b"for message propagation.\n"
)
SPEC_EXAMPLES.append(
    (
        b"ERROR\nreceipt-id:message-12345\ncontent-type:text/plain\ncontent-length:"
        + str(len(ERROR_BODY)).encode()
        + b"\nmessage:malformed frame received\n\n"
        + ERROR_BODY
        + b"\x00",
        Frame(
            "ERROR",
            [
                ("receipt-id", "message-12345"),
                ("content-type", "text/plain"),
                ("content-length", str(len(ERROR_BODY))),
                ("message", "malformed frame received"),
            ],
            ERROR_BODY,
        ),
    )
)
SPEC_STREAM = b"".join(data + b"\n" for data, _ in SPEC_EXAMPLES)
SPEC_EVENTS = [event for _, frame in SPEC_EXAMPLES for event in (frame, HEART_BEAT)]


@pytest.mark.parametrize(("data", "frame"), SPEC_EXAMPLES)
def test_spec_example_decodes(data: bytes, frame: Frame) -> None:
    assert decode(data) == [frame]


@pytest.mark.parametrize(("data", "frame"), SPEC_EXAMPLES)
def test_spec_example_with_crlf_line_endings(data: bytes, frame: Frame) -> None:
    head, separator, body = data.partition(b"\n\n")
    crlf = head.replace(b"\n", b"\r\n") + b"\r\n\r\n" + body
    assert separator and decode(crlf) == [frame]


def test_repeated_header_first_value_wins() -> None:
    (frame,) = decode(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\x00")
    assert isinstance(frame, Frame)
    assert frame.header("foo") == "World"
    assert frame.header_values("foo") == ["World", "Hello"]
    assert frame.header_map() == {"foo": "World"}
    assert frame.header("bar") is None and frame.header("bar", "x") == "x"


def test_whole_spec_stream_in_one_chunk_and_byte_by_byte() -> None:
    assert decode(SPEC_STREAM) == SPEC_EVENTS
    assert decode_bytewise(SPEC_STREAM) == SPEC_EVENTS


@pytest.mark.parametrize(("data", "frame"), SPEC_EXAMPLES)
def test_every_proper_prefix_of_a_frame_needs_data(data: bytes, frame: Frame) -> None:
    for length in range(len(data)):
        codec = StompCodec()
        codec.set_version("1.2")
        codec.receive_data(data[:length])
        assert codec.next_event() is NEED_DATA, data[:length]
        codec.receive_data(data[length:])
        assert codec.next_event() == frame
        assert codec.next_event() is NEED_DATA


def test_heart_beats_lf_and_crlf_one_event_per_eol() -> None:
    events = decode(b"\n\r\n\n" + b"BEGIN\ntransaction:t\n\n\x00" + b"\r\n\n")
    assert events == [
        HEART_BEAT,
        HEART_BEAT,
        HEART_BEAT,
        Frame("BEGIN", [("transaction", "t")]),
        HEART_BEAT,
        HEART_BEAT,
    ]
    assert HeartBeat() == HEART_BEAT


def test_lone_cr_between_frames_waits_for_its_line_feed() -> None:
    codec = StompCodec()
    codec.receive_data(b"\r")
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"\n")
    assert codec.next_event() == HEART_BEAT
    assert codec.next_event() is NEED_DATA


def test_content_length_body_may_contain_nul_and_eols() -> None:
    body = b"\x00\n\x00\r\n\x00binary\xff\xfe"
    data = b"SEND\ndestination:/q\ncontent-length:%d\n\n%s\x00" % (len(body), body)
    for version in ("1.0", "1.1", "1.2"):
        assert decode(data, version) == [
            Frame("SEND", [("destination", "/q"), ("content-length", str(len(body)))], body)
        ]
        assert decode_bytewise(data, version) == decode(data, version)


def test_body_without_content_length_ends_at_first_nul() -> None:
    codec = StompCodec()
    codec.receive_data(b"SEND\ndestination:/q\n\nab\x00COMMIT\n\n\x00")
    assert codec.next_event() == Frame("SEND", [("destination", "/q")], b"ab")
    assert codec.next_event() == Frame("COMMIT")
    assert codec.next_event() is NEED_DATA


def test_zero_content_length_and_empty_body() -> None:
    assert decode(b"SEND\ndestination:/q\ncontent-length:0\n\n\x00") == [
        Frame("SEND", [("destination", "/q"), ("content-length", "0")])
    ]


def test_repeated_equal_content_length_headers_are_accepted() -> None:
    (frame,) = decode(b"SEND\ncontent-length:2\ncontent-length:2\n\nab\x00")
    assert isinstance(frame, Frame) and frame.body == b"ab"


def test_escapes_per_version() -> None:
    head = b"SEND\nkey\\c\\n\\\\:va\\clue\\n\\\\x\n"
    assert decode(head + b"\n\x00", "1.2") == [Frame("SEND", [("key:\n\\", "va:lue\n\\x")])]
    assert decode(head + b"\n\x00", "1.1") == [Frame("SEND", [("key:\n\\", "va:lue\n\\x")])]
    # 1.0 has no escapes: the backslashes are data; the value starts after the first colon.
    assert decode(head + b"\n\x00", "1.0") == [
        Frame("SEND", [("key\\c\\n\\\\", "va\\clue\\n\\\\x")])
    ]
    assert decode(b"SEND\na:b\\rc\n\n\x00", "1.2") == [Frame("SEND", [("a", "b\rc")])]


def test_connect_and_connected_are_never_unescaped() -> None:
    for command in (b"CONNECT", b"STOMP", b"CONNECTED"):
        (frame,) = decode(command + b"\npasscode:a\\tb\\c:c\n\n\x00", "1.2")
        assert isinstance(frame, Frame)
        assert frame.headers == [("passcode", "a\\tb\\c:c")]


def test_raw_colon_in_value_is_kept() -> None:
    assert decode(b"SEND\ntime:12:30:00\n\n\x00") == [Frame("SEND", [("time", "12:30:00")])]


def test_value_whitespace_kept_in_1_1_and_1_2_leading_trimmed_in_1_0() -> None:
    data = b"SEND\ndestination: \t/q \nempty:\n\n\x00"
    for version in ("1.1", "1.2"):
        assert decode(data, version) == [Frame("SEND", [("destination", " \t/q "), ("empty", "")])]
    assert decode(data, "1.0") == [Frame("SEND", [("destination", "/q "), ("empty", "")])]


def test_connect_before_negotiation_is_read_with_1_0_rules() -> None:
    codec = StompCodec()
    assert codec.version == "1.0"
    codec.receive_data(b"CONNECT\r\naccept-version:1.1,1.2\r\nlogin: guest\r\n\r\n\x00")
    assert codec.next_event() == Frame(
        "CONNECT", [("accept-version", "1.1,1.2"), ("login", "guest")]
    )


def test_version_switch_applies_to_frames_already_buffered() -> None:
    codec = StompCodec()
    codec.receive_data(
        b"CONNECT\naccept-version:1.2\n\n\x00SUBSCRIBE\nid:a\\cb\ndestination:/q\n\n\x00"
    )
    assert codec.next_event() == Frame("CONNECT", [("accept-version", "1.2")])
    codec.set_version("1.2")
    assert codec.next_event() == Frame("SUBSCRIBE", [("id", "a:b"), ("destination", "/q")])


def test_utf8_headers_and_bodies_are_kept() -> None:
    data = "SEND\ndestination:/queue/é€\nnote:日本\n\n".encode() + "body é".encode() + b"\x00"
    assert decode(data) == [
        Frame("SEND", [("destination", "/queue/é€"), ("note", "日本")], "body é".encode())
    ]


def test_many_frames_with_partial_tails_keep_buffer_small() -> None:
    frame = b"SEND\ndestination:/q\ncontent-length:5\n\nhello\x00\n"
    stream = frame * 2000
    codec = StompCodec()
    count = 0
    for offset in range(0, len(stream), 1000):  # chunks never aligned with frames
        codec.receive_data(stream[offset : offset + 1000])
        for event in drain(codec):
            count += isinstance(event, Frame)
        assert len(codec._buffer) < 2 * 1000 + len(frame)
    assert count == 2000


def test_large_body_streamed_in_small_chunks() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, with NULs
    data = b"SEND\ndestination:/q\ncontent-length:%d\n\n" % len(body) + body + b"\x00"
    codec = StompCodec()
    events: list[Frame | HeartBeat] = []
    for offset in range(0, len(data), 4096):
        codec.receive_data(data[offset : offset + 4096])
        events.extend(drain(codec))
    assert len(events) == 1 and isinstance(events[0], Frame) and events[0].body == body


def test_large_body_without_content_length_streamed_scans_linearly() -> None:
    body = b"x" * (1 << 20)
    data = b"SEND\ndestination:/q\n\n" + body + b"\x00"
    codec = StompCodec()
    for offset in range(0, len(data), 1024):
        codec.receive_data(data[offset : offset + 1024])
        events = drain(codec)
    assert events == [Frame("SEND", [("destination", "/q")], body)]


def test_content_length_with_leading_space_is_trimmed_in_1_0_only() -> None:
    data = b"SEND\ncontent-length: 2\n\nab\x00"
    assert decode(data, "1.0") == [Frame("SEND", [("content-length", "2")], b"ab")]
