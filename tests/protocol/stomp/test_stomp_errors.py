"""Malformed STOMP input and limits: each raises StompProtocolError and poisons the codec."""

from __future__ import annotations

import pytest

from pybroker.errors import ProtocolError
from pybroker.protocol.stomp.codec import (
    NEED_DATA,
    Frame,
    HeartBeat,
    StompCodec,
    StompProtocolError,
)


def drain(codec: StompCodec) -> list[Frame | HeartBeat]:
    events: list[Frame | HeartBeat] = []
    while (event := codec.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def feed(codec: StompCodec, data: bytes, chunk: int | None = None) -> list[Frame | HeartBeat]:
    events: list[Frame | HeartBeat] = []
    step = chunk or max(len(data), 1)
    for offset in range(0, len(data), step):
        codec.receive_data(data[offset : offset + step])
        events.extend(drain(codec))
    return events


def codec_for(version: str, **limits: int) -> StompCodec:
    codec = StompCodec(**limits)
    codec.set_version(version)
    return codec


MALFORMED: list[tuple[str, str, bytes, str]] = [
    # (id, version, input, a fragment of the error message)
    ("unknown-command", "1.2", b"FOO\n\n\x00", "unknown command"),
    ("lower-case-command", "1.2", b"send\n\n\x00", "unknown command"),
    ("http-request", "1.0", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "unknown command"),
    ("command-trailing-space", "1.2", b"SEND \n\n\x00", "unknown command"),
    ("command-two-crs", "1.2", b"SEND\r\r\n\n\x00", "unknown command"),
    ("command-prefix-run-on", "1.2", b"SENDSEND", "unknown command"),
    ("nul-between-frames", "1.2", b"\x00\n", "unknown command"),
    ("bare-cr-between-frames", "1.2", b"\rSEND\n\n\x00", "carriage return"),
    ("header-without-colon", "1.2", b"SEND\nfoo\n\n\x00", "has no ':'"),
    ("header-without-colon-1.0", "1.0", b"SEND\nfoo\n\n\x00", "has no ':'"),
    ("empty-header-name", "1.2", b"SEND\n:value\n\n\x00", "empty name"),
    ("undefined-escape-t-1.2", "1.2", b"SEND\na:b\\tc\n\n\x00", "undefined escape"),
    ("undefined-escape-t-1.1", "1.1", b"SEND\na:b\\tc\n\n\x00", "undefined escape"),
    ("escape-r-undefined-in-1.1", "1.1", b"SEND\na:b\\rc\n\n\x00", "undefined escape"),
    ("undefined-escape-in-name", "1.2", b"SEND\na\\x:b\n\n\x00", "undefined escape"),
    ("lone-backslash", "1.2", b"SEND\na:b\\\n\n\x00", "lone backslash"),
    ("bare-cr-in-header-1.2", "1.2", b"SEND\na:b\rc\n\n\x00", "carriage return"),
    ("bad-utf8-value", "1.2", b"SEND\na:\xff\xfe\n\n\x00", "not valid UTF-8"),
    ("bad-utf8-name", "1.0", b"SEND\n\xc3(:x\n\n\x00", "not valid UTF-8"),
    ("overlong-utf8", "1.2", b"SEND\na:\xc0\xaf\n\n\x00", "not valid UTF-8"),
    ("content-length-letters", "1.2", b"SEND\ncontent-length:abc\n\n\x00", "bad content-length"),
    ("content-length-negative", "1.2", b"SEND\ncontent-length:-1\n\n\x00", "bad content-length"),
    ("content-length-plus", "1.2", b"SEND\ncontent-length:+1\n\nx\x00", "bad content-length"),
    ("content-length-space-1.2", "1.2", b"SEND\ncontent-length: 1\n\nx\x00", "bad content-length"),
    ("content-length-trailing", "1.2", b"SEND\ncontent-length:1 \n\nx\x00", "bad content-length"),
    ("content-length-fraction", "1.2", b"SEND\ncontent-length:1.5\n\nx\x00", "bad content-length"),
    ("content-length-empty", "1.2", b"SEND\ncontent-length:\n\n\x00", "bad content-length"),
    (
        "content-length-non-ascii-digit",
        "1.2",
        "SEND\ncontent-length:\u0661\n\nx\x00".encode(),
        "bad content-length",
    ),
    ("content-length-underscore", "1.2", b"SEND\ncontent-length:1_0\n\n\x00", "bad content-length"),
    (
        "content-length-5000-digits",
        "1.2",
        b"SEND\ncontent-length:" + b"9" * 5000 + b"\n\n\x00",
        "too large",
    ),
    (
        "content-length-no-nul",
        "1.2",
        b"SEND\ncontent-length:2\n\nabc\x00",
        "not followed by NUL",
    ),
    (
        "content-length-conflict",
        "1.2",
        b"SEND\ncontent-length:1\ncontent-length:2\n\nab\x00",
        "conflicting content-length",
    ),
]


@pytest.mark.parametrize(
    ("version", "data", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_input_raises_whole_and_byte_by_byte(
    version: str, data: bytes, message: str
) -> None:
    for chunk in (None, 1):
        codec = codec_for(version)
        with pytest.raises(StompProtocolError, match=message) as caught:
            feed(codec, data, chunk)
        assert isinstance(caught.value, ProtocolError)
        # The codec refuses everything afterwards.
        with pytest.raises(StompProtocolError, match="refuses input"):
            codec.next_event()
        with pytest.raises(StompProtocolError, match="refuses input"):
            codec.receive_data(b"\n")


def test_error_after_valid_frames_keeps_the_frames_before_it() -> None:
    codec = codec_for("1.2")
    codec.receive_data(b"BEGIN\ntransaction:t\n\n\x00\nBOGUS\n\n\x00")
    assert codec.next_event() == Frame("BEGIN", [("transaction", "t")])
    assert isinstance(codec.next_event(), HeartBeat)
    with pytest.raises(StompProtocolError, match="unknown command"):
        codec.next_event()


def test_bad_command_is_rejected_before_its_line_feed() -> None:
    codec = codec_for("1.2")
    codec.receive_data(b"SU")
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"X")
    with pytest.raises(StompProtocolError, match="unknown command"):
        codec.next_event()


def test_cr_is_kept_in_1_0_and_1_1_values_but_not_before_the_line_feed() -> None:
    for version in ("1.0", "1.1"):
        codec = codec_for(version)
        codec.receive_data(b"SEND\na:b\rc\r\n\r\n\x00")
        assert codec.next_event() == Frame("SEND", [("a", "b\rc")])


# -- limits ----------------------------------------------------------------------------------


def send_frame(body: bytes, *, with_length: bool) -> bytes:
    length = b"content-length:%d\n" % len(body) if with_length else b""
    return b"SEND\ndestination:/q\n" + length + b"\n" + body + b"\x00"


@pytest.mark.parametrize("with_length", [True, False])
@pytest.mark.parametrize("chunk", [None, 7])
def test_max_frame_size_boundary(with_length: bool, chunk: int | None) -> None:
    frame = send_frame(b"x" * 100, with_length=with_length)
    exact = codec_for("1.2", max_frame_size=len(frame))
    assert [event for event in feed(exact, frame, chunk)] == [
        Frame(
            "SEND",
            [("destination", "/q")] + ([("content-length", "100")] if with_length else []),
            b"x" * 100,
        )
    ]
    over = codec_for("1.2", max_frame_size=len(frame) - 1)
    with pytest.raises(StompProtocolError, match="larger than"):
        feed(over, frame, chunk)


def test_oversized_content_length_fails_at_the_head() -> None:
    codec = codec_for("1.2", max_frame_size=1000)
    codec.receive_data(b"SEND\ncontent-length:5000\n\n")
    with pytest.raises(StompProtocolError, match="content-length 5000 makes the frame larger"):
        codec.next_event()


def test_oversized_body_without_length_fails_before_its_nul_arrives() -> None:
    codec = codec_for("1.2", max_frame_size=1000)
    codec.receive_data(b"SEND\n\n" + b"x" * 900)
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"x" * 200)
    with pytest.raises(StompProtocolError, match="larger than 1000"):
        codec.next_event()


def test_oversized_head_fails_before_it_ends() -> None:
    codec = codec_for("1.2", max_frame_size=1000, max_header_length=100)
    codec.receive_data(b"SEND\n")
    with pytest.raises(StompProtocolError, match="larger than 1000"):
        for _ in range(20):
            codec.receive_data(b"h:" + b"v" * 90 + b"\n")
            assert codec.next_event() is NEED_DATA


def test_heart_beats_do_not_count_towards_the_frame_size() -> None:
    frame = send_frame(b"abc", with_length=True)
    codec = codec_for("1.2", max_frame_size=len(frame))
    events = feed(codec, b"\n" * 5000 + frame + b"\r\n" * 5000)
    assert sum(isinstance(event, HeartBeat) for event in events) == 10000


@pytest.mark.parametrize("chunk", [None, 1])
def test_max_headers_boundary(chunk: int | None) -> None:
    head = b"SEND\n" + b"".join(b"h%d:v\n" % n for n in range(10))
    exact = codec_for("1.2", max_headers=10)
    (frame,) = feed(exact, head + b"\n\x00", chunk)
    assert isinstance(frame, Frame) and len(frame.headers) == 10
    over = codec_for("1.2", max_headers=9)
    with pytest.raises(StompProtocolError, match="more than 9 headers"):
        feed(over, head + b"\n\x00", chunk)


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
@pytest.mark.parametrize("chunk", [None, 1])
def test_max_header_length_boundary(eol: bytes, chunk: int | None) -> None:
    line = b"name:" + b"v" * 45  # 50 bytes without the EOL
    data = b"SEND" + eol + line + eol + eol + b"\x00"
    exact = codec_for("1.2", max_header_length=50)
    assert feed(exact, data, chunk) == [Frame("SEND", [("name", "v" * 45)])]
    over = codec_for("1.2", max_header_length=49)
    with pytest.raises(StompProtocolError, match="longer than 49 bytes"):
        feed(over, data, chunk)


def test_long_header_line_fails_before_its_line_feed() -> None:
    codec = codec_for("1.2", max_header_length=50)
    codec.receive_data(b"SEND\nname:" + b"v" * 45)
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"\r")  # still 50 bytes of content if the CR ends the line
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"v")
    with pytest.raises(StompProtocolError, match="longer than 50 bytes"):
        codec.next_event()


def test_limits_must_be_positive() -> None:
    for name in ("max_frame_size", "max_headers", "max_header_length"):
        with pytest.raises(ValueError, match=name):
            StompCodec(**{name: 0})


def test_set_version_rejects_unknown_versions() -> None:
    with pytest.raises(ValueError, match=r"2\.0"):
        StompCodec().set_version("2.0")


@pytest.mark.parametrize(
    ("version", "bad_line", "message"),
    [
        ("1.2", b"b:\xff", "header line 3 is not valid UTF-8"),
        ("1.2", b"b:x\ry", "header line 3 holds a carriage return"),
        ("1.2", b"b", "header line 3 has no ':'"),
        ("1.1", b"b:\\t", "header line 3 has the undefined escape sequence '\\\\\\\\t'"),
    ],
)
def test_errors_name_the_header_line(version: str, bad_line: bytes, message: str) -> None:
    codec = codec_for(version)
    codec.receive_data(b"SEND\na:1\nok:2\n" + bad_line + b"\nz:3\n\n\x00")
    with pytest.raises(StompProtocolError, match=f"STOMP SEND frame: {message}"):
        codec.next_event()
