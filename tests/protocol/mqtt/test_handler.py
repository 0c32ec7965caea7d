"""The MQTT connection handler against a real BrokerServer, through a fake transport context.

A test client is the project's own codec in the client role: packets are encoded, fed to the
handler's ``data_received``, and what the handler writes is decoded again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pybroker.broker.security import SecurityStore
from pybroker.broker.server import BrokerServer
from pybroker.config.parse import default_config
from pybroker.errors import SecurityError
from pybroker.protocol.mqtt.codec import (
    NEED_DATA,
    ConnAck,
    Connect,
    Disconnect,
    MQTTCodec,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from pybroker.protocol.mqtt.handler import MQTTConnectionHandler
from pybroker.protocol.mqtt.properties import Properties
from pybroker.protocol.mqtt.session import SessionRegistry
from pybroker.storage.manager import MemoryStorageManager

TIMEOUT = 5.0


# --- test doubles -------------------------------------------------------------------------------


class FakeAcceptor:
    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = params or {}
        self.name = "test"


class FakeContext:
    """What a handler may do with its connection, recorded."""

    _ids = iter(range(1, 1_000_000))

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.acceptor = FakeAcceptor(params)
        self.loop = asyncio.get_running_loop()
        self.connection_id = f"test-{next(self._ids)}"
        self.remote_address = "127.0.0.1:40000"
        self.data = bytearray()
        self.wrote = asyncio.Event()
        self.closed = False
        self.closed_event = asyncio.Event()
        self.reading_paused = False
        self.writing_paused = False

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.data += data
            self.wrote.set()

    def close(self) -> None:
        self.closed = True
        self.closed_event.set()

    abort = close

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    @property
    def closing(self) -> bool:
        return self.closed


class ControlledStorage(MemoryStorageManager):
    """A "persistent" storage whose durable() futures the test resolves."""

    persistent = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[asyncio.Future[None]] = []
        self.key_values: dict[tuple[str, str], bytes] = {}
        self.auto_resolve = False

    def store_key_value(self, namespace: str, key: str, value: bytes) -> None:
        self.key_values[(namespace, key)] = value

    def delete_key_value(self, namespace: str, key: str) -> None:
        self.key_values.pop((namespace, key), None)

    def durable(self) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        if self.auto_resolve:
            future.set_result(None)
        else:
            self.pending.append(future)
        return future

    def resolve_all(self) -> None:
        pending, self.pending = self.pending, []
        for future in pending:
            if not future.done():
                future.set_result(None)


class Users:
    """An authenticator: user -> (password, roles)."""

    def __init__(self, users: dict[str, tuple[str, set[str]]], *, guest: bool = False) -> None:
        self.users = users
        self.guest = guest

    def authenticate(self, user: str | None, password: str | None) -> Any:
        if user is None and self.guest:
            return type("P", (), {"user": None, "roles": {"guest"}})()
        entry = self.users.get(user or "")
        if entry is None or entry[0] != password:
            raise SecurityError(f"AMQ229031: Unable to validate user {user}")
        return type("P", (), {"user": user, "roles": entry[1]})()

    def allows_anonymous(self) -> bool:
        return self.guest


class Permissions:
    """A security repository: the same permissions everywhere except addresses in ``denied``."""

    def __init__(self, roles: dict[str, set[str]], denied: dict[str, set[str]] | None = None) -> None:
        self.roles = roles
        self.denied = denied or {}

    def match(self, address: str) -> dict[str, set[str]]:
        for prefix, permissions in self.denied.items():
            if address.startswith(prefix):
                return {k: v for k, v in self.roles.items() if k not in permissions}
        return self.roles


ALL_PERMISSIONS = {
    name: {"admin"}
    for name in ("send", "consume", "browse", "createAddress", "deleteAddress", "createDurableQueue",
                 "deleteDurableQueue", "createNonDurableQueue", "deleteNonDurableQueue")
}


@contextlib.asynccontextmanager
async def running_server(
    *, storage: Any = None, security: SecurityStore | None = None
) -> AsyncIterator[BrokerServer]:
    server = BrokerServer(default_config(persistence_enabled=False), storage=storage,
                          security=security, codecs=_codecs())
    await server.open_storage()
    await server.load_state()
    await server.activate()
    try:
        yield server
    finally:
        if isinstance(storage, ControlledStorage):
            storage.auto_resolve = True
            storage.resolve_all()
        await server.stop()


def _codecs() -> dict[str, Any]:
    from pybroker.protocol.amqp.message import AMQP_CODEC
    from pybroker.protocol.mqtt.message import CODEC

    return {"amqp": AMQP_CODEC, "mqtt": CODEC}


@pytest.fixture
async def server() -> AsyncIterator[BrokerServer]:
    async with running_server() as running:
        yield running


class Client:
    """A test MQTT client: the client-role codec talking to a handler through a FakeContext."""

    def __init__(self, server: BrokerServer, params: dict[str, str] | None = None) -> None:
        self.context = FakeContext(params)
        self.handler = MQTTConnectionHandler(server, self.context)
        self.codec = MQTTCodec("client")
        self.received: list[Any] = []

    def send(self, packet: Any) -> None:
        self.handler.data_received(self.codec.send(packet))

    def send_raw(self, data: bytes) -> None:
        self.handler.data_received(data)

    def _drain(self) -> None:
        if self.context.data:
            data = bytes(self.context.data)
            self.context.data.clear()
            self.codec.receive_data(data)
            while (packet := self.codec.next_event()) is not NEED_DATA:
                self.received.append(packet)
        self.context.wrote.clear()

    async def expect(self, kind: type, predicate: Callable[[Any], bool] | None = None,
                     timeout: float = TIMEOUT) -> Any:
        """The first packet of ``kind`` received (and matching), waiting up to ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._drain()
            for index, packet in enumerate(self.received):
                if isinstance(packet, kind) and (predicate is None or predicate(packet)):
                    del self.received[index]
                    return packet
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {kind.__name__} within {timeout} s; got {self.received}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.context.wrote.wait(), left)

    async def nothing_more(self) -> list[Any]:
        """What arrived (and was not expected yet) once pending callbacks ran; consumed."""
        for _ in range(5):
            await asyncio.sleep(0)  # let call_soon flushes run; this is not a timed wait
        self._drain()
        received, self.received = self.received, []
        return received

    async def connect(self, client_id: str = "client", *, version: int = 4, clean: bool = True,
                      **fields: Any) -> ConnAck:
        self.send(Connect(client_id, version, clean, **fields))
        return await self.expect(ConnAck)

    async def subscribe(self, *filters: str | Subscription, packet_id: int = 1,
                        properties: Properties | None = None, qos: int = 1) -> SubAck:
        subscriptions = tuple(f if isinstance(f, Subscription) else Subscription(f, qos) for f in filters)
        if properties is None:
            self.send(Subscribe(packet_id, subscriptions))
        else:
            self.send(Subscribe(packet_id, subscriptions, properties))
        return await self.expect(SubAck, lambda p: p.packet_id == packet_id)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, packet_id: int | None = None,
                      **fields: Any) -> Any:
        if qos and packet_id is None:
            packet_id = next(_packet_ids)
        self.send(Publish(topic, payload, qos, packet_id=packet_id, **fields))
        if qos == 1:
            return await self.expect(PubAck, lambda p: p.packet_id == packet_id)
        if qos == 2:
            await self.expect(PubRec, lambda p: p.packet_id == packet_id)
            self.send(PubRel(packet_id))
            return await self.expect(PubComp, lambda p: p.packet_id == packet_id)
        return None

    async def message(self, timeout: float = TIMEOUT) -> Publish:
        return await self.expect(Publish, timeout=timeout)

    def close(self) -> None:
        """The socket closes without DISCONNECT."""
        self.handler.connection_lost(None)


