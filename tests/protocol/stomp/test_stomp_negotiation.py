"""Heart-beat and version negotiation helpers, and the Frame helpers handlers use."""

from __future__ import annotations

import pytest

from pybroker.protocol.stomp.codec import (
    Frame,
    StompProtocolError,
    UnsupportedVersionError,
    negotiate_heart_beat,
    negotiate_version,
    parse_heart_beat,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0,0", (0, 0)),
        ("1000,2000", (1000, 2000)),
        (" 10 , 20 ", (10, 20)),
        ("9223372036854775807,0", (2**63 - 1, 0)),
    ],
)
def test_parse_heart_beat(value: str, expected: tuple[int, int]) -> None:
    assert parse_heart_beat(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0",
        "1,2,3",
        "a,1",
        "-1,0",
        "1,",
        ",1",
        "1.5,2",
        "+1,2",
        "9223372036854775808,0",
        "9" * 5000 + ",0",
        "\u0661,0",
        "1;2",
    ],
)
def test_parse_heart_beat_rejects(value: str) -> None:
    with pytest.raises(StompProtocolError, match="bad heart-beat"):
        parse_heart_beat(value)


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        # Spec: server sends every max(sx, cy) unless one is 0; expects max(cx, sy) unless 0.
        ((0, 0), (5000, 5000), (0, 0)),
        ((1000, 0), (5000, 5000), (0, 5000)),
        ((0, 1000), (5000, 5000), (5000, 0)),
        ((10000, 20000), (5000, 5000), (20000, 10000)),
        ((4000, 8000), (0, 0), (0, 0)),
        ((4000, 8000), (0, 3000), (0, 4000)),
        ((4000, 8000), (9000, 0), (9000, 0)),
    ],
)
def test_negotiate_heart_beat(
    client: tuple[int, int], server: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert negotiate_heart_beat(client, server) == expected


@pytest.mark.parametrize(
    ("client", "server"), [((-1, 0), (0, 0)), ((0, 0), (0,)), ((0, 0), (1.5, 0))]
)
def test_negotiate_heart_beat_rejects(client: tuple, server: tuple) -> None:
    with pytest.raises(StompProtocolError, match="bad"):
        negotiate_heart_beat(client, server)


@pytest.mark.parametrize(
    ("header", "supported", "expected"),
    [
        (None, ("1.0", "1.1", "1.2"), "1.0"),
        ("1.2", ("1.0", "1.1", "1.2"), "1.2"),
        ("1.0,1.1,2.0", ("1.0", "1.1", "1.2"), "1.1"),  # the specification's example
        ("1.1,1.0", ("1.0", "1.1", "1.2"), "1.1"),
        ("1.0, 1.2", ("1.0", "1.1", "1.2"), "1.2"),
        ("1.2", ("1.2", "1.0"), "1.2"),
        ("1.0,1.1,1.2", ("1.0", "1.1"), "1.1"),
    ],
)
def test_negotiate_version(header: str | None, supported: tuple[str, ...], expected: str) -> None:
    assert negotiate_version(header, supported) == expected


@pytest.mark.parametrize(
    ("header", "supported"),
    [("2.0", ("1.0", "1.1", "1.2")), ("", ("1.0", "1.1", "1.2")), (None, ("1.1", "1.2"))],
)
def test_negotiate_version_without_common_version(
    header: str | None, supported: tuple[str, ...]
) -> None:
    with pytest.raises(UnsupportedVersionError, match="supported protocol versions") as caught:
        negotiate_version(header, supported)
    assert caught.value.supported == supported
    assert isinstance(caught.value, StompProtocolError)


def test_negotiate_version_rejects_unknown_supported_list() -> None:
    with pytest.raises(ValueError, match=r"2\.0"):
        negotiate_version("1.2", ("1.2", "2.0"))


def test_frame_helpers() -> None:
    frame = Frame("SEND", [("destination", "/q"), ("x", "1"), ("x", "2")], b"body")
    assert frame.require_header("destination") == "/q"
    with pytest.raises(StompProtocolError, match="SEND frame has no 'receipt' header"):
        frame.require_header("receipt")
    assert frame.has_header("x") and not frame.has_header("y")
    assert frame.header_values("x") == ["1", "2"]
    assert frame.header_map() == {"destination": "/q", "x": "1"}
    assert Frame("COMMIT").headers == [] and Frame("COMMIT").body == b""
    assert "4 bytes" in repr(frame)
    assert "..." in repr(Frame("SEND", [], b"x" * 100))
