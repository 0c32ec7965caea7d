"""Large AMQP messages: streamed to <id>.msg files as the frames arrive, and from them to
consumers; they survive restarts; broken transfers leave nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path

import pytest
from proton import Message
from support import Capability, connect, receive

from pybroker.testing import embedded_broker

pytestmark = pytest.mark.asyncio

SIZE = 3 * 1024 * 1024 + 17


def _body(seed: int = 1) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (SIZE // 32) + b"tail" * 4


def _send(port: int, bodies: list[bytes], address: str = "big") -> None:
    connection = connect(port, timeout=60)
    try:
        sender = connection.create_sender(address, options=Capability("queue"))
        for body in bodies:
            sender.send(Message(body=body, durable=True, properties={"kind": "large"}))
    finally:
        connection.close()


def _files(root: Path) -> list[Path]:
    return sorted((root / "data" / "large-messages").glob("*.msg"))


class RawSender:
    """A proton engine on a plain socket (SASL-less AMQP, open, begin, attach): a client that
    can do what the blocking client will not (half a transfer, everything in one write)."""

    def __init__(self, port: int, address: str, *, queue_capability: bool = False) -> None:
        from proton import Connection, Transport

        self.connection = Connection()
        self.transport = Transport()
        self.transport.bind(self.connection)
        self.connection.open()
        session = self.connection.session()
        session.open()
        self.sender = session.sender(address)
        self.sender.target.address = address
        if queue_capability:
            capabilities = self.sender.target.capabilities
            capabilities.put_array(False, 21)  # an array of symbols
            capabilities.enter()
            capabilities.put_symbol("queue")
            capabilities.exit()
        self.sender.open()
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(0.05)

    def pump(self) -> None:
        """Write everything the engine has to say (at once), then read what came back."""
        transport = self.transport
        pending = transport.pending()
        if pending > 0:
            self.sock.sendall(transport.peek(pending))
            transport.pop(pending)
        try:
            received = self.sock.recv(65536)
        except TimeoutError:
            received = b""
        if received:
            transport.push(received)

    def wait(self, condition, rounds: int = 600) -> None:
        """Pump until ``condition()`` (bounded: about ``rounds`` x 50 ms)."""
        for _ in range(rounds):
            self.pump()
            if condition():
                return
        raise AssertionError("the broker did not answer")

    def close(self) -> None:
        self.sock.close()


async def test_a_large_message_goes_through_a_file_and_comes_back_whole(tmp_path):
    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        body = _body()
        await asyncio.to_thread(_send, broker.port, [body])
        queue = broker.server.post_office.queues["big"]
        [ref] = list(queue.iter_queued())
        assert ref.message.large is not None and ref.message.large.size > SIZE
        assert len(ref.message.body) < 1024  # only the head is in memory
        assert len(_files(tmp_path)) == 1
        [received] = await asyncio.to_thread(receive, broker.port, "big", 1, timeout=60)
        assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
        for _ in range(100):
            if not _files(tmp_path):
                break
            await asyncio.sleep(0.02)
        assert _files(tmp_path) == [], "the file of an acknowledged message was not deleted"


async def test_large_messages_survive_a_restart_and_keep_order_with_small_ones(tmp_path):
    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        def send_mixed():
            connection = connect(broker.port, timeout=60)
            try:
                sender = connection.create_sender("mixed", options=Capability("queue"))
                sender.send(Message(body=b"small-1", durable=True))
                sender.send(Message(body=_body(2), durable=True))
                sender.send(Message(body=b"small-2", durable=True))
            finally:
                connection.close()

        await asyncio.to_thread(send_mixed)
    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        bodies = await asyncio.to_thread(receive, broker.port, "mixed", 3, timeout=60)
        assert bodies[0] == b"small-1" and bodies[2] == b"small-2"
        assert bodies[1] == _body(2)


async def test_a_redelivered_large_message_gets_a_new_header_and_the_same_body(tmp_path):
    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        body = _body(3)
        await asyncio.to_thread(_send, broker.port, [body])

        def take_without_ack():
            connection = connect(broker.port, timeout=60)
            receiver = connection.create_receiver("big", options=Capability("queue"), credit=1)
            message = receiver.receive(timeout=60)
            size = len(bytes(message.body))
            connection.close()
            return size

        assert await asyncio.to_thread(take_without_ack) == len(body)

        def read_again():
            connection = connect(broker.port, timeout=60)
            try:
                receiver = connection.create_receiver("big", options=Capability("queue"), credit=1)
                message = receiver.receive(timeout=60)
                receiver.accept()
                return message.delivery_count, bytes(message.body), message.properties
            finally:
                connection.close()

        count, again, properties = await asyncio.to_thread(read_again)
        assert count == 1 and again == body and properties == {"kind": "large"}


async def test_an_interrupted_large_transfer_leaves_no_file(tmp_path):
    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        port = broker.port

        def start_and_vanish():
            raw = RawSender(port, "big")
            data = Message(body=_body(4), durable=True).encode()
            sent_transfer = False
            try:
                for _ in range(400):
                    raw.pump()
                    if raw.sender.credit and not sent_transfer:
                        raw.sender.delivery(b"tag")
                        raw.sender.stream(data[: len(data) // 2])  # half of it, never completed
                        sent_transfer = True
                    if sent_transfer and raw.transport.pending() <= 0:
                        break
            finally:
                raw.close()

        await asyncio.to_thread(start_and_vanish)
        for _ in range(200):
            if not _files(tmp_path) and broker.server.post_office.queues.get("big") is not None:
                break
            await asyncio.sleep(0.02)
        assert _files(tmp_path) == []
        queue = broker.server.post_office.queues.get("big")
        assert queue is None or queue.message_count == 0


async def test_large_message_file_names_are_message_ids(tmp_path):
    # documented layout: <large-messages-directory>/<message id>.msg
    from pybroker.storage.large import LargeMessageStore

    store = LargeMessageStore(tmp_path)
    assert store.path(42) == Path(tmp_path) / "42.msg"
    assert os.path.basename(store.path(7)) == "7.msg"


async def test_a_large_message_that_arrives_whole_goes_to_a_file_too(tmp_path):
    """120 KiB: over the 100 KiB threshold, yet small enough to arrive in one socket read (the
    transfer is complete at its first frame event): it is stored as a large message all the
    same, and comes back whole."""
    from proton import Delivery

    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        body = bytes(range(256)) * 480

        def send_in_one_write():
            raw = RawSender(broker.port, "whole", queue_capability=True)
            delivery = None
            try:
                for _ in range(400):
                    raw.pump()  # the whole transfer goes out in one write
                    if raw.sender.credit and delivery is None:
                        delivery = raw.sender.delivery(b"t")
                        raw.sender.send(Message(body=body, durable=True).encode())
                        raw.sender.advance()
                    if delivery is not None and delivery.remote_state:
                        return delivery.remote_state
                return None
            finally:
                raw.close()

        outcome = await asyncio.to_thread(send_in_one_write)
        assert outcome == Delivery.ACCEPTED
        queue = broker.server.post_office.queues["whole"]
        [ref] = list(queue.iter_queued())
        assert ref.message.large is not None and len(ref.message.body) < 1024
        assert len(_files(tmp_path)) == 1
        [received] = await asyncio.to_thread(receive, broker.port, "whole", 1, timeout=30)
        assert bytes(received) == body


@pytest.mark.parametrize("large", [False, True], ids=["in-memory", "large"])
async def test_aborted_transfers_leave_nothing_and_the_link_goes_on(tmp_path, large):
    """A transfer aborted half-way (AMQP 1.0 2.7.5 ``aborted``), and one aborted before any
    byte, are dropped (no message, no large file); the next transfers on the link arrive."""
    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        big = _body(6) if large else b"m" * 20_000

        def send_with_aborts():
            raw = RawSender(broker.port, "aborts", queue_capability=True)
            sender = raw.sender
            try:
                raw.wait(lambda: sender.credit > 0)
                half = sender.delivery(b"half")
                data = Message(body=big, durable=True).encode()
                sender.stream(data[: len(data) // 2])
                raw.pump()
                raw.pump()
                half.abort()
                sender.delivery(b"bare").abort()
                outcomes = []
                for tag, body in ((b"small", b"small"), (b"whole", big)):
                    delivery = sender.delivery(tag)
                    sender.send(Message(body=body, durable=True).encode())
                    sender.advance()
                    raw.wait(lambda delivery=delivery: bool(delivery.remote_state))
                    outcomes.append(delivery.remote_state)
                return outcomes
            finally:
                raw.close()

        from proton import Delivery

        outcomes = await asyncio.to_thread(send_with_aborts)
        assert outcomes == [Delivery.ACCEPTED, Delivery.ACCEPTED]
        queue = broker.server.post_office.queues["aborts"]
        assert queue.message_count == 2
        assert len(_files(tmp_path)) == (1 if large else 0)  # the aborted body left no file
        bodies = await asyncio.to_thread(receive, broker.port, "aborts", 2, timeout=30)
        assert [bytes(body) for body in bodies] == [b"small", big]
