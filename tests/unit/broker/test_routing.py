"""The broker core without sockets: routing, queues, consumers, redelivery, DLA, expiry."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from pybroker.broker.message import Message
from pybroker.broker.postoffice import AddressNotFoundError
from pybroker.broker.queue import QueueError
from pybroker.broker.server import BrokerServer, IllegalStateError, NotActiveError
from pybroker.config.model import ADDRESS_SETTING_DEFAULTS, RoutingType
from pybroker.config.parse import default_config, parse_config


class Collector:
    """A deliverer with a credit window."""

    def __init__(self, credit: int = 1000) -> None:
        self.credit = credit
        self.refs = []

    def deliver(self, ref) -> bool:
        if self.credit <= 0:
            return False
        self.credit -= 1
        self.refs.append(ref)
        return True

    @property
    def bodies(self):
        return [ref.message.body for ref in self.refs]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _server(tmp_path, xml_settings: str = "", clock=None) -> BrokerServer:
    xml = f"""<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>false</persistence-enabled><security-enabled>false</security-enabled>
      {xml_settings}</core></configuration>"""
    configuration = parse_config(xml, file="t.xml", instance_dir=tmp_path)
    try:
        from pybroker.broker.filter import make_filter
    except ImportError:  # pragma: no cover
        make_filter = None
    server = BrokerServer(configuration, clock=clock or FakeClock(), filter_factory=make_filter)
    await server.open_storage()
    await server.load_state()
    await server.activate()
    return server


def _message(address: str, body: bytes = b"x", **kwargs) -> Message:
    return Message(address=address, body=body, **kwargs)


def _session(server):
    from pybroker.broker.security import Principal

    return server.create_session(principal=Principal("u", frozenset()), protocol="test", connection_id="c1")


async def test_anycast_send_auto_creates_a_queue_named_like_the_address(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    result = session.send(_message("orders"), RoutingType.ANYCAST)
    assert result.queues == 1
    queue = server.post_office.queues["orders"]
    assert queue.routing_type is RoutingType.ANYCAST and queue.auto_created
    assert queue.message_count == 1
    await server.stop()


async def test_multicast_send_without_subscribers_is_dropped(tmp_path):
    server = await _server(tmp_path)
    result = _session(server).send(_message("news"), None)
    assert result.queues == 0
    assert server.post_office.addresses["news"].routing_types == {RoutingType.MULTICAST}
    assert "news" not in server.post_office.queues
    await server.stop()


async def test_anycast_round_robins_between_queues_and_multicast_copies(tmp_path):
    server = await _server(tmp_path)
    post_office = server.post_office
    post_office.create_queue("a1", "mixed", RoutingType.ANYCAST)
    post_office.create_queue("a2", "mixed", RoutingType.ANYCAST)
    post_office.create_queue("m1", "mixed", RoutingType.MULTICAST)
    post_office.create_queue("m2", "mixed", RoutingType.MULTICAST)
    session = _session(server)
    for _ in range(4):
        session.send(_message("mixed"), RoutingType.ANYCAST)
    assert [post_office.queues[n].message_count for n in ("a1", "a2", "m1", "m2")] == [2, 2, 0, 0]
    session.send(_message("mixed"), RoutingType.MULTICAST)
    assert [post_office.queues[n].message_count for n in ("a1", "a2", "m1", "m2")] == [2, 2, 1, 1]
    # no routing type: one anycast queue and every multicast queue
    session.send(_message("mixed"), None)
    assert sum(post_office.queues[n].message_count for n in ("a1", "a2")) == 5
    assert [post_office.queues[n].message_count for n in ("m1", "m2")] == [2, 2]
    await server.stop()


async def test_fqqn_send_reaches_only_that_queue(tmp_path):
    server = await _server(tmp_path)
    post_office = server.post_office
    post_office.create_queue("q1", "addr", RoutingType.MULTICAST)
    post_office.create_queue("q2", "addr", RoutingType.MULTICAST)
    _session(server).send(_message("addr::q2"), None)
    assert post_office.queues["q1"].message_count == 0
    assert post_office.queues["q2"].message_count == 1
    with pytest.raises(AddressNotFoundError):
        _session(server).send(_message("addr::nope"), None)
    await server.stop()


async def test_auto_create_disabled_refuses_unknown_addresses(tmp_path):
    server = await _server(
        tmp_path,
        """<address-settings><address-setting match="#"><auto-create-addresses>false</auto-create-addresses>
        <auto-create-queues>false</auto-create-queues></address-setting></address-settings>""",
    )
    with pytest.raises(AddressNotFoundError):
        _session(server).send(_message("ghost"), RoutingType.ANYCAST)
    await server.stop()


async def test_configured_addresses_and_queues_are_deployed(tmp_path):
    server = await _server(
        tmp_path,
        """<addresses><address name="orders"><anycast><queue name="orders"><durable>true</durable></queue></anycast></address>
        <address name="events"><multicast><queue name="audit"><filter string="kind = 'x'"/></queue></multicast></address></addresses>""",
    )
    post_office = server.post_office
    assert post_office.queues["orders"].configuration_managed
    assert post_office.queues["audit"].routing_type is RoutingType.MULTICAST
    assert post_office.addresses["events"].routing_types == {RoutingType.MULTICAST}
    await server.stop()


async def test_duplicate_ids_are_dropped(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    session.send(_message("dup", properties={"_AMQ_DUPL_ID": "abc"}), RoutingType.ANYCAST)
    result = session.send(_message("dup", properties={"_AMQ_DUPL_ID": "abc"}), RoutingType.ANYCAST)
    assert result.duplicate
    session.send(_message("dup", properties={"_AMQ_DUPL_ID": "def"}), RoutingType.ANYCAST)
    assert server.post_office.queues["dup"].message_count == 2
    await server.stop()


async def test_round_robin_consumers_and_credit(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    server.post_office.create_queue("rr", "rr", RoutingType.ANYCAST)
    first, second = Collector(credit=2), Collector(credit=10)
    session.create_consumer("rr", first)
    session.create_consumer("rr", second)
    for i in range(6):
        session.send(_message("rr", str(i).encode()), RoutingType.ANYCAST)
    assert first.bodies == [b"0", b"2"]
    assert second.bodies == [b"1", b"3", b"4", b"5"]
    await server.stop()


async def test_priorities_then_fifo(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    server.post_office.create_queue("p", "p", RoutingType.ANYCAST)
    for body, priority in ((b"a", 4), (b"b", 9), (b"c", 4), (b"d", 0), (b"e", 9)):
        session.send(_message("p", body, priority=priority), RoutingType.ANYCAST)
    collector = Collector()
    session.create_consumer("p", collector)
    assert collector.bodies == [b"b", b"e", b"a", b"c", b"d"]
    await server.stop()


async def test_failed_deliveries_go_to_the_dead_letter_address_after_max_attempts(tmp_path):
    server = await _server(
        tmp_path,
        """<address-settings><address-setting match="#"><dead-letter-address>DLQ</dead-letter-address>
        <max-delivery-attempts>3</max-delivery-attempts></address-setting></address-settings>
        <addresses><address name="DLQ"><anycast><queue name="DLQ"/></anycast></address></addresses>""",
    )
    session = _session(server)
    server.post_office.create_queue("work", "work", RoutingType.ANYCAST)
    session.send(_message("work", b"poison"), RoutingType.ANYCAST)
    collector = Collector()
    consumer = session.create_consumer("work", collector)
    for expected in (0, 1, 2):
        ref = collector.refs[-1]
        assert ref.delivery_count == expected
        consumer.cancel(ref, failed=True)
    assert len(collector.refs) == 3
    assert server.post_office.queues["work"].message_count == 0
    dlq = server.post_office.queues["DLQ"]
    assert dlq.message_count == 1
    moved = next(dlq.iter_queued()).message
    assert moved.annotations["_AMQ_ORIG_ADDRESS"] == "work"
    await server.stop()


async def test_released_messages_keep_their_delivery_count_and_place(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    server.post_office.create_queue("r", "r", RoutingType.ANYCAST)
    for body in (b"1", b"2"):
        session.send(_message("r", body), RoutingType.ANYCAST)
    collector = Collector(credit=1)
    consumer = session.create_consumer("r", collector)
    consumer.cancel(collector.refs[0], failed=False)
    collector.credit = 5
    consumer.prompt_delivery()
    assert [(r.message.body, r.delivery_count) for r in collector.refs] == [(b"1", 0), (b"1", 0), (b"2", 0)]
    await server.stop()


async def test_redelivery_delay_holds_the_message(tmp_path):
    server = await _server(
        tmp_path,
        """<address-settings><address-setting match="#"><redelivery-delay>50</redelivery-delay>
        </address-setting></address-settings>""",
        clock=None,
    )
    session = _session(server)
    server.post_office.create_queue("slow", "slow", RoutingType.ANYCAST)
    session.send(_message("slow"), RoutingType.ANYCAST)
    collector = Collector()
    consumer = session.create_consumer("slow", collector)
    server.clock.now += 0  # the fake clock drives the due time; the timer drives the release
    consumer.cancel(collector.refs[0], failed=True)
    queue = server.post_office.queues["slow"]
    assert queue.message_count == 1 and queue.queued_count == 0
    await asyncio.sleep(0.2)
    assert len(collector.refs) == 2 and collector.refs[1].delivery_count == 1
    await server.stop()


async def test_expired_messages_move_to_the_expiry_address(tmp_path):
    clock = FakeClock()
    server = await _server(
        tmp_path,
        """<address-settings><address-setting match="#"><expiry-address>EXP</expiry-address>
        </address-setting></address-settings>
        <addresses><address name="EXP"><anycast><queue name="EXP"/></anycast></address></addresses>""",
        clock=clock,
    )
    session = _session(server)
    server.post_office.create_queue("t", "t", RoutingType.ANYCAST)
    session.send(_message("t", b"old", expiration=int(clock.now * 1000) + 10), RoutingType.ANYCAST)
    session.send(_message("t", b"fresh"), RoutingType.ANYCAST)
    clock.now += 1
    collector = Collector()
    session.create_consumer("t", collector)
    assert collector.bodies == [b"fresh"]
    expired = server.post_office.queues["EXP"]
    assert expired.message_count == 1
    assert next(expired.iter_queued()).message.annotations["_AMQ_ORIG_QUEUE"] == "t"
    await server.stop()


async def test_max_consumers_and_exclusive(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    server.post_office.create_queue("one", "one", RoutingType.ANYCAST, max_consumers=1)
    session.create_consumer("one", Collector())
    with pytest.raises(QueueError):
        session.create_consumer("one", Collector())
    server.post_office.create_queue("ex", "ex", RoutingType.ANYCAST, exclusive=True)
    first, second = Collector(), Collector()
    session.create_consumer("ex", first)
    session.create_consumer("ex", second)
    for _ in range(3):
        session.send(_message("ex"), RoutingType.ANYCAST)
    assert len(first.refs) == 3 and second.refs == []
    await server.stop()


async def test_closing_a_consumer_returns_unsettled_messages_in_order(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    server.post_office.create_queue("back", "back", RoutingType.ANYCAST)
    for body in (b"1", b"2", b"3"):
        session.send(_message("back", body), RoutingType.ANYCAST)
    collector = Collector(credit=2)
    consumer = session.create_consumer("back", collector)
    session.close_consumer(consumer)
    again = Collector()
    session.create_consumer("back", again)
    assert [(r.message.body, r.delivery_count) for r in again.refs] == [(b"1", 1), (b"2", 1), (b"3", 0)]
    await server.stop()


async def test_acknowledge_removes_for_good(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    server.post_office.create_queue("ack", "ack", RoutingType.ANYCAST)
    session.send(_message("ack"), RoutingType.ANYCAST)
    collector = Collector()
    consumer = session.create_consumer("ack", collector)
    consumer.acknowledge(collector.refs[0])
    consumer.acknowledge(collector.refs[0])  # duplicate ack is harmless
    queue = server.post_office.queues["ack"]
    assert queue.message_count == 0 and queue.messages_acknowledged == 1
    await server.stop()


async def test_auto_created_queue_is_deleted_when_unused_and_empty(tmp_path):
    server = await _server(
        tmp_path,
        """<address-settings><address-setting match="#"><auto-delete-queues>true</auto-delete-queues>
        <auto-delete-addresses>true</auto-delete-addresses></address-setting></address-settings>""",
    )
    session = _session(server)
    session.send(_message("temp.work"), RoutingType.ANYCAST)
    collector = Collector()
    consumer = session.create_consumer("temp.work", collector)
    consumer.acknowledge(collector.refs[0])
    session.close_consumer(consumer)
    assert "temp.work" not in server.post_office.queues
    assert "temp.work" not in server.post_office.addresses
    await server.stop()


async def test_purge_on_no_consumers(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    server.post_office.create_queue("purge", "purge", RoutingType.ANYCAST, purge_on_no_consumers=True)
    consumer = session.create_consumer("purge", Collector(credit=0))
    session.send(_message("purge"), RoutingType.ANYCAST)
    session.close_consumer(consumer)
    assert server.post_office.queues["purge"].message_count == 0
    await server.stop()


async def test_browse_only_consumer_does_not_take_messages(tmp_path):
    server = await _server(tmp_path)
    session = _session(server)
    server.post_office.create_queue("b", "b", RoutingType.ANYCAST)
    for body in (b"1", b"2"):
        session.send(_message("b", body), RoutingType.ANYCAST)
    browser = Collector()
    consumer = session.create_consumer("b", browser, browse_only=True)
    consumer.prompt_delivery()
    assert browser.bodies == [b"1", b"2"]
    assert server.post_office.queues["b"].message_count == 2
    await server.stop()


async def test_server_lifecycle_is_a_state_table(tmp_path):
    configuration = default_config(instance_dir=tmp_path, persistence_enabled=False)
    server = BrokerServer(configuration)
    with pytest.raises(IllegalStateError) as raised:
        await server.activate()
    assert "activate" in str(raised.value) and "created" in str(raised.value)
    await server.open_storage()
    await server.load_state()
    session = _session(server)
    with pytest.raises(NotActiveError):
        session.send(_message("early"), RoutingType.ANYCAST)
    await server.activate()
    await server.stop()
    await server.stop()  # idempotent


def test_address_setting_defaults_are_artemis_defaults():
    defaults = replace(ADDRESS_SETTING_DEFAULTS)
    assert defaults.max_delivery_attempts == 10
    assert defaults.auto_create_queues is True
    assert defaults.default_address_routing_type is RoutingType.MULTICAST
