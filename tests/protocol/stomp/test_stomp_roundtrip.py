"""Property tests: encode then decode gives the frames back, however the bytes are split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pybroker.protocol.stomp.codec import (
    COMMANDS,
    HEART_BEAT,
    NEED_DATA,
    UNESCAPED_COMMANDS,
    Frame,
    HeartBeat,
    StompCodec,
    StompProtocolError,
)

SPECIAL = list(":\\\n\r \t")
characters = st.one_of(
    st.sampled_from(SPECIAL),
    st.characters(exclude_categories=["Cs"]),  # surrogates cannot be UTF-8 encoded
)


def allowed(text: str, version: str, command: str, is_name: bool) -> bool:
    """Whether the encoder can carry this header text in this version and frame."""
    if version == "1.0" or command in UNESCAPED_COMMANDS:
        return "\n" not in text and "\r" not in text and not (is_name and ":" in text)
    return version == "1.2" or "\r" not in text


@st.composite
def frames(draw: st.DrawFn, version: str) -> Frame:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    names = st.text(characters, min_size=1, max_size=12).filter(
        lambda name: name != "content-length" and allowed(name, version, command, True)
    )
    values = st.text(characters, max_size=16).filter(
        lambda value: allowed(value, version, command, False)
    )
    headers = draw(st.lists(st.tuples(names, values), max_size=5))
    if headers and draw(st.booleans()):
        headers.append(headers[0])  # repeated header
    body = draw(st.binary(max_size=64) | st.sampled_from([b"", b"\x00", b"\n\x00\r\n", b"x"]))
    return Frame(command, headers, body)


def expected(frame: Frame, version: str) -> Frame:
    """What the decoder must return for an encoded ``frame``."""
    headers = list(frame.headers)
    if version == "1.0":
        headers = [(name, value.lstrip(" \t")) for name, value in headers]
    if frame.body:
        headers.append(("content-length", str(len(frame.body))))
    return Frame(frame.command, headers, frame.body)


def decode_with_splits(data: bytes, cuts: list[int], version: str) -> list[Frame | HeartBeat]:
    codec = StompCodec()
    codec.set_version(version)
    events: list[Frame | HeartBeat] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        codec.receive_data(data[start:cut])
        start = cut
        while (event := codec.next_event()) is not NEED_DATA:
            events.append(event)
    return events


@st.composite
def streams(draw: st.DrawFn) -> tuple[str, list[Frame], bytes, list[Frame | HeartBeat]]:
    version = draw(st.sampled_from(["1.0", "1.1", "1.2"]))
    frame_list = draw(st.lists(frames(version), min_size=1, max_size=4))
    encoder = StompCodec()
    encoder.set_version(version)
    chunks: list[bytes] = []
    events: list[Frame | HeartBeat] = []
    for frame in frame_list:
        leading = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), max_size=2))
        chunks.extend(leading)
        events.extend([HEART_BEAT] * len(leading))
        chunks.append(encoder.send(frame))
        events.extend([expected(frame, version), HEART_BEAT])  # the LF after the NUL
    return version, frame_list, b"".join(chunks), events


@settings(deadline=None, max_examples=150)
@given(streams(), st.data())
def test_round_trip_with_random_splits(
    stream: tuple[str, list[Frame], bytes, list[Frame | HeartBeat]], data: st.DataObject
) -> None:
    version, _, encoded, events = stream
    assert decode_with_splits(encoded, [], version) == events
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=12))
    assert decode_with_splits(encoded, cuts, version) == events


@settings(deadline=None, max_examples=40)
@given(streams())
def test_round_trip_byte_by_byte(
    stream: tuple[str, list[Frame], bytes, list[Frame | HeartBeat]],
) -> None:
    version, _, encoded, events = stream
    assert decode_with_splits(encoded, list(range(len(encoded))), version) == events


@settings(deadline=None, max_examples=60)
@given(st.sampled_from(["1.0", "1.1", "1.2"]).flatmap(lambda v: st.tuples(st.just(v), frames(v))))
def test_every_proper_prefix_of_an_encoded_frame_needs_data(pair: tuple[str, Frame]) -> None:
    version, frame = pair
    encoder = StompCodec()
    encoder.set_version(version)
    encoded = encoder.send(frame)[:-1]  # without the trailing LF (a heart-beat of its own)
    for length in range(len(encoded)):
        codec = StompCodec()
        codec.set_version(version)
        codec.receive_data(encoded[:length])
        assert codec.next_event() is NEED_DATA
    codec.receive_data(encoded[len(encoded) - 1 :])
    assert codec.next_event() == expected(frame, version)


@settings(deadline=None, max_examples=100)
@given(st.binary(max_size=200), st.sampled_from(["1.0", "1.1", "1.2"]))
def test_arbitrary_bytes_never_raise_anything_but_protocol_errors(
    noise: bytes, version: str
) -> None:
    codec = StompCodec(max_frame_size=150, max_headers=3, max_header_length=40)
    codec.set_version(version)
    try:
        for offset in range(0, len(noise), 7):
            codec.receive_data(noise[offset : offset + 7])
            while codec.next_event() is not NEED_DATA:
                pass
    except StompProtocolError:
        pass


@settings(deadline=None, max_examples=100)
@given(st.sampled_from(sorted(COMMANDS)), st.binary(max_size=60), st.data())
def test_noise_inside_a_valid_head_is_decoded_or_refused(
    command: str, noise: bytes, data: st.DataObject
) -> None:
    """Garbage after a valid command never crashes and never yields a wrong command."""
    codec = StompCodec()
    codec.set_version(data.draw(st.sampled_from(["1.0", "1.1", "1.2"])))
    codec.receive_data(command.encode() + b"\n" + noise)
    try:
        event = codec.next_event()
    except StompProtocolError:
        return
    assert event is NEED_DATA or (isinstance(event, Frame) and event.command == command)
