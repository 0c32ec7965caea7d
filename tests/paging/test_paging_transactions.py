"""Transactions on a paging address: paged sends are visible only once the COMMIT is durable
(also after a restart), acks of depaged messages count only when committed."""

from __future__ import annotations

import asyncio

import pytest
from support import started, until

from pybroker.broker.message import Message
from pybroker.broker.security import Principal
from pybroker.broker.server import BrokerServer
from pybroker.broker.transaction import TransactionState
from pybroker.config.model import RoutingType
from pybroker.config.parse import parse_config
from pybroker.errors import AddressFullError, StorageError
from pybroker.storage.journal_storage import JournalStorageManager

pytestmark = pytest.mark.asyncio

ADDRESS = "txq"
LIMIT = 4 * 1024
BODY = 1000


class Collector:
    """A consumer that takes up to ``credit`` messages (None: any number)."""

    def __init__(self, credit: int | None = None) -> None:
        self.refs: list = []
        self.credit = credit

    def deliver(self, ref) -> bool:
        if self.credit is not None and len(self.refs) >= self.credit:
            return False
        self.refs.append(ref)
        return True

    @property
    def numbers(self) -> list[int]:
        return [int(ref.message.body[:8]) for ref in self.refs]


def _configuration(tmp_path, policy: str = "PAGE", extra: str = ""):
    xml = f"""<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>true</persistence-enabled><security-enabled>false</security-enabled>
      <journal-directory>{tmp_path}/journal</journal-directory><bindings-directory>{tmp_path}/bindings</bindings-directory>
      <paging-directory>{tmp_path}/paging</paging-directory>
      <large-messages-directory>{tmp_path}/large</large-messages-directory>
      <journal-file-size>1M</journal-file-size>
      <addresses><address name="{ADDRESS}"><anycast><queue name="{ADDRESS}"/></anycast></address></addresses>
      <address-settings><address-setting match="{ADDRESS}">
        <max-size-bytes>{LIMIT}</max-size-bytes><page-size-bytes>16K</page-size-bytes>
        <address-full-policy>{policy}</address-full-policy>{extra}
      </address-setting></address-settings></core></configuration>"""
    return parse_config(xml, file="tx-paging.xml", instance_dir=tmp_path)


async def _server(tmp_path, policy: str = "PAGE", extra: str = "") -> BrokerServer:
    configuration = _configuration(tmp_path, policy, extra)
    return await started(BrokerServer(configuration, storage=JournalStorageManager(configuration)))


def _session(server):
    return server.create_session(principal=Principal("u", frozenset()), protocol="test", connection_id="c")


def _message(number: int) -> Message:
    return Message(address=ADDRESS, body=b"%08d" % number + b"x" * (BODY - 8), durable=True)


async def _send(server, numbers) -> None:
    session = _session(server)
    for number in numbers:
        result = session.send(_message(number), RoutingType.ANYCAST)
        if result.durable is not None:
            await result.durable


def _transacted(session, numbers):
    """A new transaction of ``session`` holding a send of each number (not committed)."""
    tx = session.begin_transaction()
    for number in numbers:
        session.send_transacted(tx, _message(number))
    return tx


async def _commit_sends(server, numbers):
    session = _session(server)
    tx = _transacted(session, numbers)
    await session.commit(tx)
    return tx


async def _drain(server, count: int, timeout: float = 10.0) -> list[int]:
    """Consume (and acknowledge) ``count`` messages; their numbers in delivery order."""
    session = _session(server)
    collector = Collector()
    consumer = session.create_consumer(ADDRESS, collector)
    acked = 0

    def settle() -> bool:
        nonlocal acked
        while acked < len(collector.refs):
            consumer.acknowledge(collector.refs[acked])
            acked += 1
        return acked >= count

    await until(settle, timeout)
    session.close_consumer(consumer, failed=False)
    await server.storage.durable()
    return collector.numbers


def _paging(server):
    return server.paging.addresses[ADDRESS]


async def _nothing_more(server) -> None:
    """No message is left: a consumer gets nothing within a short while."""
    session = _session(server)
    collector = Collector()
    consumer = session.create_consumer(ADDRESS, collector)
    await asyncio.sleep(0.3)
    assert collector.numbers == []
    session.close_consumer(consumer, failed=False)


