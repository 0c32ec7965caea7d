"""Encoding STOMP frames: escaping per version, content-length, what cannot be encoded."""

from __future__ import annotations

import pytest

from pybroker.protocol.stomp.codec import (
    NEED_DATA,
    Frame,
    StompCodec,
    StompEncodingError,
    StompProtocolError,
)


def encoder(version: str) -> StompCodec:
    codec = StompCodec()
    codec.set_version(version)
    return codec


def test_message_frame_layout_matches_artemis() -> None:
    data = encoder("1.2").send(
        Frame(
            "MESSAGE",
            [("subscription", "0"), ("message-id", "7"), ("destination", "/queue/a")],
            b"hello",
        )
    )
    assert data == (
        b"MESSAGE\nsubscription:0\nmessage-id:7\ndestination:/queue/a\n"
        b"content-length:5\n\nhello\x00\n"
    )


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_content_length_added_for_any_body_in_every_version(version: str) -> None:
    codec = encoder(version)
    assert codec.send(Frame("MESSAGE", [("a", "b")], b"\x00\x01")) == (
        b"MESSAGE\na:b\ncontent-length:2\n\n\x00\x01\x00\n"
    )
    assert codec.send(Frame("ERROR", [("message", "bad")], b"details")) == (
        b"ERROR\nmessage:bad\ncontent-length:7\n\ndetails\x00\n"
    )
    # No body, no content-length.
    assert codec.send(Frame("RECEIPT", [("receipt-id", "1")])) == b"RECEIPT\nreceipt-id:1\n\n\x00\n"


def test_given_content_length_is_corrected_in_place_and_repeats_dropped() -> None:
    codec = encoder("1.2")
    frame = Frame(
        "MESSAGE",
        [("content-length", "999"), ("a", "b"), ("content-length", "3")],
        b"abcd",
    )
    assert codec.send(frame) == b"MESSAGE\ncontent-length:4\na:b\n\nabcd\x00\n"
    empty = Frame("MESSAGE", [("content-length", "12")])
    assert codec.send(empty) == b"MESSAGE\ncontent-length:0\n\n\x00\n"


def test_escaping_1_2() -> None:
    data = encoder("1.2").send(Frame("MESSAGE", [("k:\n", "a\\b:c\nd\re")]))
    assert data == b"MESSAGE\nk\\c\\n:a\\\\b\\cc\\nd\\re\n\n\x00\n"


def test_escaping_1_1_and_carriage_return_refused() -> None:
    codec = encoder("1.1")
    assert codec.send(Frame("MESSAGE", [("k:", "a\\b\n")])) == b"MESSAGE\nk\\c:a\\\\b\\n\n\n\x00\n"
    with pytest.raises(StompEncodingError, match="carriage return"):
        codec.send(Frame("MESSAGE", [("k", "a\rb")]))


@pytest.mark.parametrize(
    ("version", "command"),
    [("1.0", "MESSAGE"), ("1.0", "ERROR"), ("1.2", "CONNECTED"), ("1.1", "CONNECTED")],
)
def test_unescaped_frames_keep_text_and_refuse_what_they_cannot_carry(
    version: str, command: str
) -> None:
    codec = encoder(version)
    assert codec.send(Frame(command, [("server", "a\\b:c")])) == (
        command.encode() + b"\nserver:a\\b:c\n\n\x00\n"
    )
    for headers in ([("k", "a\nb")], [("k", "a\rb")], [("k:x", "v")], [("k\n", "v")]):
        with pytest.raises(StompEncodingError, match="line breaks"):
            codec.send(Frame(command, headers))


def test_encoding_error_leaves_codec_usable() -> None:
    codec = encoder("1.0")
    with pytest.raises(StompEncodingError):
        codec.send(Frame("MESSAGE", [("k", "a\nb")]))
    assert isinstance(StompEncodingError("x"), StompProtocolError)
    codec.receive_data(b"COMMIT\n\n\x00")
    assert codec.next_event() == Frame("COMMIT")
    assert codec.send(Frame("RECEIPT")) == b"RECEIPT\n\n\x00\n"


def test_refuses_unknown_command_empty_name_and_unencodable_text() -> None:
    codec = encoder("1.2")
    with pytest.raises(StompEncodingError, match="unknown STOMP command"):
        codec.send(Frame("HELLO"))
    with pytest.raises(StompEncodingError, match="empty header name"):
        codec.send(Frame("MESSAGE", [("", "v")]))
    with pytest.raises(StompEncodingError, match="UTF-8"):
        codec.send(Frame("MESSAGE", [("k", "\udc80")]))


def test_utf8_text_and_memoryview_body() -> None:
    codec = encoder("1.2")
    data = codec.send(Frame("MESSAGE", [("destination", "/queue/é")], memoryview(b"\xff\x00")))  # type: ignore[arg-type]
    assert (
        data == "MESSAGE\ndestination:/queue/é\ncontent-length:2\n\n".encode() + b"\xff\x00\x00\n"
    )


def test_send_heartbeat_decodes_as_one_heart_beat() -> None:
    codec = StompCodec()
    assert codec.send_heartbeat() == b"\n"
    codec.receive_data(codec.send_heartbeat())
    assert codec.next_event() is not NEED_DATA
    assert codec.next_event() is NEED_DATA