_packet_ids = iter(range(1, 60_000))


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds (checked each loop turn), failing after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def queue_named(server: BrokerServer, name: str) -> Any:
    return server.post_office.find_queue(name)


# --- CONNECT ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
async def test_connect_accepts_each_version(server: BrokerServer, version: int) -> None:
    client = Client(server)
    connack = await client.connect("c1", version=version)
    assert connack.reason_code == 0
    assert not connack.session_present
    client.send(PingReq())
    await client.expect(PingResp)
    assert SessionRegistry.for_server(server).connected["c1"] is client.handler


async def test_v5_connack_announces_the_server_limits(server: BrokerServer) -> None:
    client = Client(server, {"maximumPacketSize": "65536", "topicAliasMaximum": "10",
                             "receiveMaximum": "100"})
    connack = await client.connect("", version=5)
    properties = connack.properties
    assert properties.assigned_client_identifier  # an empty id is generated under clean start
    assert properties.receive_maximum == 100
    assert properties.maximum_packet_size == 65536
    assert properties.topic_alias_maximum == 10
    assert properties.retain_available is True
    assert properties.wildcard_subscription_available is True
    assert properties.subscription_identifier_available is True
    assert properties.shared_subscription_available is True
    assert properties.maximum_qos is None  # QoS 2 is supported
    assert properties.server_keep_alive is None  # 60 s asked, within the server's 60


async def test_server_keep_alive_overrides_a_longer_client_value(server: BrokerServer) -> None:
    client = Client(server, {"serverKeepAlive": "20"})
    connack = await client.connect("c1", version=5, keep_alive=600)
    assert connack.properties.server_keep_alive == 20
    assert client.handler._keep_alive == 30.0  # 1.5 x


async def test_empty_client_id_without_clean_start_is_refused_in_v5(server: BrokerServer) -> None:
    client = Client(server)
    connack = await client.connect("", version=5, clean=False)
    assert connack.reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    assert client.context.closed


async def test_empty_client_id_without_clean_session_is_refused_in_v3(server: BrokerServer) -> None:
    client = Client(server)
    client.send_raw(bytes.fromhex("100c00044d5154540400003c0000"))  # 3.1.1, clean session 0, id ""
    assert bytes(client.context.data) == b"\x20\x02\x00\x02"  # CONNACK, identifier rejected
    assert client.context.closed


async def test_authentication_method_is_refused(server: BrokerServer) -> None:
    client = Client(server)
    connack = await client.connect("c1", version=5, properties=Properties(authentication_method="SCRAM"))
    assert connack.reason_code == ReasonCode.BAD_AUTHENTICATION_METHOD
    assert client.context.closed