async def test_a_transaction_that_fills_the_address_pages_the_rest_and_keeps_order(tmp_path):
    server = await _server(tmp_path)
    tx = await _commit_sends(server, range(60))
    usage = server.post_office.limits.usage(ADDRESS)
    assert server.paging.is_paging(ADDRESS)
    assert usage.bytes <= LIMIT + 2 * BODY  # memory is bounded: the rest went to pages
    paging = _paging(server)
    assert tx.tx_id in paging.committed and not paging.holds
    assert paging.store is not None and paging.store.record_count >= 50
    queue = server.post_office.queues[ADDRESS]
    assert queue.message_count == 60
    assert await _drain(server, 60) == list(range(60))
    await server.stop()


async def test_paged_sends_stay_invisible_until_the_commit_is_durable(tmp_path):
    server = await _server(tmp_path)
    await _send(server, range(10))  # the address pages from here on
    assert server.paging.is_paging(ADDRESS)
    storage = server.storage
    real_commit = storage.commit_tx
    gate = asyncio.get_running_loop().create_future()

    def slow_commit(tx_id: int):
        written = real_commit(tx_id)

        async def both() -> None:
            await written
            await gate

        return asyncio.ensure_future(both())

    storage.commit_tx = slow_commit
    session = _session(server)
    collector = Collector()
    consumer = session.create_consumer(ADDRESS, collector)
    tx = _transacted(session, range(10, 30))
    commit = asyncio.ensure_future(session.commit(tx))
    paging = _paging(server)
    await until(lambda: tx.tx_id in paging.holds)
    # a plain send after the transaction's records: it waits behind them (order)
    await _send(server, [30])
    await until(lambda: len(collector.refs) >= 10)
    cursor = paging.cursors[server.post_office.queues[ADDRESS].queue_id]
    await until(lambda: cursor.blocked_tx == tx.tx_id)  # it reached the records and stopped
    assert collector.numbers == list(range(10))  # nothing of the transaction, nothing after it
    for ref in list(collector.refs):
        consumer.acknowledge(ref)
    assert not commit.done()
    gate.set_result(None)
    await commit
    assert tx.state is TransactionState.COMMITTED
    await until(lambda: len(collector.refs) >= 31)
    assert collector.numbers == list(range(31))
    await server.stop()


async def test_a_commit_that_never_reaches_the_journal_leaves_no_paged_message_behind(tmp_path):
    """The COMMIT is lost (as in a crash after the page writes): its paged records are skipped,
    in this run and after a restart; what came after them is delivered."""
    server = await _server(tmp_path)
    await _send(server, range(10))
    storage = server.storage

    def failing_commit(tx_id: int):
        raise StorageError("simulated crash before the COMMIT record")

    real_commit = storage.commit_tx
    storage.commit_tx = failing_commit
    paged_before = _paging(server).store.record_count
    session = _session(server)
    tx = _transacted(session, range(100, 120))
    with pytest.raises(StorageError):
        await session.commit(tx)
    assert tx.state is TransactionState.FAILED
    storage.commit_tx = real_commit
    paging = _paging(server)
    assert not paging.holds and tx.tx_id not in paging.committed
    assert paging.store.record_count == paged_before + 20  # the records are in the pages ...
    await _send(server, [10, 11])
    await server.stop()

    server = await _server(tmp_path)
    assert server.post_office.queues[ADDRESS].message_count == 12  # ... not counted ...
    assert await _drain(server, 12) == list(range(12))  # ... and never delivered
    await _nothing_more(server)
    await server.stop()


async def test_committed_paged_sends_survive_a_restart_exactly_once(tmp_path):
    server = await _server(tmp_path)
    await _send(server, range(5))
    await _commit_sends(server, range(5, 45))
    await _commit_sends(server, range(45, 50))
    await server.stop()

    server = await _server(tmp_path)
    paging = _paging(server)
    assert len(paging.committed) == 2  # from the PAGE_TRANSACTION records
    assert server.post_office.queues[ADDRESS].message_count == 50
    assert await _drain(server, 50) == list(range(50))
    await _nothing_more(server)
    await server.stop()

    server = await _server(tmp_path)
    await _nothing_more(server)
    assert server.post_office.queues[ADDRESS].message_count == 0
    await server.stop()


