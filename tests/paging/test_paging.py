"""Paging end to end: enter and leave page mode, order, restart, multicast, failover."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container
from support import Capability, TransactedSender, receive, send

from pybroker.config.parse import parse_config
from pybroker.embedded import Broker
from pybroker.testing.ha import HAPair

pytestmark = pytest.mark.asyncio

LIMIT = "20K"


def _xml(root: Path, extra: str = "") -> str:
    return f"""<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>true</persistence-enabled><security-enabled>false</security-enabled>
      <journal-directory>{root}/data/journal</journal-directory>
      <bindings-directory>{root}/data/bindings</bindings-directory>
      <paging-directory>{root}/data/paging</paging-directory>
      <large-messages-directory>{root}/data/large</large-messages-directory>
      <journal-file-size>1M</journal-file-size>
      <acceptors><acceptor name="a">tcp://127.0.0.1:0</acceptor></acceptors>
      <address-settings><address-setting match="paged.#">
        <max-size-bytes>{LIMIT}</max-size-bytes><page-size-bytes>64K</page-size-bytes>
        <address-full-policy>PAGE</address-full-policy>
      </address-setting></address-settings>{extra}</core></configuration>"""


def _broker(root: Path, extra: str = "") -> Broker:
    return Broker(parse_config(_xml(root, extra), file="paging.xml", instance_dir=root))


class Filler(MessagingHandler):
    def __init__(self, port: int, address: str, count: int, capability: str = "queue", size: int = 1000) -> None:
        super().__init__()
        self.port, self.address, self.count, self.capability = port, address, count, capability
        self.body = b"x" * size
        self.sent = 0
        self.accepted = 0

    def on_start(self, event):
        self.connection = event.container.connect(f"amqp://127.0.0.1:{self.port}")
        event.container.create_sender(self.connection, self.address, options=Capability(self.capability))

    def on_sendable(self, event):
        while event.sender.credit and self.sent < self.count:
            event.sender.send(Message(body=self.sent.to_bytes(4, "big") + self.body, durable=True))
            self.sent += 1

    def on_accepted(self, event):
        self.accepted += 1
        if self.accepted == self.count:
            self.connection.close()


async def _fill(port: int, address: str, count: int, capability: str = "queue") -> None:
    filler = Filler(port, address, count, capability)
    await asyncio.to_thread(Container(filler).run)
    assert filler.accepted == count


def _numbers(bodies: list[bytes]) -> list[int]:
    return [int.from_bytes(bytes(body)[:4], "big") for body in bodies]


def _page_files(root: Path) -> list[Path]:
    return sorted((root / "data" / "paging").glob("*/*.page"))


async def test_memory_stays_bounded_and_everything_comes_back_in_order(tmp_path):
    async with _broker(tmp_path) as broker:
        await _fill(broker.port, "paged.orders", 600)
        post_office = broker.server.post_office
        usage = post_office.limits.usage("paged.orders")
        queue = post_office.queues["paged.orders"]
        assert broker.server.paging.is_paging("paged.orders")
        assert usage.bytes <= 20 * 1024 + 2_500  # the limit (plus the message that crossed it)
        assert queue.message_count == 600  # the paged ones count too
        assert _page_files(tmp_path), "nothing was written to page files"
        bodies = await asyncio.to_thread(receive, broker.port, "paged.orders", 600, credit=50)
        assert _numbers(bodies) == list(range(600))
        assert queue.message_count == 0
        assert not broker.server.paging.is_paging("paged.orders")
        # after paging ends new messages go to memory directly (the drained queue was
        # auto-deleted; the send creates it again)
        await _fill(broker.port, "paged.orders", 3)
        queue = post_office.queues["paged.orders"]
        assert len(list(queue.iter_queued())) == 3 and queue.paged_count == 0


RESTART_QUEUE = '<addresses><address name="paged.restart"><anycast><queue name="paged.restart"/></anycast></address></addresses>'


async def test_paged_messages_and_consumed_positions_survive_a_restart(tmp_path):
    async with _broker(tmp_path, RESTART_QUEUE) as broker:
        await _fill(broker.port, "paged.restart", 500)
        first = await asyncio.to_thread(receive, broker.port, "paged.restart", 200, credit=20)
        assert _numbers(first) == list(range(200))
    async with _broker(tmp_path, RESTART_QUEUE) as broker:
        # counted from the page files and the cursor records before anything is read back
        assert broker.server.post_office.queues["paged.restart"].message_count == 300
        rest = await asyncio.to_thread(receive, broker.port, "paged.restart", 300, credit=20)
        assert _numbers(rest) == list(range(200, 500))
        assert broker.server.post_office.queues["paged.restart"].message_count == 0
    async with _broker(tmp_path, RESTART_QUEUE) as broker:
        queue = broker.server.post_office.queues["paged.restart"]
        assert queue.message_count == 0
        # nothing comes back: every position was acknowledged
        from proton import Timeout

        with pytest.raises(Timeout):
            await asyncio.to_thread(receive, broker.port, "paged.restart", 1, timeout=0.5)


async def test_multicast_queues_acknowledge_at_their_own_speed(tmp_path):
    extra = """<addresses><address name="paged.news"><multicast>
        <queue name="fast"/><queue name="slow"/></multicast></address></addresses>"""
    async with _broker(tmp_path, extra) as broker:
        await _fill(broker.port, "paged.news", 400, capability="topic")
        fast = await asyncio.to_thread(receive, broker.port, "paged.news::fast", 400, capability=None, credit=50)
        assert _numbers(fast) == list(range(400))
        slow_first = await asyncio.to_thread(receive, broker.port, "paged.news::slow", 100, capability=None)
        assert _numbers(slow_first) == list(range(100))
    # the slow one's position and the remaining pages survive
    async with _broker(tmp_path, extra) as broker:
        slow_rest = await asyncio.to_thread(
            receive, broker.port, "paged.news::slow", 300, capability=None, credit=50
        )
        assert _numbers(slow_rest) == list(range(100, 400))
        assert broker.server.post_office.queues["fast"].message_count == 0


async def test_filters_apply_to_paged_messages(tmp_path):
    extra = """<addresses><address name="paged.f"><multicast>
        <queue name="even"><filter string="parity = 'even'"/></queue></multicast></address></addresses>"""
    async with _broker(tmp_path, extra) as broker:

        def send_with_parity():
            from support import connect

            connection = connect(broker.port)
            try:
                sender = connection.create_sender("paged.f", options=Capability("topic"))
                for i in range(200):
                    sender.send(Message(body=i.to_bytes(4, "big") + b"y" * 500, durable=True,
                                        properties={"parity": "even" if i % 2 == 0 else "odd"}))
            finally:
                connection.close()

        await asyncio.to_thread(send_with_parity)
        assert broker.server.paging.is_paging("paged.f")
        bodies = await asyncio.to_thread(receive, broker.port, "paged.f::even", 100, capability=None)
        assert _numbers(bodies) == list(range(0, 200, 2))


async def test_a_backup_serves_paged_messages_after_failover(tmp_path):
    pair = HAPair(tmp_path)
    for node in (pair.primary, pair.backup):
        node.configuration = node.configuration.replace(
            address_settings=parse_config(_xml(tmp_path), file="x.xml", instance_dir=tmp_path).address_settings
        )
    async with pair:
        await _fill(pair.primary.port, "paged.ha", 300)
        assert pair.primary.server.paging.is_paging("paged.ha")
        first = await asyncio.to_thread(receive, pair.primary.port, "paged.ha", 50)
        assert _numbers(first) == list(range(50))
        await pair.fail_primary()
        await pair.wait_backup_active()
        rest = await asyncio.to_thread(receive, pair.backup.port, "paged.ha", 250, credit=50)
        assert _numbers(rest) == list(range(50, 300))


@pytest.mark.parametrize("policy", ["FAIL", "DROP"])
async def test_page_limit_with_page_full_policy(tmp_path, policy):
    capped = f"""<address-setting match="paged.capped">
        <max-size-bytes>10K</max-size-bytes><page-size-bytes>64K</page-size-bytes>
        <address-full-policy>PAGE</address-full-policy><page-limit-messages>50</page-limit-messages>
        <page-full-policy>{policy}</page-full-policy></address-setting>"""
    xml = _xml(tmp_path).replace("</address-settings>", capped + "</address-settings>")
    async with Broker(parse_config(xml, file="cap.xml", instance_dir=tmp_path)) as broker:

        class Counting(Filler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.rejected = 0

            def on_rejected(self, event):
                self.rejected += 1
                if self.accepted + self.rejected == self.count:
                    self.connection.close()

            def on_accepted(self, event):
                self.accepted += 1
                if self.accepted + self.rejected == self.count:
                    self.connection.close()

        filler = Counting(broker.port, "paged.capped", 120)
        await asyncio.to_thread(Container(filler).run)
        queue = broker.server.post_office.queues["paged.capped"]
        kept = queue.message_count
        if policy == "FAIL":
            assert filler.rejected > 0 and filler.accepted == kept
        else:
            assert filler.rejected == 0 and broker.server.post_office.limits.dropped == 120 - kept
        assert kept < 120
        bodies = await asyncio.to_thread(receive, broker.port, "paged.capped", kept, credit=20)
        assert _numbers(bodies) == list(range(kept))


LARGE_QUEUE = '<addresses><address name="paged.large"><anycast><queue name="paged.large"/></anycast></address></addresses>'


async def test_a_crash_keeps_the_body_of_a_paged_large_message_and_drops_orphan_bodies(tmp_path, monkeypatch):
    """Bodies whose pending record a crash left behind: kept when a page record holds the
    message, deleted when nothing does (even though the store has pages)."""
    # 3 MiB: over min-large-message-size, and in many reads, so that it streams to a file
    large_body = bytes(range(256)) * 12_288
    large_dir = tmp_path / "data" / "large"
    async with _broker(tmp_path, LARGE_QUEUE) as broker:
        await _fill(broker.port, "paged.large", 40)
        assert broker.server.paging.is_paging("paged.large")
        storage = broker.server.storage
        # as if the broker died before it could delete the pending records
        monkeypatch.setattr(storage, "delete_large_pending", lambda record_id: None)
        await asyncio.to_thread(send, broker.port, "paged.large", [large_body], durable=True)
        orphan = storage.next_id()  # a body being written whose message was never routed
        writer = broker.server.large_messages.create(orphan)
        writer.write(b"orphan" * 100)
        await writer.finish()
        storage.store_large_pending(orphan)
        await storage.durable()
        monkeypatch.undo()
        names = sorted(path.name for path in large_dir.glob("*.msg"))
        assert len(names) == 2, (names, orphan)
    async with _broker(tmp_path, LARGE_QUEUE) as broker:
        names = [path.name for path in large_dir.glob("*.msg")]
        assert f"{orphan}.msg" not in names and len(names) == 1
        bodies = await asyncio.to_thread(receive, broker.port, "paged.large", 41, credit=20)
        assert _numbers(bodies[:40]) == list(range(40))
        assert bytes(bodies[40]) == large_body


def _bodies(numbers: range) -> list[bytes]:
    return [number.to_bytes(4, "big") + b"t" * 1000 for number in numbers]


TX_QUEUE = '<addresses><address name="paged.tx"><anycast><queue name="paged.tx"/></anycast></address></addresses>'


async def test_amqp_transactions_on_a_paging_address_page_in_order_and_survive_a_restart(tmp_path):
    async with _broker(tmp_path, TX_QUEUE) as broker:
        await _fill(broker.port, "paged.tx", 30)
        assert broker.server.paging.is_paging("paged.tx")
        paged_before = broker.server.paging.addresses["paged.tx"].store.record_count
        committed = TransactedSender(broker.port, _bodies(range(30, 80)), commit=True, address="paged.tx")
        await asyncio.to_thread(Container(committed).run)
        aborted = TransactedSender(broker.port, _bodies(range(1000, 1010)), commit=False, address="paged.tx")
        await asyncio.to_thread(Container(aborted).run)
        assert (committed.outcome, aborted.outcome) == ("committed", "aborted")
        # the committed sends went to the page files, not to memory
        assert broker.server.paging.addresses["paged.tx"].store.record_count == paged_before + 50
        assert broker.server.post_office.limits.usage("paged.tx").bytes <= 20 * 1024 + 2_500
    async with _broker(tmp_path, TX_QUEUE) as broker:
        assert broker.server.post_office.queues["paged.tx"].message_count == 80
        bodies = await asyncio.to_thread(receive, broker.port, "paged.tx", 80, credit=20)
        assert _numbers(bodies) == list(range(80))