@pytest.fixture
async def secure_server() -> AsyncIterator[BrokerServer]:
    security = SecurityStore(
        enabled=True,
        authenticator=Users({"admin": ("secret", {"admin"}), "reader": ("r", {"reader"})}),
        repository=Permissions(
            {**ALL_PERMISSIONS, "consume": {"admin", "reader"}, "createNonDurableQueue": {"admin", "reader"},
             "createAddress": {"admin", "reader"}, "createDurableQueue": {"admin", "reader"},
             "deleteNonDurableQueue": {"admin", "reader"}},
            denied={"secret": {"consume", "send"}},
        ),
    )
    async with running_server(security=security) as running:
        yield running


@pytest.mark.parametrize("version,code", [(4, 4), (5, ReasonCode.BAD_USER_NAME_OR_PASSWORD)])
async def test_bad_credentials_are_refused(secure_server: BrokerServer, version: int, code: int) -> None:
    client = Client(secure_server)
    connack = await client.connect("c1", version=version, username="admin", password=b"wrong")
    assert connack.reason_code == code
    assert not connack.session_present
    assert client.context.closed
    assert "c1" not in SessionRegistry.for_server(secure_server).connected
    good = Client(secure_server)
    assert (await good.connect("c1", version=version, username="admin", password=b"secret")).reason_code == 0


@pytest.mark.parametrize("version,code", [(4, 5), (5, ReasonCode.NOT_AUTHORIZED)])
async def test_anonymous_needs_a_guest_login(secure_server: BrokerServer, version: int, code: int) -> None:
    client = Client(secure_server)
    connack = await client.connect("c1", version=version)
    assert connack.reason_code == code
    assert client.context.closed


async def test_publish_not_authorized(secure_server: BrokerServer) -> None:
    v5 = Client(secure_server)
    await v5.connect("v5", version=5, username="reader", password=b"r")
    puback = await v5.publish("orders", b"x", qos=1)
    assert puback.reason_code == ReasonCode.NOT_AUTHORIZED
    v5.send(Publish("orders", b"x", 2, packet_id=77))
    pubrec = await v5.expect(PubRec)
    assert pubrec.reason_code == ReasonCode.NOT_AUTHORIZED
    assert 77 not in v5.handler.state.inbound  # the failed QoS 2 flow ended
    assert not v5.context.closed
    v3 = Client(secure_server)
    await v3.connect("v3", version=4, username="reader", password=b"r")
    v3.send(Publish("orders", b"x", 1, packet_id=1))
    await asyncio.wait_for(v3.context.closed_event.wait(), TIMEOUT)  # as Artemis: disconnect


async def test_subscribe_not_authorized(secure_server: BrokerServer) -> None:
    v5 = Client(secure_server)
    await v5.connect("v5", version=5, username="reader", password=b"r")
    suback = await v5.subscribe("secret/x", "public/x")
    assert suback.reason_codes == (ReasonCode.NOT_AUTHORIZED, 1)
    assert queue_named(secure_server, "v5.secret.x") is None  # nothing left behind
    v3 = Client(secure_server)
    await v3.connect("v3", version=4, username="reader", password=b"r")
    assert (await v3.subscribe("secret/x")).reason_codes == (0x80,)


# --- PUBLISH in ---------------------------------------------------------------------------------


async def test_puback_waits_until_durable_and_keeps_publish_order() -> None:
    storage = ControlledStorage()
    async with running_server(storage=storage) as server:
        subscriber = Client(server)
        subscriber.send(Connect("sub", 4, False))  # persistent: durable queue, stored state
        storage.resolve_all()
        await subscriber.expect(ConnAck)
        subscriber.send(Subscribe(1, (Subscription("t", 1),)))
        await asyncio.sleep(0)
        storage.resolve_all()
        await subscriber.expect(SubAck)
        assert storage.key_values[("mqtt-session", "sub")]
        publisher = Client(server)
        await publisher.connect("pub", version=4)
        for packet_id in (1, 2, 3):
            publisher.send(Publish("t", b"m%d" % packet_id, 1, packet_id=packet_id))
        assert not [p for p in await publisher.nothing_more() if isinstance(p, PubAck)]
        # resolve the durable futures out of order: the PUBACKs still go in publish order
        for future in reversed(storage.pending):
            future.set_result(None)
        acks = [await publisher.expect(PubAck) for _ in range(3)]
        assert [ack.packet_id for ack in acks] == [1, 2, 3]
        assert [(await subscriber.message()).payload for _ in range(3)] == [b"m1", b"m2", b"m3"]


async def test_pending_replies_stop_reading_until_durable() -> None:
    storage = ControlledStorage()
    async with running_server(storage=storage) as server:
        subscriber = Client(server)
        subscriber.send(Connect("sub", 4, False))  # persistent: messages to it are stored
        storage.resolve_all()
        await subscriber.expect(ConnAck)
        subscriber.send(Subscribe(1, (Subscription("t", 1),)))
        await asyncio.sleep(0)
        storage.resolve_all()
        await subscriber.expect(SubAck)
        publisher = Client(server)
        await publisher.connect("pub", version=4)
        publisher.handler.pending_replies_limit = 4
        for packet_id in range(1, 5):
            publisher.send(Publish("t", b"x", 1, packet_id=packet_id))
        assert publisher.context.reading_paused
        storage.resolve_all()
        for _ in range(4):
            await publisher.expect(PubAck)
        assert not publisher.context.reading_paused


