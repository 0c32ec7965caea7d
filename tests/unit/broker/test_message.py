"""Message construction: the receive path's positional constructor matches ``Message(...)``."""

from __future__ import annotations

import pytest

from pybroker.broker.message import NO_CODEC, Message


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
