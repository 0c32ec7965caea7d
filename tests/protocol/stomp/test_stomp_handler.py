"""The STOMP connection handler against a real BrokerServer, through a fake connection context.

Each test drives one or more :class:`Client` objects: a handler, the context it writes to, and a
client-side codec that turns what the handler wrote back into frames. Nothing here opens a
socket; waits are on events or futures with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

import pytest
from support import started

from pybroker.broker.filter import make_filter
from pybroker.broker.security import SecurityStore
from pybroker.broker.server import BrokerServer
from pybroker.config.model import RoutingType
from pybroker.config.parse import default_config, parse_config
from pybroker.errors import SecurityError
from pybroker.protocol.amqp.message import AMQP_CODEC
from pybroker.protocol.stomp.codec import NEED_DATA, Frame, HeartBeat, StompCodec
from pybroker.protocol.stomp.handler import StompConnectionHandler
from pybroker.protocol.stomp.message import CODEC
from pybroker.storage.manager import MemoryStorageManager

pytestmark = pytest.mark.asyncio

_ids = itertools.count(1)


# -- harness ---------------------------------------------------------------------------------


class FakeAcceptor:
    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.name = "test"
        self.params = dict(params or {})


class FakeContext:
    """What the handler sees of its connection: writes are kept, close is recorded."""

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.acceptor = FakeAcceptor(params)
        self.connection_id = f"c{next(_ids)}"
        self.remote_address = "127.0.0.1:40000"
        self.written = bytearray()
        self.closed = asyncio.Event()
        self.reading_paused = False
        self.wrote = asyncio.Event()

    def write(self, data: bytes) -> None:
        if not self.closed.is_set():
            self.written += data
            self.wrote.set()

    def close(self) -> None:
        self.closed.set()

    def abort(self) -> None:
        self.closed.set()

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False


class Client:
    """A handler plus a client-side view of it."""

    def __init__(self, server: BrokerServer, params: dict[str, str] | None = None) -> None:
        self.context = FakeContext(params)
        self.handler = StompConnectionHandler(server, self.context)
        self.encoder = StompCodec()
        self.decoder = StompCodec()
        self._read = 0
        self.events: list[Frame | HeartBeat] = []
        self.pending: list[Frame] = []

    # sending
    def raw(self, data: bytes) -> None:
        self.handler.data_received(data)

    def send(self, command: str, headers: dict[str, str] | list[tuple[str, str]] | None = None,
             body: bytes = b"") -> None:
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        self.raw(self.encoder.send(Frame(command, pairs, body)))

    def connect(self, version: str | None = "1.2", **headers: str) -> Frame:
        pairs = {"host": "localhost"}
        if version is not None:
            pairs["accept-version"] = version
        pairs.update({k.replace("_", "-"): v for k, v in headers.items()})
        # like stomp.py, read replies (an ERROR too) escaped as the best version offered
        offered = [v for v in ("1.0", "1.1", "1.2") if version and v in version.split(",")]
        self.decoder.set_version(offered[-1] if offered else "1.0")
        self.send("CONNECT", pairs)
        frames = self.frames()
        reply = frames[-1]
        if reply.command != "CONNECTED":
            self.pending = frames  # for error()
        else:
            negotiated = reply.header("version", "1.0")
            self.encoder.set_version(negotiated)
            self.decoder.set_version(negotiated)
        return reply

    # receiving
    def _decode(self) -> None:
        data = bytes(self.context.written[self._read:])
        self._read = len(self.context.written)
        if data:
            self.decoder.receive_data(data)
        while (event := self.decoder.next_event()) is not NEED_DATA:
            self.events.append(event)

    def frames(self) -> list[Frame]:
        """Frames written since the last call (heart-beats left out)."""
        self._decode()
        frames = self.pending + [event for event in self.events if isinstance(event, Frame)]
        self.events.clear()
        self.pending = []
        return frames

    async def wait_frames(self, count: int, timeout: float = 2.0) -> list[Frame]:
        """Wait until ``count`` frames arrived (the first ``count`` are returned, the rest kept)."""
        collected: list[Frame] = []

        async def gather() -> None:
            while True:
                self._decode()
                while self.events and len(collected) < count:
                    event = self.events.pop(0)
                    if isinstance(event, Frame):
                        collected.append(event)
                if len(collected) >= count:
                    return
                self.context.wrote.clear()
                await self.context.wrote.wait()

        await asyncio.wait_for(gather(), timeout)
        return collected

    def messages(self) -> list[Frame]:
        frames = self.frames()
        assert all(frame.command == "MESSAGE" for frame in frames), frames
        return frames

    @property
    def closed(self) -> bool:
        return self.context.closed.is_set()

    def error(self) -> Frame:
        frames = self.frames()
        assert frames and frames[-1].command == "ERROR", frames
        assert self.closed
        return frames[-1]


async def start(server: BrokerServer) -> BrokerServer:
    return await started(server)


def make_server(tmp_path: Path, *, xml: str | None = None, storage: Any = None,
                security: SecurityStore | None = None) -> BrokerServer:
    if xml is None:
        configuration = default_config(instance_dir=tmp_path, port=0, persistence_enabled=False)
    else:
        configuration = parse_config(xml, file="test.xml", instance_dir=tmp_path)
    return BrokerServer(
        configuration,
        storage=storage,
        codecs={"stomp": CODEC, "amqp": AMQP_CODEC},
        security=security,
        filter_factory=make_filter,
    )


def settings_xml(settings: str, addresses: str = "") -> str:
    return f"""<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>false</persistence-enabled><security-enabled>false</security-enabled>
      <address-settings><address-setting match="#">{settings}</address-setting></address-settings>
      <addresses>{addresses}</addresses></core></configuration>"""


@pytest.fixture
async def server(tmp_path):
    broker = await start(make_server(tmp_path))
    yield broker
    await broker.stop()


async def connected(server: BrokerServer, version: str = "1.2", params: dict[str, str] | None = None,
                    **headers: str) -> Client:
    client = Client(server, params)
    reply = client.connect(version, **headers)
    assert reply.command == "CONNECTED", reply
    return client


def queue(server: BrokerServer, name: str) -> Any:
    return server.post_office.queues[name]


# -- CONNECT ---------------------------------------------------------------------------------


async def test_connect_negotiates_the_highest_common_version(server):
    client = Client(server)
    reply = client.connect("1.0,1.1,1.2")
    assert reply.command == "CONNECTED"
    assert reply.header("version") == "1.2"
    assert reply.header("session") == client.context.connection_id
    assert reply.header("server", "").startswith("pybroker/")
    assert not reply.has_header("heart-beat")
    assert len(server.sessions) == 1
    session = next(iter(server.sessions.values()))
    assert session.protocol == "stomp"


async def test_connect_without_accept_version_speaks_1_0(server):
    client = Client(server)
    reply = client.connect(None)
    assert reply.command == "CONNECTED"
    assert not reply.has_header("version")
    assert not reply.has_header("server")
    assert client.handler.version == "1.0"


async def test_stomp_frame_needs_1_1(server):
    client = Client(server)
    client.send("STOMP", {"host": "x"})
    error = client.error()
    assert "Unsupported command: STOMP" in error.header("message")

    client = Client(server)
    client.send("STOMP", {"accept-version": "1.1", "host": "x"})
    assert client.frames()[-1].header("version") == "1.1"


async def test_unsupported_version_gets_the_supported_list_and_is_closed(server):
    client = Client(server)
    client.send("CONNECT", {"accept-version": "2.0,3.1", "receipt": "r1"})
    error = client.error()
    assert error.header("version") == "1.0,1.1,1.2"
    assert "2.0,3.1" in error.header("message")
    assert error.body == b"Supported protocol versions are v1.0 v1.1 v1.2"
    assert error.header("receipt-id") == "r1"
    assert server.sessions == {}


async def test_frame_before_connect_is_an_error(server):
    client = Client(server)
    client.send("SEND", {"destination": "a"}, b"x")
    error = client.error()
    assert "Connection has not been established" in error.header("message")
    assert client.context.reading_paused
    assert server.sessions == {}
    # input after the error is ignored
    client.send("CONNECT", {"accept-version": "1.2"})
    assert client.frames() == []


async def test_second_connect_is_an_error(server):
    client = await connected(server)
    client.send("CONNECT", {"accept-version": "1.2"})
    error = client.error()
    assert "CONNECT" in error.header("message") and "connected" in error.header("message")
    assert server.sessions == {}


async def test_request_id_and_client_id(server):
    client = await connected(server, request_id="42", client_id="app-1")
    session = next(iter(server.sessions.values()))
    assert session.client_id == "app-1"
    assert client.handler.client_id == "app-1"


async def test_request_id_is_echoed_as_response_id(server):
    client = Client(server)
    reply = client.connect("1.2", request_id="42")
    assert reply.header("response-id") == "42"


@pytest.mark.parametrize(
    ("offer", "answer", "ttl"),
    [
        ("0,0", "0,30000", 60000),
        ("1000,2000", "2000,1000", 2000),
        ("100,100", "500,500", 1000),  # TTL 200 ms is raised to connectionTtlMin (1000 ms)
        ("0,100", "500,30000", 60000),
        ("20000,0", "0,20000", 40000),
    ],
)
async def test_heart_beat_negotiation_follows_artemis(server, offer, answer, ttl):
    client = Client(server)
    reply = client.connect("1.2", heart_beat=offer)
    assert reply.header("heart-beat") == answer
    assert client.handler.connection_ttl_ms == ttl


async def test_heart_beat_header_is_ignored_in_1_0(server):
    client = Client(server)
    reply = client.connect(None, heart_beat="1000,1000")
    assert reply.command == "CONNECTED"
    assert not reply.has_header("heart-beat")
    assert client.handler.heart_beat_send_ms == 0


async def test_bad_heart_beat_header_is_an_error(server):
    client = Client(server)
    client.connect("1.2", heart_beat="fast")
    assert "Incorrect heartbeat header fast" in client.error().header("message")


async def test_connection_ttl_from_acceptor_and_override(tmp_path):
    xml = """<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>false</persistence-enabled><security-enabled>false</security-enabled>
      <connection-ttl-override>7000</connection-ttl-override></core></configuration>"""
    server = await start(make_server(tmp_path, xml=xml))
    try:
        assert Client(server).handler.connection_ttl_ms == 7000
        assert Client(server, {"connectionTtl": "3000"}).handler.connection_ttl_ms == 3000
        client = Client(server, {"connectionTtl": "3000"})
        assert client.connect("1.2", heart_beat="0,0").header("heart-beat") == "0,1500"
    finally:
        await server.stop()


async def test_server_sends_heart_beats_when_idle(server):
    client = await connected(server, heart_beat="0,500")
    assert client.handler.heart_beat_send_ms == 500
    client.frames()
    start_length = len(client.context.written)

    async def beat() -> None:
        while client.context.written[start_length:].count(b"\n") < 2:
            client.context.wrote.clear()
            await client.context.wrote.wait()

    await asyncio.wait_for(beat(), 3)
    assert bytes(client.context.written[start_length:]) == b"\n\n"
    assert not client.closed


async def test_silent_client_is_closed_after_its_ttl(server):
    client = await connected(server, params={"connectionTtlMin": "100"}, heart_beat="50,0")
    assert client.handler.connection_ttl_ms == 100
    client.send("SUBSCRIBE", {"destination": "t", "id": "1", "ack": "client"})
    server.post_office.route(_stomp_message(server, "t"), None)
    [message] = await client.wait_frames(1)
    assert message.command == "MESSAGE"
    await asyncio.wait_for(client.context.closed.wait(), 3)
    error = client.frames()[-1]
    assert error.command == "ERROR"
    assert "AMQ229014" in error.header("message")
    assert "100ms connection TTL" in error.header("message")
    assert server.sessions == {}


async def test_heart_beats_from_the_client_keep_the_connection(server):
    client = await connected(server, params={"connectionTtlMin": "600"}, heart_beat="100,0")
    assert client.handler.connection_ttl_ms == 600
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.2  # twice the TTL
    while loop.time() < deadline:
        client.raw(b"\n")
        # the client's heart-beat period, watching for a close meanwhile
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.context.closed.wait(), 0.1)
        assert not client.closed
    await asyncio.wait_for(client.context.closed.wait(), 3)


# -- authentication --------------------------------------------------------------------------


class _Principal:
    def __init__(self, user: str, roles: set[str]) -> None:
        self.user = user
        self.roles = frozenset(roles)


class _Authenticator:
    users = {"admin": ("secret", {"amq"}), "reader": ("pw", {"readers"})}

    def __init__(self, guest: bool) -> None:
        self.guest = guest

    def allows_anonymous(self) -> bool:
        return self.guest

    def authenticate(self, user: str | None, password: str | None) -> _Principal:
        if user is None and self.guest:
            return _Principal("guest", {"amq"})
        entry = self.users.get(user or "")
        if entry is None or entry[0] != password:
            raise SecurityError(f"AMQ229031: Unable to validate user {user}")
        return _Principal(user or "", entry[1])


class _Setting:
    permissions = {
        permission: {"amq"}
        for permission in ("send", "consume", "browse", "createAddress", "deleteAddress",
                           "createDurableQueue", "deleteDurableQueue", "createNonDurableQueue",
                           "deleteNonDurableQueue")
    }
    permissions = {**permissions, "consume": {"amq", "readers"}, "createNonDurableQueue": {"amq", "readers"},
                   "deleteNonDurableQueue": {"amq", "readers"}}


class _Repository:
    def match(self, address: str) -> _Setting:
        return _Setting()


def secure_server(tmp_path: Path, *, guest: bool = False) -> BrokerServer:
    security = SecurityStore(enabled=True, authenticator=_Authenticator(guest), repository=_Repository())
    return make_server(tmp_path, security=security)


async def test_bad_login_is_refused_and_closed(tmp_path):
    server = await start(secure_server(tmp_path))
    try:
        client = Client(server)
        client.connect("1.2", login="admin", passcode="wrong")
        error = client.error()
        text = "Security Error occurred: User name [admin] or password is invalid"
        assert error.header("message") == text
        assert error.body == text.encode()
        assert server.sessions == {}

        client = Client(server)
        client.connect("1.1")  # no credentials, no guest login
        assert "User name [None]" in client.error().header("message")

        good = await connected(server, login="admin", passcode="secret")
        assert good.handler.user == "admin"
    finally:
        await server.stop()


async def test_anonymous_login_when_the_security_store_has_a_guest(tmp_path):
    server = await start(secure_server(tmp_path, guest=True))
    try:
        client = await connected(server)
        assert client.handler.user == "guest"
    finally:
        await server.stop()


async def test_permissions_are_checked_for_send_and_subscribe(tmp_path):
    server = await start(secure_server(tmp_path))
    try:
        reader = await connected(server, login="reader", passcode="pw")
        reader.send("SEND", {"destination": "orders", "destination-type": "ANYCAST", "receipt": "s1"}, b"x")
        error = reader.error()
        assert "AMQ229032" in error.header("message")
        assert error.header("receipt-id") == "s1"

        admin = await connected(server, login="admin", passcode="secret")
        admin.send("SEND", {"destination": "orders", "destination-type": "ANYCAST", "receipt": "s2"}, b"x")
        assert [f.command for f in admin.frames()] == ["RECEIPT"]

        reader = await connected(server, login="reader", passcode="pw")
        reader.send("SUBSCRIBE", {"destination": "orders", "id": "1", "subscription-type": "ANYCAST"})
        [message] = reader.messages()
        assert message.body == b"x"

        # a durable subscription needs createDurableQueue, which readers lack
        reader2 = await connected(server, login="reader", passcode="pw", client_id="r")
        reader2.send("SUBSCRIBE", {"destination": "news", "id": "1", "durable-subscription-name": "d"})
        assert "AMQ229032" in reader2.error().header("message")
    finally:
        await server.stop()


# -- SEND --------------------------------------------------------------------------------------


def _stomp_message(server: BrokerServer, address: str, body: bytes = b"payload", **headers: str) -> Any:
    from pybroker.protocol.stomp.message import stomp_to_core

    frame = Frame("SEND", list(headers.items()), body)
    return stomp_to_core(frame, address, routing_type=None, prefix=None, now_ms=1000)


async def test_send_to_a_topic_without_subscribers_is_dropped_and_fans_out_to_subscribers(server):
    producer = await connected(server)
    producer.send("SEND", {"destination": "news", "receipt": "1"}, b"nobody")
    assert [f.command for f in producer.frames()] == ["RECEIPT"]
    # Artemis's default routing type for STOMP is the address-settings default: MULTICAST
    assert server.post_office.addresses["news"].routing_types == {RoutingType.MULTICAST}

    first, second = await connected(server), await connected(server)
    for client in (first, second):
        client.send("SUBSCRIBE", {"destination": "news", "id": "s"})
    producer.send("SEND", {"destination": "news", "colour": "red"}, b"hello")
    for client in (first, second):
        [message] = client.messages()
        assert message.body == b"hello"
        assert message.header("destination") == "news"
        assert message.header("subscription") == "s"
        assert message.header("colour") == "red"
        assert message.header("redelivered") == "false"
        assert message.header("persistent") == "false"
        assert message.header("priority") == "4"
        assert message.header("expires") == "0"
        assert int(message.header("timestamp")) > 0
        assert message.header("content-length") == "5"
        assert not message.has_header("ack")  # auto mode
    # auto mode: acknowledged once written
    stats = server.queue_statistics()
    assert sum(s["acknowledged"] for name, s in stats.items() if name not in ("DLQ", "ExpiryQueue")) == 2
    assert all(s["messages"] == 0 for s in stats.values())


async def test_send_headers_become_message_fields_and_properties(server):
    producer = await connected(server)
    consumer = await connected(server)
    consumer.send("SUBSCRIBE", {"destination": "q", "id": "s", "subscription-type": "ANYCAST", "ack": "client"})
    producer.send("SEND", [
        ("destination", "q"), ("destination-type", "ANYCAST"), ("persistent", "true"),
        ("priority", "7"), ("expires", "99999999999999"), ("correlation-id", "c-1"),
        ("reply-to", "answers"), ("type", "order"), ("content-type", "text/plain"),
        ("JMSXGroupID", "g"), ("custom", "a:b\nc"), ("receipt", "r"), ("transaction-like", "t"),
    ], b"body")
    [message] = consumer.messages()
    assert message.header("persistent") == "true"
    assert message.header("priority") == "7"
    assert message.header("expires") == "99999999999999"
    assert message.header("correlation-id") == "c-1"
    assert message.header("reply-to") == "answers"
    assert message.header("type") == "order"
    assert message.header("content-type") == "text/plain"
    assert message.header("custom") == "a:b\nc"  # escaped on the wire in 1.2
    assert message.header("destination-type") == "ANYCAST"
    assert message.header("transaction-like") == "t"
    assert not message.has_header("receipt")
    ref = next(iter(consumer.handler.subscriptions["s"].unacked.values()))[0]
    core = ref.message
    assert core.durable and core.priority == 7 and core.expiration == 99999999999999
    assert core.extra == {"correlation_id": "c-1", "reply_to": "answers", "type": "order",
                          "content_type": "text/plain", "group_id": "g"}
    assert core.properties == {"custom": "a:b\nc", "transaction-like": "t"}


@pytest.mark.parametrize(("name", "value"), [("priority", "high"), ("priority", "300"), ("expires", "soon")])
async def test_bad_numeric_send_header_is_an_error(server, name, value):
    client = await connected(server)
    client.send("SEND", {"destination": "q", name: value, "receipt": "x"}, b"")
    error = client.error()
    assert name in error.header("message")
    assert error.header("receipt-id") == "x"


async def test_duplicate_id_header_drops_the_second_send(server):
    consumer = await connected(server)
    consumer.send("SUBSCRIBE", {"destination": "d", "id": "s", "subscription-type": "ANYCAST"})
    producer = await connected(server)
    for body in (b"one", b"two"):
        producer.send("SEND", {"destination": "d", "destination-type": "ANYCAST", "_AMQ_DUPL_ID": "k1"}, body)
    assert [m.body for m in consumer.messages()] == [b"one"]
    assert server.post_office.duplicate_count == 1


async def test_send_without_destination_is_an_error(server):
    client = await connected(server)
    client.send("SEND", {"receipt": "r9"}, b"x")
    error = client.error()
    assert "destination" in error.header("message")
    assert error.header("receipt-id") == "r9"


async def test_missing_address_without_auto_create_is_an_error(tmp_path):
    server = await start(make_server(tmp_path, xml=settings_xml(
        "<auto-create-addresses>false</auto-create-addresses><auto-create-queues>false</auto-create-queues>",
        '<address name="topic"><multicast/></address>')))
    try:
        client = await connected(server)
        client.send("SEND", {"destination": "nowhere", "receipt": "1"}, b"x")
        error = client.error()
        assert error.header("message") == "AMQ339001: Destination does not exist: nowhere"
        assert error.header("receipt-id") == "1"

        client = await connected(server)
        client.send("SEND", {"destination": "topic", "destination-type": "ANYCAST"}, b"x")
        assert client.error().header("message") == (
            "AMQ339041: Not allowed to specify ANYCAST semantics on [MULTICAST] address."
        )

        client = await connected(server)
        client.send("SUBSCRIBE", {"destination": "nowhere", "id": "1"})
        assert "AMQ339001" in client.error().header("message")
    finally:
        await server.stop()


async def test_acceptor_prefixes_choose_the_routing_type_and_come_back_in_destination(server):
    params = {"anycastPrefix": "/queue/", "multicastPrefix": "/topic/"}
    consumer = await connected(server, params=params)
    consumer.send("SUBSCRIBE", {"destination": "/queue/orders", "id": "q"})
    consumer.send("SUBSCRIBE", {"destination": "/topic/news", "id": "t"})
    producer = await connected(server, params=params)
    producer.send("SEND", {"destination": "/queue/orders"}, b"o")
    producer.send("SEND", {"destination": "/topic/news"}, b"n")
    messages = {m.header("subscription"): m for m in consumer.messages()}
    assert messages["q"].header("destination") == "/queue/orders"
    assert messages["t"].header("destination") == "/topic/news"
    assert server.post_office.addresses["orders"].routing_types == {RoutingType.ANYCAST}
    assert server.post_office.addresses["news"].routing_types == {RoutingType.MULTICAST}
    assert "orders" in server.post_office.queues  # the anycast queue was auto-created
    # a destination-type header wins over the prefix (as Artemis)
    producer.send("SEND", {"destination": "/queue/both", "destination-type": "MULTICAST"}, b"m")
    assert server.post_office.addresses["both"].routing_types == {RoutingType.MULTICAST}


async def test_fully_qualified_queue_names(server):
    consumer = await connected(server)
    consumer.send("SUBSCRIBE", {"destination": "orders::audit", "id": "a", "subscription-type": "MULTICAST"})
    assert queue(server, "audit").address == "orders"
    producer = await connected(server)
    producer.send("SEND", {"destination": "orders::audit"}, b"direct")
    [message] = consumer.messages()
    assert message.body == b"direct"


# -- receipts and durability -----------------------------------------------------------------


class ControlledStorage(MemoryStorageManager):
    """Pretends to persist: durable() hands out futures the test resolves."""

    persistent = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[asyncio.Future[None]] = []

    def store_queue(self, record: Any) -> None:
        return None

    def store_address(self, record: Any) -> None:
        return None

    def durable(self) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    def release_all(self) -> None:
        for future in self.pending:
            if not future.done():
                future.set_result(None)


async def stop_controlled(server: BrokerServer, storage: ControlledStorage) -> None:
    storage.release_all()
    stopping = asyncio.ensure_future(server.stop())
    while not stopping.done():
        storage.release_all()  # the server waits for one last durable() when it stops
        await asyncio.sleep(0)
    await stopping


async def test_receipts_wait_for_durability_and_keep_their_order(tmp_path):
    storage = ControlledStorage()
    server = await start(make_server(tmp_path, storage=storage))
    try:
        client = await connected(server)
        client.send("SUBSCRIBE", {"destination": "q", "id": "s", "subscription-type": "ANYCAST"})
        storage.pending.clear()
        client.send("SEND", {"destination": "q", "destination-type": "ANYCAST", "persistent": "true",
                             "receipt": "durable"}, b"1")
        client.send("SEND", {"destination": "q", "destination-type": "ANYCAST", "receipt": "fast"}, b"2")
        # the messages are delivered at once; the receipts wait for the disk
        assert [f.command for f in client.frames()] == ["MESSAGE", "MESSAGE"]
        assert len(storage.pending) == 1
        storage.pending[0].set_result(None)
        receipts = await client.wait_frames(2)
        assert [f.header("receipt-id") for f in receipts] == ["durable", "fast"]
    finally:
        await stop_controlled(server, storage)


async def test_subscription_starts_after_its_receipt(tmp_path):
    storage = ControlledStorage()
    server = await start(make_server(tmp_path, storage=storage))
    try:
        producer = await connected(server)
        producer.send("SEND", {"destination": "q", "destination-type": "ANYCAST"}, b"waiting")
        client = await connected(server)
        storage.pending.clear()
        client.send("SUBSCRIBE", {"destination": "q", "id": "s", "subscription-type": "ANYCAST", "receipt": "sub"})
        assert client.frames() == []
        storage.pending[-1].set_result(None)
        receipt, message = await client.wait_frames(2)
        assert receipt.command == "RECEIPT" and receipt.header("receipt-id") == "sub"
        assert message.body == b"waiting"
    finally:
        await stop_controlled(server, storage)


async def test_a_failed_store_is_reported_instead_of_the_receipt(tmp_path):
    storage = ControlledStorage()
    server = await start(make_server(tmp_path, storage=storage))
    try:
        client = await connected(server)
        storage.pending.clear()
        client.send("SEND", {"destination": "q", "destination-type": "ANYCAST", "persistent": "true",
                             "receipt": "r"}, b"1")
        storage.pending[0].set_exception(OSError("disk on fire"))
        [error] = await client.wait_frames(1)
        assert error.command == "ERROR" and "disk on fire" in error.header("message")
        assert client.closed
    finally:
        await stop_controlled(server, storage)


async def test_disconnect_with_receipt_then_close(server):
    client = await connected(server)
    client.send("SUBSCRIBE", {"destination": "q", "id": "s", "ack": "client", "subscription-type": "ANYCAST"})
    client.send("SEND", {"destination": "q", "destination-type": "ANYCAST"}, b"unacked")
    client.send("DISCONNECT", {"receipt": "bye"})
    client.send("SEND", {"destination": "q", "destination-type": "ANYCAST"}, b"ignored")
    frames = client.frames()
    assert [f.command for f in frames] == ["MESSAGE", "RECEIPT"]
    assert frames[-1].header("receipt-id") == "bye"
    assert client.closed
    assert server.sessions == {}
    # the unacknowledged message is back, counted as delivered once
    q = queue(server, "q")
    assert q.message_count == 1 and q.consumer_count == 0
    assert next(q.iter_queued()).delivery_count == 1


async def test_disconnect_without_receipt_closes(server):
    client = await connected(server)
    client.send("DISCONNECT")
    assert client.frames() == []
    assert client.closed


async def test_connection_lost_returns_unacked_messages(server):
    client = await connected(server)
    client.send("SUBSCRIBE", {"destination": "q", "id": "s", "ack": "client-individual", "subscription-type": "ANYCAST"})
    client.send("SEND", {"destination": "q", "destination-type": "ANYCAST"}, b"m")
    assert len(client.messages()) == 1
    client.handler.connection_lost(None)
    assert server.sessions == {}
    other = await connected(server)
    other.send("SUBSCRIBE", {"destination": "q", "id": "s", "subscription-type": "ANYCAST"})
    [message] = other.messages()
    assert message.header("redelivered") == "true"


async def test_force_close_sends_an_error(server):
    client = await connected(server)
    client.handler.force_close()
    assert "server shutdown" in client.error().header("message")
    assert server.sessions == {}


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"GARBAGE\n\n\x00", "unknown command"),
        (b"SEND\ndestination\n\n\x00", "has no ':'"),
        (b"SEND\ncontent-length:99999999999\n\n\x00", "larger than"),
        (b"SEND\nx:" + b"y" * 20000 + b"\n\n\x00", "longer than"),
        (b"SEND\nbad:\\q\n\n\x00", "escape"),
    ],
    ids=["command", "header", "content-length", "long-header", "escape"],
)
async def test_malformed_frames_get_an_error_naming_the_problem(server, data, problem):
    client = await connected(server)
    client.raw(data)
    error = client.error()
    assert problem in error.header("message")
    assert server.sessions == {}
    # the broker serves others
    other = await connected(server)
    other.send("SEND", {"destination": "x", "receipt": "ok"})
    assert other.frames()[-1].command == "RECEIPT"


async def test_server_frames_from_a_client_are_refused(server):
    client = await connected(server)
    client.send("MESSAGE", {"destination": "x"})
    assert "Unsupported command: MESSAGE" in client.error().header("message")


async def test_nack_is_not_a_1_0_command(server):
    client = await connected(server, version=None)
    client.send("NACK", {"message-id": "1,1"})
    assert "Unsupported command: NACK" in client.error().header("message")


# -- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------------


async def test_subscribe_needs_an_id_from_1_1(server):
    client = await connected(server, version="1.1")
    client.send("SUBSCRIBE", {"destination": "t"})
    assert "'id'" in client.error().header("message")

    old = await connected(server, version=None)
    old.send("SUBSCRIBE", {"destination": "t"})
    assert "subscription/t" in old.handler.subscriptions
    old.send("UNSUBSCRIBE", {"destination": "t", "receipt": "u"})
    assert old.frames()[-1].command == "RECEIPT"
    assert old.handler.subscriptions == {}


async def test_subscribe_errors(server):
    for headers, text in [
        ({"id": "1"}, "destination"),
        ({"destination": "t", "id": "1", "ack": "sometimes"}, "bad ack mode"),
        ({"destination": "t", "id": "1", "selector": " "}, "Selector cannot be empty"),
        ({"destination": "t", "id": "1", "selector": "colour = "}, 'Invalid selector "colour = "'),
        ({"destination": "t", "id": "1", "durable-subscription-name": "d"}, "client-id"),
        ({"destination": "t", "id": "1", "consumer-window-size": "lots"}, "consumer-window-size"),
        ({"destination": "t", "id": "1", "subscription-type": "BROADCAST"}, "bad routing type"),
    ]:
        client = await connected(server)
        client.send("SUBSCRIBE", headers)
        assert text in client.error().header("message"), headers


async def test_duplicate_subscription_id_is_an_error(server):
    client = await connected(server)
    client.send("SUBSCRIBE", {"destination": "a", "id": "1"})
    client.send("SUBSCRIBE", {"destination": "b", "id": "1"})
    assert "There already is a subscription for: 1" in client.error().header("message")


async def test_topic_subscription_queue_is_temporary(server):
    client = await connected(server)
    client.send("SUBSCRIBE", {"destination": "news", "id": "1"})
    client.send("SUBSCRIBE", {"destination": "news", "id": "2"})
    bound = [q for q in server.post_office.bindings["news"]]
    assert len(bound) == 2 and all(q.temporary and q.routing_type is RoutingType.MULTICAST for q in bound)
    client.send("UNSUBSCRIBE", {"id": "1"})
    assert len(server.post_office.bindings["news"]) == 1
    client.handler.connection_lost(None)
    assert server.post_office.bindings["news"] == []


async def test_unsubscribe_errors(server):
    client = await connected(server)
    client.send("UNSUBSCRIBE", {"id": "nope"})
    assert "no subscription exists for id: nope" in client.error().header("message")
    client = await connected(server)
    client.send("UNSUBSCRIBE", {})
    assert "Must specify the subscription's id" in client.error().header("message")


async def test_selector_on_topic_and_queue_subscriptions(server):
    client = await connected(server)
    client.send("SUBSCRIBE", {"destination": "t", "id": "topic", "selector": "colour = 'red'"})
    client.send("SUBSCRIBE", {"destination": "q", "id": "queue", "selector": "colour = 'red'",
                              "subscription-type": "ANYCAST"})
    producer = await connected(server)
    for colour in ("blue", "red"):
        producer.send("SEND", {"destination": "t", "colour": colour}, colour.encode())
        producer.send("SEND", {"destination": "q", "destination-type": "ANYCAST", "colour": colour}, colour.encode())
    messages = client.messages()
    assert sorted((m.header("subscription"), m.body) for m in messages) == [
        ("queue", b"red"), ("topic", b"red")]
    # the topic filter lives on the subscription queue; the blue one never reached it
    topic_queue = queue(server, client.handler.subscriptions["topic"].queue_name)
    assert topic_queue.filter is not None and topic_queue.messages_added == 1
    # the queue keeps what the selector skipped
    assert queue(server, "q").message_count == 1


async def test_durable_subscription_survives_the_connection(server):
    client = await connected(server, client_id="app")
    client.send("SUBSCRIBE", {"destination": "news", "id": "1", "durable-subscription-name": "sub",
                              "ack": "client-individual"})
    assert queue(server, "app.sub").durable
    client.handler.connection_lost(None)
    producer = await connected(server)
    producer.send("SEND", {"destination": "news"}, b"while away")
    assert queue(server, "app.sub").message_count == 1

    again = await connected(server, client_id="app")
    again.send("SUBSCRIBE", {"destination": "news", "id": "x", "activemq.subscriptionName": "sub"})
    [message] = again.messages()
    assert message.body == b"while away"
    # UNSUBSCRIBE without the name keeps the subscription, with it deletes it
    again.send("UNSUBSCRIBE", {"id": "x"})
    assert "app.sub" in server.post_office.queues
    again.send("UNSUBSCRIBE", {"durable-subscription-name": "sub", "receipt": "gone"})
    assert again.frames()[-1].command == "RECEIPT"
    assert "app.sub" not in server.post_office.queues


async def test_unsubscribe_of_a_durable_subscription_in_use_elsewhere_is_refused(server):
    first = await connected(server, client_id="app")
    first.send("SUBSCRIBE", {"destination": "news", "id": "1", "durable-subscription-name": "sub"})
    second = await connected(server, client_id="app")
    second.send("UNSUBSCRIBE", {"durable-subscription-name": "sub"})
    assert "has 1 consumer" in second.error().body.decode()
    assert "app.sub" in server.post_office.queues


async def test_no_local_subscription_skips_its_own_messages(server):
    client = await connected(server)
    client.send("SUBSCRIBE", {"destination": "chat", "id": "1", "no-local": "true"})
    client.send("SEND", {"destination": "chat"}, b"mine")
    other = await connected(server)
    other.send("SEND", {"destination": "chat"}, b"theirs")
    assert [m.body for m in client.messages()] == [b"theirs"]


# -- ACK / NACK --------------------------------------------------------------------------------


async def _fill(server: BrokerServer, client: Client, count: int, *, ack: str, destination: str = "work",
                **headers: str) -> list[Frame]:
    client.send("SUBSCRIBE", {"destination": destination, "id": "s", "ack": ack,
                              "subscription-type": "ANYCAST", **headers})
    producer = await connected(server)
    for index in range(count):
        producer.send("SEND", {"destination": destination, "destination-type": "ANYCAST"}, str(index).encode())
    return client.messages()


async def test_client_ack_is_cumulative(server):
    client = await connected(server)
    messages = await _fill(server, client, 3, ack="client")
    assert all(m.header("ack") == m.header("message-id") for m in messages)
    client.send("ACK", {"id": messages[1].header("ack"), "receipt": "a"})
    assert client.frames()[-1].command == "RECEIPT"
    q = queue(server, "work")
    assert q.messages_acknowledged == 2 and q.delivering_count == 1
    # acking an acknowledged id again is an error
    client.send("ACK", {"id": messages[0].header("ack")})
    assert "no message with id" in client.error().header("message")
    assert q.message_count == 1  # the third went back


async def test_client_individual_ack_settles_one(server):
    client = await connected(server)
    messages = await _fill(server, client, 3, ack="client-individual")
    client.send("ACK", {"id": messages[1].header("ack")})
    q = queue(server, "work")
    assert q.messages_acknowledged == 1 and q.delivering_count == 2
    client.send("ACK", {"id": messages[0].header("ack")})
    client.send("ACK", {"id": messages[2].header("ack")})
    assert q.message_count == 0


async def test_ack_headers_per_version(server):
    v11 = await connected(server, version="1.1")
    [message] = await _fill(server, v11, 1, ack="client", destination="a")
    assert not message.has_header("ack")
    v11.send("ACK", {"message-id": message.header("message-id")})
    assert "Must specify the subscription's id" in v11.error().header("message")

    v11 = await connected(server, version="1.1")
    [message] = await _fill(server, v11, 1, ack="client", destination="b")
    v11.send("ACK", {"message-id": message.header("message-id"), "subscription": "other"})
    assert "subscription id other does not match s" in v11.error().header("message")

    v11 = await connected(server, version="1.1")
    [message] = await _fill(server, v11, 1, ack="client", destination="c")
    v11.send("ACK", {"message-id": message.header("message-id"), "subscription": "s", "receipt": "ok"})
    assert v11.frames()[-1].command == "RECEIPT"

    v10 = await connected(server, version=None)
    [message] = await _fill(server, v10, 1, ack="client", destination="d")
    v10.send("ACK", {"message-id": message.header("message-id"), "receipt": "ok"})
    assert v10.frames()[-1].command == "RECEIPT"

    v12 = await connected(server)
    v12.send("ACK", {"message-id": "1,1"})
    assert "No id header in ACK/NACK frame" in v12.error().header("message")
    # the refused acks left their messages; the accepted ones are gone
    assert [queue(server, name).message_count for name in "abcd"] == [1, 1, 0, 0]


@pytest.mark.parametrize("ack_id", ["nonsense", "999,999", ","])
async def test_ack_of_an_unknown_id_is_an_error(server, ack_id):
    client = await connected(server)
    await _fill(server, client, 1, ack="client")
    client.send("ACK", {"id": ack_id, "receipt": "r"})
    error = client.error()
    assert error.header("message") == f"AMQ339025: failed to ack because no message with id: {ack_id}"
    assert error.header("receipt-id") == "r"


async def test_ack_in_auto_mode_is_an_error(server):
    client = await connected(server)
    [message] = await _fill(server, client, 1, ack="auto")
    client.send("ACK", {"id": message.header("message-id")})
    assert "no message with id" in client.error().header("message")


async def test_nack_redelivers_then_dead_letters(tmp_path):
    server = await start(make_server(tmp_path, xml=settings_xml(
        "<dead-letter-address>DLQ</dead-letter-address><max-delivery-attempts>3</max-delivery-attempts>",
        '<address name="DLQ"><anycast><queue name="DLQ"/></anycast></address>')))
    try:
        client = await connected(server)
        [message] = await _fill(server, client, 1, ack="client-individual")
        seen = [message]
        for _ in range(2):
            client.send("NACK", {"id": seen[-1].header("ack")})
            seen += client.messages()
        assert [m.header("redelivered") for m in seen] == ["false", "true", "true"]
        client.send("NACK", {"id": seen[-1].header("ack")})
        assert client.messages() == []
        dlq = queue(server, "DLQ")
        assert dlq.message_count == 1
        dead = await connected(server)
        dead.send("SUBSCRIBE", {"destination": "DLQ", "id": "d", "subscription-type": "ANYCAST"})
        [moved] = dead.messages()
        assert moved.body == b"0"
        assert moved.header("_AMQ_ORIG_ADDRESS") == "work"
        assert moved.header("_AMQ_ORIG_QUEUE") == "work"
    finally:
        await server.stop()


async def test_client_mode_nack_returns_every_earlier_message_in_order(server):
    client = await connected(server)
    messages = await _fill(server, client, 3, ack="client", **{"consumer-window-size": "0"})
    assert len(messages) == 1  # window 0: one at a time
    client.send("ACK", {"id": messages[0].header("ack")})
    [second] = client.messages()
    assert second.body == b"1"
    client.send("NACK", {"id": second.header("ack")})
    [again] = client.messages()
    assert again.body == b"1" and again.header("redelivered") == "true"


async def test_consumer_window_limits_unacknowledged_bytes(server):
    # the default window (10 KiB) takes two 6 KiB frames: the third waits for an ACK
    client = await connected(server)
    client.send("SUBSCRIBE", {"destination": "big", "id": "s", "ack": "client-individual",
                              "subscription-type": "ANYCAST"})
    producer = await connected(server)
    for index in range(3):
        producer.send("SEND", {"destination": "big", "destination-type": "ANYCAST"}, bytes([65 + index]) * 6000)
    messages = client.messages()
    assert [m.body[:1] for m in messages] == [b"A", b"B"]
    client.send("ACK", {"id": messages[0].header("ack")})
    [third] = client.messages()
    assert third.body[:1] == b"C"

    # a window of one byte: one message at a time
    small = await connected(server)
    small.send("SUBSCRIBE", {"destination": "w2", "id": "s", "ack": "client-individual",
                             "subscription-type": "ANYCAST", "consumer-window-size": "1"})
    for index in range(3):
        producer.send("SEND", {"destination": "w2", "destination-type": "ANYCAST"}, str(index).encode())
    [only] = small.messages()
    assert only.body == b"0"
    small.send("ACK", {"id": only.header("ack")})
    [next_one] = small.messages()
    assert next_one.body == b"1"
    assert queue(server, "w2").message_count == 2


async def test_unlimited_window_and_write_back_pressure(server):
    client = await connected(server)
    client.handler.pause_writing()
    client.send("SUBSCRIBE", {"destination": "bp", "id": "s", "ack": "client", "subscription-type": "ANYCAST",
                              "consumer-window-size": "-1"})
    producer = await connected(server)
    for index in range(50):
        producer.send("SEND", {"destination": "bp", "destination-type": "ANYCAST"}, str(index).encode())
    assert client.frames() == []
    assert queue(server, "bp").message_count == 50
    client.handler.resume_writing()
    messages = client.messages()
    assert [m.body for m in messages] == [str(i).encode() for i in range(50)]


# -- transactions ------------------------------------------------------------------------------


async def test_transacted_sends_are_routed_on_commit_in_order(server):
    consumer = await connected(server)
    consumer.send("SUBSCRIBE", {"destination": "tx", "id": "s", "subscription-type": "ANYCAST"})
    producer = await connected(server)
    producer.send("BEGIN", {"transaction": "t1"})
    for body in (b"a", b"b", b"c"):
        producer.send("SEND", {"destination": "tx", "destination-type": "ANYCAST", "transaction": "t1",
                               "receipt": body.decode()}, body)
    assert [f.command for f in producer.frames()] == ["RECEIPT"] * 3
    assert consumer.messages() == []
    producer.send("COMMIT", {"transaction": "t1", "receipt": "c"})
    # the RECEIPT comes once the commit took effect
    (receipt,) = await producer.wait_frames(1)
    assert receipt.header("receipt-id") == "c"
    assert [m.body for m in consumer.messages()] == [b"a", b"b", b"c"]


async def test_abort_drops_sends(server):
    consumer = await connected(server)
    consumer.send("SUBSCRIBE", {"destination": "tx", "id": "s", "subscription-type": "ANYCAST"})
    producer = await connected(server)
    producer.send("BEGIN", {"transaction": "t1"})
    producer.send("SEND", {"destination": "tx", "destination-type": "ANYCAST", "transaction": "t1"}, b"no")
    producer.send("ABORT", {"transaction": "t1"})
    producer.send("SEND", {"destination": "tx", "destination-type": "ANYCAST"}, b"yes")
    assert [m.body for m in consumer.messages()] == [b"yes"]
    assert producer.handler.transactions == {}


async def test_transacted_acks_apply_on_commit_and_come_back_on_abort(server):
    client = await connected(server)
    messages = await _fill(server, client, 2, ack="client-individual")
    q = queue(server, "work")
    client.send("BEGIN", {"transaction": "t"})
    client.send("ACK", {"id": messages[0].header("ack"), "transaction": "t"})
    assert q.messages_acknowledged == 0
    client.send("COMMIT", {"transaction": "t", "receipt": "done"})
    (receipt,) = await client.wait_frames(1)
    assert receipt.header("receipt-id") == "done"
    assert q.messages_acknowledged == 1

    client.send("BEGIN", {"transaction": "t"})
    client.send("ACK", {"id": messages[1].header("ack"), "transaction": "t"})
    client.send("ABORT", {"transaction": "t"})
    [again] = client.messages()
    assert again.body == b"1" and again.header("redelivered") == "true"
    assert q.messages_acknowledged == 1


async def test_nack_in_a_transaction_waits_for_commit(server):
    client = await connected(server)
    [message] = await _fill(server, client, 1, ack="client")
    client.send("BEGIN", {"transaction": "t"})
    client.send("NACK", {"id": message.header("ack"), "transaction": "t"})
    assert client.messages() == []
    client.send("COMMIT", {"transaction": "t"})
    [again] = client.messages()
    assert again.header("redelivered") == "true"


async def test_transactions_left_open_are_rolled_back_on_close(server):
    client = await connected(server)
    [message] = await _fill(server, client, 1, ack="client")
    client.send("BEGIN", {"transaction": "t"})
    client.send("ACK", {"id": message.header("ack"), "transaction": "t"})
    client.send("SEND", {"destination": "work", "destination-type": "ANYCAST", "transaction": "t"}, b"lost")
    client.handler.connection_lost(None)
    q = queue(server, "work")
    assert q.message_count == 1 and q.messages_acknowledged == 0


@pytest.mark.parametrize(
    ("frames", "text"),
    [
        ([("BEGIN", {})], "Need a transaction id to begin"),
        ([("BEGIN", {"transaction": "t"}), ("BEGIN", {"transaction": "t"})], "Transaction already started: t"),
        ([("COMMIT", {})], "mandatory to COMMIT"),
        ([("ABORT", {})], "mandatory to ABORT"),
        ([("COMMIT", {"transaction": "x"})], "No transaction started: x"),
        ([("ABORT", {"transaction": "x"})], "No transaction started: x"),
        ([("SEND", {"destination": "a", "transaction": "x"})], "No transaction started: x"),
    ],
)
async def test_transaction_errors(server, frames, text):
    client = await connected(server)
    for command, headers in frames:
        client.send(command, headers)
    assert text in client.error().header("message")


# -- cross-protocol and encoding ---------------------------------------------------------------


async def test_amqp_message_reaches_a_stomp_subscriber(server):
    from pybroker.protocol.amqp.codec import build_message
    from pybroker.protocol.amqp.message import amqp_to_core

    client = await connected(server)
    client.send("SUBSCRIBE", {"destination": "mixed", "id": "s", "subscription-type": "ANYCAST"})
    data = build_message(body="from amqp", body_kind="amqp-value", durable=True, priority=6,
                         properties={"correlation_id": "c9", "subject": "kind", "reply_to": "back"},
                         application_properties={"flag": True, "n": 3})
    message, _ = amqp_to_core(data, "mixed")
    session = server.create_session(principal=client.handler.session.principal, protocol="amqp",
                                    connection_id="amqp-1")
    session.send(message, RoutingType.ANYCAST)
    [frame] = client.messages()
    assert frame.body == b"from amqp"
    assert frame.header("correlation-id") == "c9"
    assert frame.header("type") == "kind"
    assert frame.header("reply-to") == "back"
    assert frame.header("priority") == "6" and frame.header("persistent") == "true"
    assert frame.header("flag") == "true" and frame.header("n") == "3"


async def test_stomp_1_0_leaves_out_headers_it_cannot_carry(server):
    client = await connected(server, version=None)
    client.send("SUBSCRIBE", {"destination": "enc", "id": "s", "subscription-type": "ANYCAST"})
    producer = await connected(server)
    producer.send("SEND", [("destination", "enc"), ("destination-type", "ANYCAST"),
                           ("multi", "line\nvalue"), ("plain", "ok")], b"x")
    [message] = client.messages()
    assert message.header("plain") == "ok"
    assert not message.has_header("multi")


async def test_a_full_address_is_an_error(server, monkeypatch):
    from pybroker.errors import AddressFullError

    def full(message: Any, routing_type: Any, *, auto_create: bool = True) -> Any:
        raise AddressFullError(f"AMQ229102: Address \"{message.address}\" is full")

    client = await connected(server)
    client.send("SEND", {"destination": "busy", "receipt": "r"}, b"warm-up")
    assert client.frames()[-1].command == "RECEIPT"
    monkeypatch.setattr(server.post_office, "route", full)
    client.send("SEND", {"destination": "busy", "receipt": "r2"}, b"x")
    error = client.error()
    assert error.header("message") == 'AMQ229102: Address "busy" is full'
    assert error.header("receipt-id") == "r2"


async def test_send_without_routing_type_to_a_queue_address(server):
    consumer = await connected(server)
    consumer.send("SUBSCRIBE", {"destination": "jobs", "id": "s", "subscription-type": "ANYCAST"})
    assert server.post_office.addresses["jobs"].routing_types == {RoutingType.ANYCAST}
    producer = await connected(server)
    for body in (b"1", b"2"):
        producer.send("SEND", {"destination": "jobs"}, body)
    # Artemis adds the default routing type (MULTICAST) to the address; the queue still gets them
    assert server.post_office.addresses["jobs"].routing_types == {RoutingType.ANYCAST, RoutingType.MULTICAST}
    assert [m.body for m in consumer.messages()] == [b"1", b"2"]
    # a queue subscription on an address with both types uses the queue named like it
    other = await connected(server)
    other.send("SUBSCRIBE", {"destination": "jobs", "id": "t"})
    assert other.handler.subscriptions["t"].queue_name == "jobs"
    assert not other.handler.subscriptions["t"].multicast


async def test_acceptor_parameters(server):
    client = Client(server, {"heartBeatToConnectionTtlModifier": "4", "connectionTtlMax": "8000",
                             "stompConsumerWindowSize": "123", "disableStompServerHeader": "true"})
    reply = client.connect("1.2", heart_beat="3000,0")
    assert reply.header("heart-beat") == "0,2000"  # TTL 12000 capped at 8000; 8000 / 4
    assert client.handler.connection_ttl_ms == 8000
    assert not reply.has_header("server")
    client.send("SUBSCRIBE", {"destination": "p", "id": "s", "ack": "client"})
    assert client.handler.subscriptions["s"].window == 123
    # bad values fall back to the defaults instead of failing every connection
    client = Client(server, {"heartBeatToConnectionTtlModifier": "-1", "connectionTtlMin": "x"})
    assert client.connect("1.2", heart_beat="100,0").header("heart-beat") == "0,500"