async def test_qos2_inbound_is_routed_once(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=5)
    await subscriber.subscribe("exactly", qos=2)
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    publisher.send(Publish("exactly", b"once", 2, packet_id=9))
    await publisher.expect(PubRec, lambda p: p.packet_id == 9)
    publisher.send(Publish("exactly", b"once", 2, dup=True, packet_id=9))  # re-sent
    await publisher.expect(PubRec, lambda p: p.packet_id == 9)
    publisher.send(PubRel(9))
    assert (await publisher.expect(PubComp)).reason_code == 0
    publisher.send(PubRel(9))  # a stale PUBREL
    assert (await publisher.expect(PubComp)).reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
    message = await subscriber.message()
    assert message.payload == b"once" and message.qos == 2
    subscriber.send(PubRec(message.packet_id))
    await subscriber.expect(PubRel)
    subscriber.send(PubComp(message.packet_id))
    assert not [p for p in await subscriber.nothing_more() if isinstance(p, Publish)]
    assert server.post_office.addresses["exactly"] is not None


async def test_client_beyond_our_receive_maximum_is_disconnected(server: BrokerServer) -> None:
    client = Client(server, {"receiveMaximum": "2"})
    await client.connect("c", version=5)
    for packet_id in (1, 2, 3):
        client.send(Publish("t", b"x", 2, packet_id=packet_id))
    disconnect = await client.expect(Disconnect)
    assert disconnect.reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED
    assert client.context.closed


async def test_reserved_topics_are_refused(server: BrokerServer) -> None:
    client = Client(server)
    await client.connect("c", version=5)
    puback = await client.publish("$sys/mqtt/retain/x", b"x", qos=1)
    assert puback.reason_code == ReasonCode.TOPIC_NAME_INVALID
    suback = await client.subscribe("$sys/mqtt/#")
    assert suback.reason_codes == (ReasonCode.TOPIC_FILTER_INVALID,)


async def test_topic_alias_resolves_to_the_topic(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=5)
    await subscriber.subscribe("sensors/temperature", qos=0)
    publisher = Client(server)
    await publisher.connect("pub", version=5, properties=Properties(topic_alias_maximum=0))
    await publisher.publish("sensors/temperature", b"20", qos=1, properties=Properties(topic_alias=3))
    await publisher.publish("", b"21", qos=1, properties=Properties(topic_alias=3))
    first, second = await subscriber.message(), await subscriber.message()
    assert (first.topic, first.payload) == ("sensors/temperature", b"20")
    assert (second.topic, second.payload) == ("sensors/temperature", b"21")


async def test_v5_properties_pass_through(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=5)
    await subscriber.subscribe("rpc/request", qos=1, properties=Properties(subscription_identifiers=(7,)))
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    sent = Properties(
        payload_format_indicator=1, content_type="text/plain", response_topic="rpc/reply",
        correlation_data=b"\x01\x02", user_properties=(("b", "2"), ("a", "1"), ("b", "3")),
        message_expiry_interval=100,
    )
    await publisher.publish("rpc/request", "héllo".encode(), qos=1, properties=sent)
    message = await subscriber.message()
    received = message.properties
    assert received.payload_format_indicator == 1
    assert received.content_type == "text/plain"
    assert received.response_topic == "rpc/reply"
    assert received.correlation_data == b"\x01\x02"
    assert received.user_properties == (("b", "2"), ("a", "1"), ("b", "3"))  # order kept
    assert received.subscription_identifiers == (7,)
    assert 99 <= received.message_expiry_interval <= 100
    queue = queue_named(server, "sub.rpc.request")
    ref = next(iter(next(iter(queue.consumers)).in_flight.values()))
    assert ref.message.properties == {"b": "3", "a": "1"}  # the core's view


async def test_expired_messages_are_not_delivered(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=5, clean=False,
                             properties=Properties(session_expiry_interval=60))
    await subscriber.subscribe("t", qos=1)
    subscriber.close()
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    await publisher.publish("t", b"old", qos=1, properties=Properties(message_expiry_interval=1))
    await publisher.publish("t", b"fresh", qos=1)
    message = queue_named(server, "sub.t")
    first = next(message.iter_queued()).message
    first.expiration = 1  # long past
    again = Client(server)
    assert (await again.connect("sub", version=5, clean=False,
                                properties=Properties(session_expiry_interval=60))).session_present
    assert (await again.message()).payload == b"fresh"


# --- delivery -----------------------------------------------------------------------------------


async def test_qos_is_downgraded_to_the_subscription(server: BrokerServer) -> None:
    at_most_once = Client(server)
    await at_most_once.connect("q0", version=4)
    await at_most_once.subscribe("levels", qos=0)
    at_least_once = Client(server)
    await at_least_once.connect("q1", version=4)
    await at_least_once.subscribe("levels", qos=1)
    publisher = Client(server)
    await publisher.connect("pub", version=4)
    await publisher.publish("levels", b"two", qos=2)
    await publisher.publish("levels", b"zero", qos=0)
    zero = [await at_most_once.message(), await at_most_once.message()]
    assert [(m.qos, m.packet_id) for m in zero] == [(0, None), (0, None)]
    assert queue_named(server, "q0.levels").message_count == 0  # acknowledged once written
    one = [await at_least_once.message(), await at_least_once.message()]
    assert [m.qos for m in one] == [1, 0]
    assert queue_named(server, "q1.levels").message_count == 1  # waits for the PUBACK
    at_least_once.send(PubAck(one[0].packet_id))
    await eventually(lambda: queue_named(server, "q1.levels").message_count == 0)