async def test_page_transaction_records_go_with_their_pages(tmp_path):
    server = await _server(tmp_path)
    for start in range(0, 200, 20):
        await _commit_sends(server, range(start, start + 20))
    paging = _paging(server)
    assert len(paging.tx_records) >= 9 and len(paging.store.pages) > 3
    assert await _drain(server, 200) == list(range(200))
    await until(lambda: len(paging.tx_records) <= 1)  # only the current page can keep one
    await server.stop()

    server = await _server(tmp_path)
    assert len(_paging(server).tx_records) <= 1
    await server.stop()


async def test_acks_of_depaged_messages_count_only_when_committed(tmp_path):
    server = await _server(tmp_path)
    await _send(server, range(40))
    session = _session(server)
    collector = Collector(credit=25)
    consumer = session.create_consumer(ADDRESS, collector)
    await until(lambda: len(collector.refs) == 25)
    refs = collector.refs
    assert all(ref.page is not None for ref in refs[10:25])  # read back from pages
    committed = session.begin_transaction()
    for ref in refs[:20]:
        committed.acknowledge(consumer, ref)
    await session.commit(committed)
    rolled_back = session.begin_transaction()
    for ref in refs[20:25]:
        rolled_back.acknowledge(consumer, ref)
    session.rollback(rolled_back)
    await storage_durable(server)
    await server.stop()

    server = await _server(tmp_path)
    assert server.post_office.queues[ADDRESS].message_count == 20
    assert await _drain(server, 20) == list(range(20, 40))
    await _nothing_more(server)
    await server.stop()


async def storage_durable(server) -> None:
    durable = server.storage.durable()
    if durable is not None:
        await durable


async def test_a_failed_ack_commit_keeps_the_pages_and_the_messages_come_back(tmp_path):
    server = await _server(tmp_path)
    await _send(server, range(24))
    session = _session(server)
    collector = Collector()
    consumer = session.create_consumer(ADDRESS, collector)
    await until(lambda: len(collector.refs) == 24)
    pages_before = set(_paging(server).store.pages)
    assert len(pages_before) >= 2  # a full page, and the current one
    storage = server.storage

    def failing_commit(tx_id: int):
        raise StorageError("simulated crash before the COMMIT record")

    storage.commit_tx = failing_commit
    tx = session.begin_transaction()
    for ref in collector.refs:
        tx.acknowledge(consumer, ref)
    with pytest.raises(StorageError):
        await session.commit(tx)
    await until(lambda: not server.paging._tasks)  # any page deletion it let through has run
    assert pages_before <= set(_paging(server).store.pages)
    del storage.commit_tx
    await server.stop()

    server = await _server(tmp_path)
    numbers = await _drain(server, 24)
    assert numbers == list(range(24))
    await server.stop()


@pytest.mark.parametrize("policy", ["FAIL", "DROP"])
async def test_a_transaction_to_a_full_address_follows_its_policy(tmp_path, policy):
    server = await _server(tmp_path, policy)
    await _send(server, range(4))  # full from here on (1200 B each in memory)
    session = _session(server)
    tx = _transacted(session, range(5, 10))
    if policy == "FAIL":
        with pytest.raises(AddressFullError):
            await session.commit(tx)
        assert tx.state is TransactionState.FAILED
    else:
        await session.commit(tx)
        assert server.post_office.limits.dropped >= 5
    assert server.post_office.queues[ADDRESS].message_count == 4
    # nothing of the transaction counts in the address's memory
    assert server.post_office.limits.usage(ADDRESS).messages == 4
    await server.stop()


async def test_a_page_limit_fails_the_commit_and_leaves_nothing_visible(tmp_path):
    extra = "<page-limit-messages>10</page-limit-messages><page-full-policy>FAIL</page-full-policy>"
    server = await _server(tmp_path, extra=extra)
    await _send(server, range(5))
    assert server.paging.is_paging(ADDRESS)
    session = _session(server)
    tx = _transacted(session, range(100, 130))
    with pytest.raises(AddressFullError):
        await session.commit(tx)
    paging = _paging(server)
    assert not paging.holds and tx.tx_id not in paging.committed
    assert await _drain(server, 5) == list(range(5))
    await _nothing_more(server)
    await server.stop()
