"""Persistent MQTT sessions: reconnects, expiry, and broker restarts.

Restarts use a recording StorageManager whose "disk" (plain dicts) outlives the BrokerServer, so
what the handler stores (durable subscription queues, their messages, retained messages, session
records) is exactly what the next server recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from test_handler import Client, eventually, queue_named, running_server

from pybroker.broker.server import BrokerServer
from pybroker.protocol.mqtt.codec import (
    ConnAck,
    Connect,
    Disconnect,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscription,
)
from pybroker.protocol.mqtt.properties import Properties
from pybroker.protocol.mqtt.session import (
    SESSION_NAMESPACE,
    SessionRegistry,
    SessionState,
    SubscriptionOptions,
)
from pybroker.storage.manager import AddressRecord, QueueRecord, RecoveredMessage, RecoveredState


class Disk:
    """What a persistent storage manager would have on disk."""

    def __init__(self) -> None:
        self.next_id = 1
        self.queues: dict[int, QueueRecord] = {}
        self.addresses: dict[int, AddressRecord] = {}
        self.messages: dict[int, bytes] = {}
        self.refs: dict[int, dict[int, int]] = {}
        self.key_values: dict[tuple[str, str], tuple[int, bytes]] = {}


class RecordingStorage:
    """A StorageManager keeping its records in a :class:`Disk`; durable() resolves next turn."""

    persistent = True

    def __init__(self, disk: Disk) -> None:
        self.disk = disk

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def load(self) -> RecoveredState:
        disk = self.disk
        return RecoveredState(
            queues=list(disk.queues.values()),
            addresses=list(disk.addresses.values()),
            messages=[RecoveredMessage(message_id, data, list(disk.refs.get(message_id, {}).items()))
                      for message_id, data in disk.messages.items()],
            key_values=dict(disk.key_values),
            max_id=disk.next_id,
        )

    def next_id(self) -> int:
        self.disk.next_id += 1
        return self.disk.next_id

    def store_message(self, message_id: int, data: bytes, queue_ids=()) -> None:
        self.disk.messages[message_id] = data
        for queue_id in queue_ids:
            self.store_ref(message_id, queue_id)

    def store_ref(self, message_id: int, queue_id: int) -> None:
        self.disk.refs.setdefault(message_id, {})[queue_id] = 0

    def store_ack(self, message_id: int, queue_id: int, *, sync: bool = False) -> None:
        self.disk.refs.get(message_id, {}).pop(queue_id, None)

    def delete_message(self, message_id: int) -> None:
        self.disk.messages.pop(message_id, None)
        self.disk.refs.pop(message_id, None)

    def update_delivery_count(self, message_id: int, queue_id: int, count: int) -> None:
        refs = self.disk.refs.get(message_id)
        if refs is not None and queue_id in refs:
            refs[queue_id] = count

    def store_queue(self, record: QueueRecord) -> None:
        self.disk.queues[record.queue_id] = record

    def delete_queue(self, queue_id: int) -> None:
        self.disk.queues.pop(queue_id, None)

    def store_address(self, record: AddressRecord) -> None:
        self.disk.addresses[record.binding_id] = record

    def delete_address(self, binding_id: int) -> None:
        self.disk.addresses.pop(binding_id, None)

    def store_duplicate_id(self, address: str, duplicate_id: bytes) -> int:
        return self.next_id()

    def delete_duplicate_id(self, record_id: int) -> None:
        return None

    def store_key_value(self, namespace: str, key: str, value: bytes) -> None:
        self.disk.key_values[(namespace, key)] = (self.next_id(), value)

    def delete_key_value(self, namespace: str, key: str) -> None:
        self.disk.key_values.pop((namespace, key), None)

    def durable(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        loop.call_soon(future.set_result, None)
        return future


@contextlib.asynccontextmanager
async def broker_on(disk: Disk) -> AsyncIterator[BrokerServer]:
    async with running_server(storage=RecordingStorage(disk)) as server:
        yield server


def stop_connections(*clients: Client) -> None:
    """What the broker does to its connections when it stops."""
    for client in clients:
        client.handler.force_close()


async def test_session_survives_a_reconnect_and_redelivers_with_dup() -> None:
    async with broker_on(Disk()) as server:
        subscriber = Client(server)
        await subscriber.connect("keep", version=4, clean=False)
        await subscriber.subscribe("p/#", qos=1)
        queue = queue_named(server, "keep.p.#")
        assert queue.durable and not queue.temporary
        subscriber.close()
        publisher = Client(server)
        await publisher.connect("pub", version=4)
        for index in range(3):
            await publisher.publish("p/x", b"%d" % index, qos=1)
        assert queue.message_count == 3
        back = Client(server)
        assert (await back.connect("keep", version=4, clean=False)).session_present
        messages = [await back.message() for _ in range(3)]
        assert [(m.payload, m.dup) for m in messages] == [(b"0", False), (b"1", False), (b"2", False)]
        back.send(PubAck(messages[0].packet_id))
        back.close()  # two left unacknowledged
        again = Client(server)
        await again.connect("keep", version=4, clean=False)
        redelivered = [await again.message() for _ in range(2)]
        assert [(m.payload, m.dup) for m in redelivered] == [(b"1", True), (b"2", True)]
        # a clean session discards it all
        clean = Client(server)
        assert not (await clean.connect("keep", version=4, clean=True)).session_present
        assert queue_named(server, "keep.p.#") is None
        assert "keep" in SessionRegistry.for_server(server).sessions  # the new, transient one


async def test_v5_session_expiry_deletes_the_session() -> None:
    disk = Disk()
    async with broker_on(disk) as server:
        client = Client(server)
        await client.connect("brief", version=5, clean=False,
                             properties=Properties(session_expiry_interval=1))
        await client.subscribe("e", qos=1)
        client.close()
        registry = SessionRegistry.for_server(server)
        assert registry.sessions["brief"].disconnected_at is not None
        assert (SESSION_NAMESPACE, "brief") in disk.key_values
        assert queue_named(server, "brief.e") is not None
        await eventually(lambda: "brief" not in registry.sessions, timeout=4)
        assert queue_named(server, "brief.e") is None
        assert (SESSION_NAMESPACE, "brief") not in disk.key_values
        back = Client(server)
        assert not (await back.connect("brief", version=5, clean=False,
                                       properties=Properties(session_expiry_interval=1))).session_present


async def test_disconnect_can_shorten_the_session_expiry() -> None:
    async with broker_on(Disk()) as server:
        client = Client(server)
        await client.connect("d", version=5, clean=False,
                             properties=Properties(session_expiry_interval=300))
        await client.subscribe("d", qos=1)
        client.send(Disconnect(properties=Properties(session_expiry_interval=0)))
        assert "d" not in SessionRegistry.for_server(server).sessions
        assert queue_named(server, "d.d") is None


async def test_qos2_pubrel_is_resent_after_a_reconnect() -> None:
    async with broker_on(Disk()) as server:
        subscriber = Client(server)
        await subscriber.connect("q2", version=5, clean=False,
                                 properties=Properties(session_expiry_interval=60))
        await subscriber.subscribe("q2", qos=2)
        publisher = Client(server)
        await publisher.connect("pub", version=5)
        await publisher.publish("q2", b"once", qos=2)
        message = await subscriber.message()
        subscriber.send(PubRec(message.packet_id))
        await subscriber.expect(PubRel)
        subscriber.close()  # before PUBCOMP
        back = Client(server)
        await back.connect("q2", version=5, clean=False, properties=Properties(session_expiry_interval=60))
        pubrel = await back.expect(PubRel)
        assert pubrel.packet_id == message.packet_id
        assert not [p for p in await back.nothing_more() if isinstance(p, Publish)]  # not again
        back.send(PubComp(pubrel.packet_id))
        await eventually(lambda: not SessionRegistry.for_server(server).sessions["q2"].releasing)


async def test_everything_survives_a_restart() -> None:
    disk = Disk()
    async with broker_on(disk) as server:
        subscriber = Client(server)
        await subscriber.connect("durable", version=5, clean=False,
                                 properties=Properties(session_expiry_interval=3600))
        await subscriber.subscribe(Subscription("news/#", 1, retain_as_published=True),
                                   properties=Properties(subscription_identifiers=(42,)))
        subscriber.close()
        publisher = Client(server)
        await publisher.connect("pub", version=5, clean=False,
                                properties=Properties(session_expiry_interval=3600))
        await publisher.publish("news/today", b"queued", qos=1,
                                properties=Properties(user_properties=(("k", "v"),)))
        await publisher.publish("news/weather", b"sunny", qos=1, retain=True)
        publisher.send(Publish("news/today", b"exactly-once", 2, packet_id=500))
        await publisher.expect(PubRec)  # PUBREL not sent before the "crash"
        await eventually(lambda: queue_named(server, "durable.news.#").message_count == 3)
        stop_connections(publisher)
    async with broker_on(disk) as server:
        back = Client(server)
        connack = await back.connect("durable", version=5, clean=False,
                                     properties=Properties(session_expiry_interval=3600))
        assert connack.session_present
        messages = [await back.message() for _ in range(3)]
        by_payload = {m.payload: m for m in messages}
        assert set(by_payload) == {b"queued", b"sunny", b"exactly-once"}
        assert by_payload[b"queued"].properties.user_properties == (("k", "v"),)
        assert by_payload[b"queued"].properties.subscription_identifiers == (42,)
        assert by_payload[b"sunny"].retain is True  # retain as published
        for message in messages:
            back.send(PubAck(message.packet_id))
        # the publisher's QoS 2 identifier is still in flight: a re-send is not routed again
        publisher = Client(server)
        assert (await publisher.connect("pub", version=5, clean=False,
                                        properties=Properties(session_expiry_interval=3600))).session_present
        publisher.send(Publish("news/today", b"exactly-once", 2, dup=True, packet_id=500))
        await publisher.expect(PubRec)
        publisher.send(PubRel(500))
        assert (await publisher.expect(PubComp)).reason_code == 0
        assert not [p for p in await back.nothing_more() if isinstance(p, Publish)]
        # the retained message is still there for a new subscription
        late = Client(server)
        await late.connect("late", version=4)
        await late.subscribe("news/+", qos=0)
        retained = await late.message()
        assert (retained.topic, retained.payload, retained.retain) == ("news/weather", b"sunny", True)


async def test_a_session_that_expired_while_the_broker_was_down() -> None:
    disk = Disk()
    async with broker_on(disk) as server:
        client = Client(server)
        await client.connect("old", version=5, clean=False, properties=Properties(session_expiry_interval=5))
        await client.subscribe("o", qos=1)
        client.close()
    record_id, data = disk.key_values[(SESSION_NAMESPACE, "old")]
    state = SessionState.decode("old", data)
    state.disconnected_at = time.time() - 10  # left ten seconds ago: past its five
    disk.key_values[(SESSION_NAMESPACE, "old")] = (record_id, state.encode())
    async with broker_on(disk) as server:
        assert queue_named(server, "old.o") is not None
        # the registry starts with the first MQTT connection (see the report: the broker could
        # start it at activation)
        other = Client(server)
        await other.connect("other", version=5)
        registry = SessionRegistry.for_server(server)
        await eventually(lambda: "old" not in registry.sessions)
        assert queue_named(server, "old.o") is None


async def test_session_record_round_trip() -> None:
    state = SessionState("c")
    state.subscriptions["a/#"] = SubscriptionOptions("a/#", 2, True, True, 1, 9)
    state.inbound_event(3, "PUBLISH(QoS 2)")
    state.releasing.add(7)
    state.expiry_interval = None
    state.persistent = True
    decoded = SessionState.decode("c", state.encode())
    assert decoded.subscriptions == state.subscriptions
    assert decoded.inbound == state.inbound
    assert decoded.releasing == {7}
    assert decoded.expiry_interval is None


async def test_connack_waits_for_the_session_record() -> None:
    from test_handler import ControlledStorage

    storage = ControlledStorage()
    async with running_server(storage=storage) as server:
        client = Client(server)
        client.send(Connect("slow", 4, False))
        assert not [p for p in await client.nothing_more() if isinstance(p, ConnAck)]
        storage.resolve_all()
        assert (await client.expect(ConnAck)).reason_code == 0