async def test_receive_maximum_limits_the_in_flight_window(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=5, properties=Properties(receive_maximum=2))
    await subscriber.subscribe("w", qos=1)
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    for index in range(5):
        await publisher.publish("w", b"%d" % index, qos=1)
    first = [await subscriber.message(), await subscriber.message()]
    assert not [p for p in await subscriber.nothing_more() if isinstance(p, Publish)]
    assert len({m.packet_id for m in first}) == 2
    subscriber.send(PubAck(first[0].packet_id))
    third = await subscriber.message()
    assert third.payload == b"2"
    assert not [p for p in await subscriber.nothing_more() if isinstance(p, Publish)]
    for message in (first[1], third):
        subscriber.send(PubAck(message.packet_id))
    rest = [await subscriber.message(), await subscriber.message()]
    assert [m.payload for m in rest] == [b"3", b"4"]


async def test_paused_writes_hold_deliveries_back(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=4)
    await subscriber.subscribe("p", qos=0)
    subscriber.handler.pause_writing()
    assert subscriber.context.reading_paused
    publisher = Client(server)
    await publisher.connect("pub", version=4)
    await publisher.publish("p", b"held", qos=1)
    assert not [p for p in await subscriber.nothing_more() if isinstance(p, Publish)]
    assert queue_named(server, "sub.p").message_count == 1
    subscriber.handler.resume_writing()
    assert (await subscriber.message()).payload == b"held"
    assert not subscriber.context.reading_paused


async def test_messages_over_the_clients_maximum_packet_size_are_dropped(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=5, properties=Properties(maximum_packet_size=200))
    await subscriber.subscribe("big", qos=1)
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    await publisher.publish("big", b"x" * 500, qos=1)
    await publisher.publish("big", b"small", qos=1)
    message = await subscriber.message()
    assert message.payload == b"small"
    subscriber.send(PubAck(message.packet_id))
    await eventually(lambda: queue_named(server, "sub.big").message_count == 0)


async def test_qos2_outbound_flow_and_its_table(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=5)
    await subscriber.subscribe("q2", qos=2)
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    await publisher.publish("q2", b"a", qos=2)
    message = await subscriber.message()
    assert message.qos == 2
    queue = queue_named(server, "sub.q2")
    assert queue.message_count == 1
    subscriber.send(PubRec(message.packet_id))
    assert (await subscriber.expect(PubRel)).packet_id == message.packet_id
    assert queue.message_count == 0  # acknowledged at PUBREC: the client owns it now
    subscriber.send(PubRec(message.packet_id))  # a duplicate PUBREC: PUBREL again
    await subscriber.expect(PubRel)
    subscriber.send(PubComp(message.packet_id))
    await eventually(lambda: len(subscriber.handler.window) == 0)
    # a PUBACK for a QoS 2 delivery is not in the table: protocol error
    await publisher.publish("q2", b"b", qos=2)
    second = await subscriber.message()
    subscriber.send(PubAck(second.packet_id))
    disconnect = await subscriber.expect(Disconnect)
    assert disconnect.reason_code == ReasonCode.PROTOCOL_ERROR
    assert subscriber.context.closed


async def test_pubrec_for_an_unknown_identifier(server: BrokerServer) -> None:
    client = Client(server)
    await client.connect("c", version=5)
    client.send(PubRec(1234))
    pubrel = await client.expect(PubRel)
    assert pubrel.reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND


async def test_wildcards_and_the_dollar_rule(server: BrokerServer) -> None:
    everything = Client(server)
    await everything.connect("all", version=4)
    await everything.subscribe("#", qos=0)
    plus = Client(server)
    await plus.connect("plus", version=4)
    await plus.subscribe("a/+/c", qos=0)
    dollar = Client(server)
    await dollar.connect("dollar", version=4)
    await dollar.subscribe("$SYS/#", qos=0)
    publisher = Client(server)
    await publisher.connect("pub", version=4)
    for topic in ("a/b/c", "a/b/d", "$SYS/load"):
        await publisher.publish(topic, topic.encode(), qos=1)
    assert [(await everything.message()).topic for _ in range(2)] == ["a/b/c", "a/b/d"]
    assert not [p for p in await everything.nothing_more() if isinstance(p, Publish)]
    assert (await plus.message()).topic == "a/b/c"
    assert (await dollar.message()).topic == "$SYS/load"
    assert not [p for p in await plus.nothing_more() if isinstance(p, Publish)]


async def test_topic_with_dots_round_trips(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=4)
    await subscriber.subscribe("v1.0/+", qos=0)
    publisher = Client(server)
    await publisher.connect("pub", version=4)
    await publisher.publish("v1.0/device", b"x", qos=1)
    assert (await subscriber.message()).topic == "v1.0/device"


