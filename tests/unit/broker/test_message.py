"""Message construction and its journal/page form (encode/decode)."""

from __future__ import annotations

import threading

import pytest

from pybroker.broker.message import NO_CODEC, Message
from pybroker.config.model import RoutingType


@pytest.mark.parametrize("priority", [0, 4, 9, 12, -1])
def test_received_sets_every_slot_like_init(priority: int) -> None:
    body = b"payload"
    expected = Message(
        address="orders", body=body, protocol="amqp", codec=NO_CODEC, durable=True,
        priority=priority, expiration=1234, timestamp=99,
    )
    made = Message.received("orders", body, "amqp", NO_CODEC, True, priority, 1234, 99)
    for slot in Message.__slots__:
        assert getattr(made, slot) == getattr(expected, slot), slot


def _decoded(message: Message) -> Message:
    return Message.decode(7, message.encode(), {})


def test_encode_round_trips_every_stored_field():
    message = Message(address="orders", body=b"\x00body", durable=True, priority=7,
                      expiration=123, routing_type=RoutingType.ANYCAST,
                      properties={"colour": "red", "n": 3}, annotations={"x-opt": 1})
    back = _decoded(message)
    assert (back.message_id, back.address, back.body, back.durable, back.priority,
            back.expiration, back.routing_type, back.properties, back.annotations) == (
        7, "orders", b"\x00body", True, 7, 123, RoutingType.ANYCAST,
        {"colour": "red", "n": 3}, {"x-opt": 1})


def test_a_message_that_cannot_be_encoded_fails_and_the_next_one_encodes_cleanly():
    with pytest.raises(TypeError):
        Message(address="a", body=b"x", properties={"bad": object()}).encode()
    # the reused packer starts afresh: nothing of the failed message leaks into the next
    assert _decoded(Message(address="b", body=b"y")).body == b"y"


def test_threads_encode_independently():
    results: list[bytes] = []
    errors: list[BaseException] = []

    def encode_many(index: int) -> None:
        try:
            for _ in range(2000):
                body = bytes([index]) * 100
                if _decoded(Message(address=f"t{index}", body=body)).body != body:
                    raise AssertionError("mixed up")
            results.append(bytes([index]))
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=encode_many, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(results) == 4
