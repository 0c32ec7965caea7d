"""Core transactions: all-or-nothing sends and acks, durable across restart."""

from __future__ import annotations

import pytest
from support import started

from pybroker.broker.message import Message
from pybroker.broker.security import Principal
from pybroker.broker.server import BrokerServer
from pybroker.broker.transaction import TransactionError
from pybroker.config.model import RoutingType
from pybroker.config.parse import parse_config
from pybroker.storage.journal_storage import JournalStorageManager

pytestmark = pytest.mark.asyncio


class Collector:
    def __init__(self) -> None:
        self.refs = []
        self.seen = []  # (body, delivery count) at each delivery

    def deliver(self, ref) -> bool:
        self.refs.append(ref)
        self.seen.append((ref.message.body, ref.delivery_count))
        return True


def _configuration(tmp_path, persistent: bool):
    xml = f"""<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>{str(persistent).lower()}</persistence-enabled><security-enabled>false</security-enabled>
      <journal-directory>{tmp_path}/journal</journal-directory><bindings-directory>{tmp_path}/bindings</bindings-directory>
      </core></configuration>"""
    return parse_config(xml, file="tx.xml", instance_dir=tmp_path)


async def _server(tmp_path, persistent: bool = False) -> BrokerServer:
    configuration = _configuration(tmp_path, persistent)
    storage = JournalStorageManager(configuration) if persistent else None
    return await started(BrokerServer(configuration, storage=storage))


def _session(server):
    return server.create_session(principal=Principal("u", frozenset()), protocol="test", connection_id="c")


def _message(body: bytes, durable: bool = False) -> Message:
    return Message(address="txq", body=body, durable=durable)


async def test_sends_become_visible_only_at_commit(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    server.post_office.create_queue("txq", "txq", RoutingType.ANYCAST)
    collector = Collector()
    session.create_consumer("txq", collector)
    tx = session.begin_transaction()
    session.send_transacted(tx, _message(b"1"))
    session.send_transacted(tx, _message(b"2"))
    assert collector.refs == []
    await session.commit(tx)
    assert [r.message.body for r in collector.refs] == [b"1", b"2"]
    with pytest.raises(TransactionError):
        await tx.commit()
    await server.stop()


async def test_rollback_drops_sends_and_redelivers_acked_messages(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    queue = server.post_office.create_queue("txq", "txq", RoutingType.ANYCAST)
    session.send(_message(b"a"), RoutingType.ANYCAST)
    collector = Collector()
    consumer = session.create_consumer("txq", collector)
    tx = session.begin_transaction()
    tx.acknowledge(consumer, collector.refs[0])
    session.send_transacted(tx, _message(b"never"))
    session.rollback(tx)
    # the acked message came back (a failed delivery), the send never happened
    assert collector.seen == [(b"a", 0), (b"a", 1)]
    assert queue.messages_added == 1
    await server.stop()


async def test_commit_acknowledges_and_a_closed_consumer_loses_nothing(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    queue = server.post_office.create_queue("txq", "txq", RoutingType.ANYCAST)
    for body in (b"x", b"y"):
        session.send(_message(body), RoutingType.ANYCAST)
    collector = Collector()
    consumer = session.create_consumer("txq", collector)
    tx = session.begin_transaction()
    tx.acknowledge(consumer, collector.refs[0])
    tx.acknowledge(consumer, collector.refs[1])
    await session.commit(tx)
    assert queue.message_count == 0 and queue.messages_acknowledged == 2

    session.send(_message(b"z"), RoutingType.ANYCAST)
    tx = session.begin_transaction()
    tx.acknowledge(consumer, collector.refs[-1])
    session.close_consumer(consumer)  # the reference goes back before the commit
    await session.commit(tx)
    assert queue.message_count == 1  # not acknowledged by the commit: it will be redelivered
    await server.stop()


async def test_committed_work_survives_a_restart_and_rolled_back_work_does_not(tmp_path):
    server = await _server(tmp_path, persistent=True)
    session = _session(server)
    server.post_office.create_queue("txq", "txq", RoutingType.ANYCAST)
    session.send(_message(b"old", durable=True), RoutingType.ANYCAST)
    collector = Collector()
    consumer = session.create_consumer("txq", collector)
    tx = session.begin_transaction()
    tx.acknowledge(consumer, collector.refs[0])
    session.send_transacted(tx, _message(b"new1", durable=True))
    session.send_transacted(tx, _message(b"new2", durable=True))
    await session.commit(tx)
    lost = session.begin_transaction()
    session.send_transacted(lost, _message(b"rolled back", durable=True))
    session.rollback(lost)
    await server.stop()

    server = await _server(tmp_path, persistent=True)
    queue = server.post_office.queues["txq"]
    assert [ref.message.body for ref in queue.iter_queued()] == [b"new1", b"new2"]
    await server.stop()


async def test_closing_the_session_rolls_back_open_transactions(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    queue = server.post_office.create_queue("txq", "txq", RoutingType.ANYCAST)
    session.send(_message(b"m"), RoutingType.ANYCAST)
    other = _session(server)
    collector = Collector()
    consumer = session.create_consumer("txq", collector)
    tx = session.begin_transaction()
    tx.acknowledge(consumer, collector.refs[0])
    session.send_transacted(tx, _message(b"pending"))
    session.close()
    assert queue.message_count == 1
    late = Collector()
    other.create_consumer("txq", late)
    assert late.seen == [(b"m", 1)]
    await server.stop()