async def test_no_local(server: BrokerServer) -> None:
    client = Client(server)
    await client.connect("me", version=5)
    await client.subscribe(Subscription("chat", 1, no_local=True))
    other = Client(server)
    await other.connect("other", version=5)
    await client.publish("chat", b"mine", qos=1)
    await other.publish("chat", b"theirs", qos=1)
    message = await client.message()
    assert message.payload == b"theirs"
    assert not [p for p in await client.nothing_more() if isinstance(p, Publish)]


async def test_shared_subscription_spreads_messages(server: BrokerServer) -> None:
    members = [Client(server) for _ in range(2)]
    for index, member in enumerate(members):
        await member.connect(f"m{index}", version=5)
        assert (await member.subscribe("$share/workers/jobs", qos=0)).reason_codes == (0,)
    queue = queue_named(server, "workers.jobs")
    assert queue is not None and queue.consumer_count == 2
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    for index in range(4):
        await publisher.publish("jobs", b"%d" % index, qos=1)
    got = [[(await member.message()).payload for _ in range(2)] for member in members]
    assert sorted(got[0] + got[1]) == [b"0", b"1", b"2", b"3"]
    assert got[0] and got[1]
    members[0].send(Unsubscribe(5, ("$share/workers/jobs",)))
    await members[0].expect(UnsubAck)
    assert queue_named(server, "workers.jobs") is queue  # the other member still uses it
    members[1].close()
    assert queue_named(server, "workers.jobs") is None  # the last member gone


async def test_unsubscribe_codes_and_queue_deletion(server: BrokerServer) -> None:
    client = Client(server)
    await client.connect("c", version=5)
    await client.subscribe("u/1", "u/2")
    assert queue_named(server, "c.u.1") is not None
    client.send(Unsubscribe(3, ("u/1", "u/nothing")))
    unsuback = await client.expect(UnsubAck)
    assert unsuback.reason_codes == (ReasonCode.SUCCESS, ReasonCode.NO_SUBSCRIPTION_EXISTED)
    assert queue_named(server, "c.u.1") is None
    assert queue_named(server, "c.u.2") is not None
    client.close()
    assert queue_named(server, "c.u.2") is None  # a clean session's queues are temporary


async def test_resubscribe_updates_options_and_keeps_the_queue(server: BrokerServer) -> None:
    client = Client(server)
    await client.connect("c", version=5)
    await client.subscribe("r", qos=0)
    queue = queue_named(server, "c.r")
    assert (await client.subscribe("r", qos=2, packet_id=2)).reason_codes == (2,)
    assert queue_named(server, "c.r") is queue and queue.consumer_count == 1
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    await publisher.publish("r", b"x", qos=2)
    assert (await client.message()).qos == 2


# --- retained messages --------------------------------------------------------------------------


async def test_retained_set_clear_and_on_subscribe(server: BrokerServer) -> None:
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    await publisher.publish("home/temp", b"21", qos=1, retain=True)
    await publisher.publish("home/temp", b"22", qos=0, retain=True)  # replaces it
    await publisher.publish("home/light", b"on", qos=1, retain=True)
    await eventually(lambda: queue_named(server, "$sys.mqtt.retain.home.temp") is not None)
    assert queue_named(server, "$sys.mqtt.retain.home.temp").message_count == 1
    subscriber = Client(server)
    await subscriber.connect("sub", version=5)
    await subscriber.subscribe("home/+", qos=1)
    got = sorted([(m.topic, m.payload, m.retain) for m in [await subscriber.message(), await subscriber.message()]])
    assert got == [("home/light", b"on", True), ("home/temp", b"22", True)]
    # live messages to an established subscription go out with RETAIN 0
    await publisher.publish("home/temp", b"23", qos=1, retain=True)
    live = await subscriber.message()
    assert (live.payload, live.retain) == (b"23", False)
    # an empty payload clears it
    await publisher.publish("home/temp", b"", qos=1, retain=True)
    assert queue_named(server, "$sys.mqtt.retain.home.temp") is None
    cleared = await subscriber.message()  # the empty message itself is delivered
    assert cleared.payload == b""
    late = Client(server)
    await late.connect("late", version=4)
    await late.subscribe("home/#", qos=1)
    only = await late.message()
    assert (only.topic, only.payload, only.retain) == ("home/light", b"on", True)
    assert not [p for p in await late.nothing_more() if isinstance(p, Publish)]


@pytest.mark.parametrize("handling,first,again", [(0, 1, 1), (1, 1, 0), (2, 0, 0)])
async def test_retain_handling(server: BrokerServer, handling: int, first: int, again: int) -> None:
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    await publisher.publish("state", b"s", qos=1, retain=True)
    subscriber = Client(server)
    await subscriber.connect("sub", version=5)
    await subscriber.subscribe(Subscription("state", 1, retain_handling=handling))
    got = [p for p in await subscriber.nothing_more() if isinstance(p, Publish)]
    assert len(got) == first
    for message in got:
        subscriber.send(PubAck(message.packet_id))
    await subscriber.subscribe(Subscription("state", 1, retain_handling=handling), packet_id=2)
    got = [p for p in await subscriber.nothing_more() if isinstance(p, Publish)]
    assert len(got) == again


