"""routing_view: the receive path's header+properties decode agrees with parse_message and
refuses what parse_message refuses (truncations, garbage)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proton import Message

from pybroker.protocol.amqp.codec import AMQPDecodeError, head_view, parse_message, routing_view

MESSAGES = [
    Message(body=b"x" * 100),
    Message(body=b"x" * 1024),  # proton's default shape: list0 header and properties, vbin32 value
    Message(body="text", durable=True, priority=7, ttl=1.5, address="q", id="ID:1", reply_to="r"),
    Message(body={"a": 1}, properties={"k": "v", "n": 3}, annotations={"x-opt-a": "b"}, subject="s"),
    Message(body=[1, 2, 3], correlation_id=42, expiry_time=1_000_000, creation_time=999),
    Message(body=None, first_acquirer=True, delivery_count=3),
]


@pytest.mark.parametrize("message", MESSAGES, ids=range(len(MESSAGES)))
def test_agrees_with_the_full_parser(message):
    data = bytes(message.encode())
    parsed = parse_message(data)
    assert routing_view(data) == (parsed.header, parsed.properties)


@pytest.mark.parametrize("message", MESSAGES, ids=range(len(MESSAGES)))
def test_head_view_tells_whether_there_are_application_properties(message):
    data = bytes(message.encode())
    parsed = parse_message(data)
    assert head_view(data) == (parsed.header, parsed.properties,
                               parsed.application_properties_range is not None)


@pytest.mark.parametrize("message", MESSAGES, ids=range(len(MESSAGES)))
def test_every_truncation_is_refused_like_the_full_parser(message):
    data = bytes(message.encode())
    for cut in range(len(data)):
        prefix = data[:cut]
        try:
            expected = parse_message(prefix)
        except AMQPDecodeError:
            with pytest.raises(AMQPDecodeError):
                routing_view(prefix)
        else:
            assert routing_view(prefix) == (expected.header, expected.properties)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_raises_only_decode_errors(garbage):
    try:
        routing_view(garbage)
    except AMQPDecodeError:
        pass
