"""address-full-policy BLOCK, FAIL and DROP with real AMQP clients (PAGE: tests/paging)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container
from support import Capability, receive

from pybroker.config.parse import parse_config
from pybroker.embedded import Broker

pytestmark = pytest.mark.asyncio


def _broker(tmp_path, policy: str, max_size: str = "20K") -> Broker:
    xml = f"""<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>false</persistence-enabled><security-enabled>false</security-enabled>
      <acceptors><acceptor name="a">tcp://127.0.0.1:0?amqpCredits=50;amqpLowCredits=10</acceptor></acceptors>
      <address-settings><address-setting match="limited">
        <max-size-bytes>{max_size}</max-size-bytes><address-full-policy>{policy}</address-full-policy>
      </address-setting></address-settings></core></configuration>"""
    return Broker(parse_config(xml, file="limits.xml", instance_dir=tmp_path))


class Producer(MessagingHandler):
    """Pipelined producer recording the outcome of every transfer."""

    def __init__(self, port: int, count: int, size: int = 1000) -> None:
        super().__init__()
        self.port = port
        self.count = count
        self.body = b"x" * size
        self.sent = 0
        self.accepted = 0
        self.rejected: list[str] = []
        self.done = threading.Event()
        self.stalled = threading.Event()
        self._last_progress = 0

    def on_start(self, event):
        self.connection = event.container.connect(f"amqp://127.0.0.1:{self.port}")
        event.container.create_sender(self.connection, "limited", options=Capability("queue"))

    def on_sendable(self, event):
        while event.sender.credit and self.sent < self.count:
            event.sender.send(Message(body=self.sent.to_bytes(4, "big") + self.body))
            self.sent += 1

    def on_accepted(self, event):
        self.accepted += 1
        self._check(event)

    def on_rejected(self, event):
        condition = event.delivery.remote.condition
        self.rejected.append(condition.name if condition else "?")
        self._check(event)

    def _check(self, event):
        if self.accepted + len(self.rejected) >= self.count:
            self.done.set()
            event.connection.close()


async def test_fail_refuses_sends_with_resource_limit_exceeded_until_there_is_room(tmp_path):
    async with _broker(tmp_path, "FAIL") as broker:
        producer = Producer(broker.port, 60)
        await asyncio.to_thread(Container(producer).run)
        assert producer.accepted >= 15
        assert producer.rejected and set(producer.rejected) == {"amqp:resource-limit-exceeded"}
        assert producer.accepted + len(producer.rejected) == 60
        queue = broker.server.post_office.queues["limited"]
        assert queue.message_count == producer.accepted
        drained = await asyncio.to_thread(receive, broker.port, "limited", producer.accepted)
        assert len(drained) == producer.accepted
        again = Producer(broker.port, 5)
        await asyncio.to_thread(Container(again).run)
        assert again.accepted == 5


async def test_drop_accepts_but_keeps_only_what_fits(tmp_path):
    async with _broker(tmp_path, "DROP") as broker:
        producer = Producer(broker.port, 60)
        await asyncio.to_thread(Container(producer).run)
        assert producer.accepted == 60 and not producer.rejected
        queue = broker.server.post_office.queues["limited"]
        assert 15 <= queue.message_count < 60
        assert broker.server.post_office.limits.dropped == 60 - queue.message_count


async def test_block_withholds_credit_and_loses_nothing(tmp_path):
    async with _broker(tmp_path, "BLOCK") as broker:
        post_office = broker.server.post_office
        producer = Producer(broker.port, 200)
        thread = threading.Thread(target=Container(producer).run, daemon=True)
        thread.start()
        # the producer gets stuck: the queue holds the limit plus at most one credit window
        queue = None
        for _ in range(500):
            queue = post_office.queues.get("limited")
            if queue is not None and not post_office.can_send("limited"):
                break
            await asyncio.sleep(0.01)
        assert queue is not None and not post_office.can_send("limited")
        await asyncio.sleep(0.3)
        held = queue.message_count
        assert held < 200 and held <= 20 + 50  # 20 KiB of ~1.2 KiB messages + one credit window
        assert not producer.done.is_set()
        # a consumer makes room: the producer is released and everything arrives, in order
        bodies = await asyncio.to_thread(receive, broker.port, "limited", 200, credit=20)
        assert [int.from_bytes(body[:4], "big") for body in bodies] == list(range(200))
        await asyncio.to_thread(producer.done.wait, 10)
        assert producer.accepted == 200 and not producer.rejected
        thread.join(10)


class SizedProducer(Producer):
    """Sends one message of each size in ``sizes``."""

    def __init__(self, port: int, sizes: list[int]) -> None:
        super().__init__(port, len(sizes))
        self.sizes = sizes

    def on_sendable(self, event):
        while event.sender.credit and self.sent < self.count:
            event.sender.send(Message(body=b"s" * self.sizes[self.sent]))
            self.sent += 1


async def test_amqp_max_message_size_refuses_bigger_transfers_whole_or_in_frames(tmp_path):
    xml = """<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>false</persistence-enabled><security-enabled>false</security-enabled>
      <acceptors><acceptor name="a">tcp://127.0.0.1:0?amqpMaxMessageSize=4000</acceptor></acceptors>
      </core></configuration>"""
    async with Broker(parse_config(xml, file="size.xml", instance_dir=tmp_path)) as broker:
        # 5000 bytes arrive in one frame, 300,000 in many: both refused; the link goes on
        producer = SizedProducer(broker.port, [100, 5000, 300_000, 3000])
        await asyncio.to_thread(Container(producer).run)
        assert producer.accepted == 2
        assert producer.rejected == ["amqp:link:message-size-exceeded"] * 2
        bodies = await asyncio.to_thread(receive, broker.port, "limited", 2)
        assert [len(body) for body in bodies] == [100, 3000]


async def test_refused_transfers_use_credit_and_it_is_topped_up(tmp_path):
    # a producer whose every transfer is refused must not run out of credit: 60 refusals on a
    # link granted 20 at a time
    xml = """<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>false</persistence-enabled><security-enabled>false</security-enabled>
      <acceptors><acceptor name="a">tcp://127.0.0.1:0?amqpMaxMessageSize=4000;amqpCredits=20;amqpLowCredits=5</acceptor></acceptors>
      </core></configuration>"""
    async with Broker(parse_config(xml, file="size.xml", instance_dir=tmp_path)) as broker:
        producer = SizedProducer(broker.port, [5000] * 30 + [300_000] * 10 + [5000] * 20 + [100])
        container = Container(producer)
        thread = threading.Thread(target=container.run, daemon=True)
        thread.start()
        finished = await asyncio.to_thread(producer.done.wait, 20)
        if not finished:
            container.stop()
        await asyncio.to_thread(thread.join, 10)
        assert finished, f"stalled after {producer.sent} sends ({len(producer.rejected)} refused)"
        assert producer.rejected == ["amqp:link:message-size-exceeded"] * 60
        assert producer.accepted == 1