async def test_retain_as_published(server: BrokerServer) -> None:
    keeps = Client(server)
    await keeps.connect("keeps", version=5)
    await keeps.subscribe(Subscription("rap", 0, retain_as_published=True))
    plain = Client(server)
    await plain.connect("plain", version=5)
    await plain.subscribe(Subscription("rap", 0))
    publisher = Client(server)
    await publisher.connect("pub", version=5)
    await publisher.publish("rap", b"x", qos=1, retain=True)
    assert (await keeps.message()).retain is True
    assert (await plain.message()).retain is False


# --- will messages ------------------------------------------------------------------------------


async def _will_watcher(server: BrokerServer, topic: str = "wills") -> Client:
    watcher = Client(server)
    await watcher.connect(f"watcher-{topic}", version=5)
    await watcher.subscribe(topic, qos=1)
    return watcher


def _will(payload: bytes = b"gone", delay: int | None = None, retain: bool = False) -> Will:
    properties = Properties(will_delay_interval=delay) if delay is not None else Properties()
    return Will("wills", payload, 1, retain, properties)


@pytest.mark.parametrize("version", [4, 5])
async def test_will_on_abnormal_close(server: BrokerServer, version: int) -> None:
    watcher = await _will_watcher(server)
    client = Client(server)
    await client.connect("dying", version=version, will=_will())
    client.close()
    assert (await watcher.message()).payload == b"gone"


async def test_will_on_protocol_error(server: BrokerServer) -> None:
    watcher = await _will_watcher(server)
    client = Client(server)
    await client.connect("broken", version=4, will=_will(b"broken"))
    client.send_raw(b"\x00\x00")  # reserved packet type
    assert client.context.closed
    assert (await watcher.message()).payload == b"broken"


async def test_normal_disconnect_discards_the_will(server: BrokerServer) -> None:
    watcher = await _will_watcher(server)
    client = Client(server)
    await client.connect("polite", version=5, will=_will())
    client.send(Disconnect())
    assert client.context.closed
    assert not [p for p in await watcher.nothing_more() if isinstance(p, Publish)]
    other = Client(server)
    await other.connect("leaves-will", version=5, will=_will(b"asked"))
    other.send(Disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE))
    assert (await watcher.message()).payload == b"asked"


async def test_will_delay_and_reconnect_cancelling_it(server: BrokerServer) -> None:
    watcher = await _will_watcher(server)
    session = Properties(session_expiry_interval=60)
    client = Client(server)
    await client.connect("delayed", version=5, clean=False, properties=session, will=_will(delay=1))
    client.close()
    assert not [p for p in await watcher.nothing_more() if isinstance(p, Publish)]
    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    message = await watcher.message(timeout=3)
    assert message.payload == b"gone" and loop.time() - closed_at >= 0.9
    # a reconnect within the delay: no will
    again = Client(server)
    await again.connect("delayed", version=5, clean=False, properties=session, will=_will(b"no", delay=1))
    again.close()
    back = Client(server)
    await back.connect("delayed", version=5, clean=False, properties=session)
    state = SessionRegistry.for_server(server).sessions["delayed"]
    assert "will" not in state.timers


async def test_will_with_retain(server: BrokerServer) -> None:
    client = Client(server)
    await client.connect("r", version=4, will=_will(b"offline", retain=True))
    client.close()
    late = Client(server)
    await late.connect("late", version=4)
    await late.subscribe("wills")
    message = await late.message()
    assert (message.payload, message.retain) == (b"offline", True)


# --- takeover and keep alive --------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
async def test_client_id_takeover(server: BrokerServer, version: int) -> None:
    watcher = await _will_watcher(server)
    first = Client(server)
    await first.connect("same", version=version, will=_will())
    second = Client(server)
    await second.connect("same", version=version)
    assert first.context.closed
    if version == 5:
        assert (await first.expect(Disconnect)).reason_code == ReasonCode.SESSION_TAKEN_OVER
    assert SessionRegistry.for_server(server).connected["same"] is second.handler
    assert not [p for p in await watcher.nothing_more() if isinstance(p, Publish)]  # no will
    second.send(PingReq())
    await second.expect(PingResp)


async def test_keep_alive_timeout(server: BrokerServer) -> None:
    watcher = await _will_watcher(server)
    client = Client(server)
    await client.connect("sleepy", version=5, keep_alive=1, will=_will(b"timeout"))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(client.context.closed_event.wait(), 4)
    assert loop.time() - start >= 1.4
    assert (await client.expect(Disconnect)).reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert (await watcher.message()).payload == b"timeout"


async def test_keep_alive_is_extended_by_traffic(server: BrokerServer) -> None:
    client = Client(server)
    await client.connect("busy", version=4, keep_alive=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < 2.0:  # 2 s of pings, each within the 1.5 s limit
        client.send(PingReq())
        await client.expect(PingResp)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.context.closed_event.wait(), 0.5)
        assert not client.context.closed


# --- malformed input ----------------------------------------------------------------------------


async def test_garbage_after_connect(server: BrokerServer) -> None:
    v5 = Client(server)
    await v5.connect("g5", version=5)
    v5.send_raw(b"\x32\x03\x00\x05a")  # a PUBLISH whose topic runs past the packet
    disconnect = await v5.expect(Disconnect)
    assert disconnect.reason_code == ReasonCode.MALFORMED_PACKET
    assert v5.context.closed
    v3 = Client(server)
    await v3.connect("g3", version=4)
    v3.send_raw(b"\xff\xff\xff\xff\xff")
    assert v3.context.closed
    assert not await v3.nothing_more()  # MQTT 3: just close
    fine = Client(server)
    assert (await fine.connect("after", version=4)).reason_code == 0


async def test_oversized_packet_is_refused(server: BrokerServer) -> None:
    client = Client(server, {"maximumPacketSize": "1000"})
    connack = await client.connect("c", version=5)
    assert connack.properties.maximum_packet_size == 1000
    unlimited = MQTTCodec("client")
    unlimited.send(Connect("x", 5))
    client.send_raw(unlimited.send(Publish("t", b"x" * 2000, 0)))
    disconnect = await client.expect(Disconnect)
    assert disconnect.reason_code == ReasonCode.PACKET_TOO_LARGE
    assert client.context.closed


async def test_force_close_says_server_shutting_down(server: BrokerServer) -> None:
    client = Client(server)
    await client.connect("c", version=5)
    client.handler.force_close()
    assert (await client.expect(Disconnect)).reason_code == ReasonCode.SERVER_SHUTTING_DOWN
    assert client.context.closed


# --- acceptor parameters and anycast addresses --------------------------------------------------


async def test_link_stealing_can_be_refused(server: BrokerServer) -> None:
    first = Client(server, {"allowLinkStealing": "false"})
    await first.connect("only", version=5)
    second = Client(server, {"allowLinkStealing": "false"})
    connack = await second.connect("only", version=5)
    assert connack.reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    assert second.context.closed and not first.context.closed


async def test_v3_publish_refusal_can_be_acknowledged(secure_server: BrokerServer) -> None:
    client = Client(secure_server, {"closeMqttConnectionOnPublishAuthorizationFailure": "false"})
    await client.connect("v3", version=4, username="reader", password=b"r")
    puback = await client.publish("orders", b"x", qos=1)
    assert puback.reason_code == 0 and not client.context.closed  # acknowledged, dropped
    assert "orders" not in secure_server.post_office.addresses


async def test_subscription_to_an_anycast_address_consumes_its_queue(server: BrokerServer) -> None:
    from pybroker.config.model import RoutingType

    server.post_office.create_queue("orders", "orders", RoutingType.ANYCAST)
    publisher = Client(server)
    await publisher.connect("pub", version=4)
    await publisher.publish("orders", b"o1", qos=1)
    consumer = Client(server)
    await consumer.connect("worker", version=4)
    await consumer.subscribe("orders", qos=1)
    message = await consumer.message()
    assert message.payload == b"o1"
    consumer.send(PubAck(message.packet_id))
    consumer.send(Unsubscribe(9, ("orders",)))
    await consumer.expect(UnsubAck)
    assert queue_named(server, "orders") is not None  # borrowed, never deleted
    assert queue_named(server, "worker.orders") is None


# --- fragmented input ---------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["bytes", "random"])
async def test_a_whole_session_fed_in_pieces(server: BrokerServer, split: str) -> None:
    import random

    subscriber = Client(server)
    await subscriber.connect("sub", version=5)
    await subscriber.subscribe("frag/#", qos=2)
    encoder = MQTTCodec("client")
    stream = b"".join([
        encoder.send(Connect("frag", 5, properties=Properties(topic_alias_maximum=0))),
        encoder.send(Publish("frag/a", b"x" * 300, 1, packet_id=1,
                             properties=Properties(user_properties=(("k", "v"),)))),
        encoder.send(Publish("frag/b", b"y", 2, packet_id=2)),
        encoder.send(PubRel(2)),
        encoder.send(PingReq()),
        encoder.send(Disconnect()),
    ])
    client = Client(server)
    client.codec.send(Connect("frag", 5))  # the decoder of the responses: it "sent" the CONNECT
    rng = random.Random(7)
    position = 0
    while position < len(stream):
        size = 1 if split == "bytes" else rng.randint(1, 40)
        client.send_raw(stream[position:position + size])
        position += size
    await client.expect(ConnAck)
    assert (await client.expect(PubAck)).packet_id == 1
    await client.expect(PubRec)
    await client.expect(PubComp)
    await client.expect(PingResp)
    assert client.context.closed
    got = sorted([(m.topic, m.payload[:1]) for m in [await subscriber.message(), await subscriber.message()]])
    assert got == [("frag/a", b"x"), ("frag/b", b"y")]


async def test_a_failing_delivery_closes_only_the_subscriber(server: BrokerServer) -> None:
    subscriber = Client(server)
    await subscriber.connect("sub", version=4)
    await subscriber.subscribe("boom", qos=1)

    def broken(packet: Any) -> bytes:
        raise RuntimeError("encoder bug")

    subscriber.handler.codec.send = broken  # type: ignore[method-assign]
    publisher = Client(server)
    await publisher.connect("pub", version=4)
    await publisher.publish("boom", b"x", qos=1)
    assert not publisher.context.closed
    await asyncio.wait_for(subscriber.context.closed_event.wait(), TIMEOUT)
    assert queue_named(server, "sub.boom") is None  # the clean session ended
