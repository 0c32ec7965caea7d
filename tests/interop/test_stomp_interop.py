"""The stomp.py client (STOMP 1.0, 1.1, 1.2) against an embedded broker on 127.0.0.1.

The broker runs in the test's event loop; each client scenario runs in a thread (stomp.py is a
blocking client with a receiver thread). Waits are on the listener's queues and events, with
timeouts.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import stomp
import stomp.exception
from support import Capability, connect, send, until

from pybroker.config.model import RoutingType
from pybroker.config.parse import parse_config
from pybroker.embedded import Broker
from pybroker.protocol.stomp.codec import NEED_DATA, Frame, StompCodec
from pybroker.protocol.stomp.message import stomp_to_core

pytestmark = pytest.mark.asyncio

TIMEOUT = 5.0
_CONNECTIONS = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}


class Listener(stomp.ConnectionListener):
    """Everything a connection received, as queues and events to wait on."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.errors: queue.Queue[Any] = queue.Queue()
        self.receipts: queue.Queue[str] = queue.Queue()
        self.heartbeats = 0
        self.beat = threading.Condition()
        self.disconnected = threading.Event()

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_error(self, frame: Any) -> None:
        self.errors.put(frame)

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def on_heartbeat(self) -> None:
        with self.beat:
            self.heartbeats += 1
            self.beat.notify_all()

    def on_disconnected(self) -> None:
        self.disconnected.set()

    def next(self, timeout: float = TIMEOUT) -> Any:
        return self.messages.get(timeout=timeout)

    def receipt(self, timeout: float = TIMEOUT) -> str:
        return self.receipts.get(timeout=timeout)

    def wait_heartbeats(self, count: int, timeout: float = TIMEOUT) -> bool:
        with self.beat:
            return self.beat.wait_for(lambda: self.heartbeats >= count, timeout)


def open_stomp(port: int, version: str = "1.2", *, login: str | None = None, passcode: str | None = None,
               heartbeats: tuple[int, int] = (0, 0), **headers: str) -> tuple[Any, Listener]:
    options: dict[str, Any] = {"reconnect_attempts_max": 1}
    if version != "1.0":  # STOMP 1.0 has no heart-beats
        options["heartbeats"] = heartbeats
    connection = _CONNECTIONS[version]([("127.0.0.1", port)], **options)
    listener = Listener()
    connection.set_listener("test", listener)
    connection.connect(login, passcode, wait=True, headers=headers)
    return connection, listener


def close_stomp(connection: Any, listener: Listener) -> None:
    """DISCONNECT with a receipt and wait until the broker closed the socket."""
    if connection.is_connected():
        connection.disconnect(receipt="bye")
        listener.disconnected.wait(TIMEOUT)


def in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    return asyncio.to_thread(function, *args, **kwargs)


def anycast(**headers: str) -> dict[str, str]:
    return {"destination-type": "ANYCAST", **headers}


async def broker_from_xml(tmp_path: Path, core: str) -> Broker:
    if "<security-enabled>" not in core:
        core += "<security-enabled>false</security-enabled>"
    xml = f"""<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>false</persistence-enabled>
      <acceptors><acceptor name="a">tcp://127.0.0.1:0</acceptor></acceptors>{core}
      </core></configuration>"""
    (tmp_path / "broker.xml").write_text(xml)
    configuration = parse_config(xml, file=str(tmp_path / "broker.xml"), instance_dir=tmp_path)
    broker = Broker(configuration, etc_dir=tmp_path)
    await broker.start()
    return broker


# -- send / receive ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
async def test_send_and_receive_in_every_version(pybroker_broker, version):
    port = pybroker_broker.port

    def scenario() -> Any:
        connection, listener = open_stomp(port, version)
        try:
            connection.subscribe("greetings", id="s1", ack="auto", headers={"subscription-type": "ANYCAST"})
            connection.send("greetings", "héllo", headers=anycast(colour="blue", receipt="r1"))
            assert listener.receipt() == "r1"
            return listener.next()
        finally:
            close_stomp(connection, listener)

    frame = await in_thread(scenario)
    assert frame.body == "héllo"
    assert frame.headers["destination"] == "greetings"
    assert frame.headers["colour"] == "blue"
    assert frame.headers["subscription"] == "s1"
    assert frame.headers["redelivered"] == "false"
    assert pybroker_broker.server.sessions == {}
    assert pybroker_broker.server.post_office.queues["greetings"].message_count == 0


async def test_topic_fan_out_and_temporary_subscription_queues(pybroker_broker):
    port = pybroker_broker.port

    def scenario() -> list[str]:
        subscribers = [open_stomp(port) for _ in range(3)]
        try:
            for index, (connection, _) in enumerate(subscribers):
                connection.subscribe("news.sport", id=str(index), headers={"receipt": f"sub{index}"})
            for _, listener in subscribers:
                listener.receipt()
            producer, plistener = open_stomp(port)
            producer.send("news.sport", "goal", headers={"receipt": "p"})
            plistener.receipt()
            close_stomp(producer, plistener)
            return [listener.next().body for _, listener in subscribers]
        finally:
            for connection, listener in subscribers:
                close_stomp(connection, listener)

    assert await in_thread(scenario) == ["goal"] * 3
    assert pybroker_broker.server.post_office.bindings["news.sport"] == []


# -- acknowledgement ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "version", "left"),
    [("client", "1.2", ["2"]), ("client-individual", "1.2", ["0", "2"]), ("client", "1.1", ["2"]),
     ("client", "1.0", ["2"])],
)
async def test_ack_modes(pybroker_broker, mode, version, left):
    port = pybroker_broker.port
    destination = f"acks.{mode}.{version}"

    def scenario() -> list[Any]:
        producer, plistener = open_stomp(port)
        for index in range(3):
            producer.send(destination, str(index), headers=anycast())
        producer.send(destination, "end", headers=anycast(receipt="sent"))
        plistener.receipt()
        close_stomp(producer, plistener)

        connection, listener = open_stomp(port, version)
        connection.subscribe(destination, id="s", ack=mode, headers={"subscription-type": "ANYCAST"})
        frames = [listener.next() for _ in range(4)]
        second = frames[1].headers
        if version == "1.2":
            connection.ack(second["ack"], receipt="acked")
        elif version == "1.1":
            connection.ack(second["message-id"], "s", receipt="acked")
        else:
            connection.ack(second["message-id"], receipt="acked")
        assert listener.receipt() == "acked"
        close_stomp(connection, listener)

        again, alistener = open_stomp(port)
        again.subscribe(destination, id="s", ack="client-individual", headers={"subscription-type": "ANYCAST"})
        redelivered = [alistener.next() for _ in range(len(left) + 1)]
        for frame in redelivered:
            again.ack(frame.headers["ack"])
        close_stomp(again, alistener)
        return redelivered

    redelivered = await in_thread(scenario)
    assert [f.body for f in redelivered] == [*left, "end"]
    assert all(f.headers["redelivered"] == "true" for f in redelivered)


async def test_nack_until_the_dead_letter_queue(pybroker_broker):
    port = pybroker_broker.port

    def scenario() -> tuple[list[str], Any]:
        connection, listener = open_stomp(port)
        connection.subscribe("poison", id="s", ack="client-individual", headers={"subscription-type": "ANYCAST"})
        connection.send("poison", "bad", headers=anycast())
        flags = []
        for _ in range(10):  # max-delivery-attempts of the default address settings
            frame = listener.next()
            flags.append(frame.headers["redelivered"])
            connection.nack(frame.headers["ack"])
        connection.subscribe("DLQ", id="dlq", headers={"subscription-type": "ANYCAST"})
        dead = listener.next()
        close_stomp(connection, listener)
        return flags, dead

    flags, dead = await in_thread(scenario)
    assert flags == ["false"] + ["true"] * 9
    assert dead.body == "bad"
    assert dead.headers["destination"] == "DLQ"
    assert dead.headers["_AMQ_ORIG_ADDRESS"] == "poison"
    assert pybroker_broker.server.post_office.queues["poison"].message_count == 0


# -- transactions and receipts ------------------------------------------------------------------


async def test_transactions_commit_and_abort(pybroker_broker):
    port = pybroker_broker.port

    def scenario() -> list[str]:
        connection, listener = open_stomp(port)
        connection.subscribe("tx", id="s", ack="client-individual", headers={"subscription-type": "ANYCAST"})
        aborted = connection.begin()
        connection.send("tx", "dropped", headers=anycast(transaction=aborted))
        connection.abort(aborted)
        committed = connection.begin()
        connection.send("tx", "one", headers=anycast(transaction=committed))
        connection.send("tx", "two", headers=anycast(transaction=committed))
        connection.commit(committed, headers={"receipt": "c1"})
        assert listener.receipt() == "c1"
        bodies = [listener.next(), listener.next()]
        # an ACK inside an aborted transaction gives the message back
        undo = connection.begin()
        connection.ack(bodies[0].headers["ack"], transaction=undo)
        connection.abort(undo)
        again = listener.next()
        connection.ack(again.headers["ack"])
        connection.ack(bodies[1].headers["ack"], receipt="done")
        assert listener.receipt() == "done"
        close_stomp(connection, listener)
        return [f.body for f in bodies] + [again.body + ":" + again.headers["redelivered"]]

    assert await in_thread(scenario) == ["one", "two", "one:true"]
    assert pybroker_broker.server.post_office.queues["tx"].message_count == 0


async def test_error_frame_carries_the_receipt_id_and_closes(tmp_path):
    broker = await broker_from_xml(tmp_path, """
      <address-settings><address-setting match="#">
        <auto-create-addresses>false</auto-create-addresses><auto-create-queues>false</auto-create-queues>
      </address-setting></address-settings>""")
    try:
        def scenario() -> Any:
            connection, listener = open_stomp(broker.port)
            connection.send("missing", "x", headers={"receipt": "r7"})
            error = listener.errors.get(timeout=TIMEOUT)
            assert listener.disconnected.wait(TIMEOUT)
            return error

        error = await in_thread(scenario)
        assert error.headers["message"] == "AMQ339001: Destination does not exist: missing"
        assert error.headers["receipt-id"] == "r7"
    finally:
        await broker.stop()


async def test_selectors(pybroker_broker):
    port = pybroker_broker.port

    def scenario() -> list[tuple[str, str]]:
        connection, listener = open_stomp(port)
        connection.subscribe("paint", id="topic", headers={"selector": "colour = 'red'"})
        # STOMP header values are strings: a numeric comparison needs Artemis's conversion prefix
        connection.subscribe("paint.q", id="queue", headers={
            "selector": "convert_string_expressions:size > 2", "subscription-type": "ANYCAST",
            "receipt": "s"})
        listener.receipt()
        for colour, size in (("blue", 3), ("red", 1), ("red", 5)):
            connection.send("paint", colour, headers={"colour": colour})
            connection.send("paint.q", f"{colour}{size}", headers=anycast(size=str(size)))
        got = sorted((f.headers["subscription"], f.body) for f in (listener.next() for _ in range(4)))
        close_stomp(connection, listener)
        return got

    got = await in_thread(scenario)
    assert got == [("queue", "blue3"), ("queue", "red5"), ("topic", "red"), ("topic", "red")]
    # the queue keeps what the selector skipped
    assert pybroker_broker.server.post_office.queues["paint.q"].message_count == 1


async def test_durable_subscription_survives_reconnect(pybroker_broker):
    port = pybroker_broker.port
    server = pybroker_broker.server

    def subscribe_and_leave() -> None:
        connection, listener = open_stomp(port, **{"client-id": "reader"})
        connection.subscribe("events", id="d", ack="client-individual",
                             headers={"durable-subscription-name": "audit", "receipt": "s"})
        listener.receipt()
        close_stomp(connection, listener)

    def publish() -> None:
        producer, listener = open_stomp(port)
        for body in ("first", "second"):
            producer.send("events", body, headers={"persistent": "true"})
        producer.send("events", "third", headers={"receipt": "p"})
        listener.receipt()
        close_stomp(producer, listener)

    def come_back() -> list[str]:
        connection, listener = open_stomp(port, **{"client-id": "reader"})
        connection.subscribe("events", id="d", headers={"durable-subscription-name": "audit"})
        bodies = [listener.next().body for _ in range(3)]
        connection.unsubscribe("d", headers={"durable-subscription-name": "audit", "receipt": "u"})
        listener.receipt()
        close_stomp(connection, listener)
        return bodies

    await in_thread(subscribe_and_leave)
    assert server.post_office.queues["reader.audit"].durable
    await in_thread(publish)
    assert server.post_office.queues["reader.audit"].message_count == 3
    assert await in_thread(come_back) == ["first", "second", "third"]
    assert "reader.audit" not in server.post_office.queues


# -- heart-beats ----------------------------------------------------------------------------------


async def test_heart_beats_both_ways_keep_the_connection(pybroker_broker):
    port = pybroker_broker.port

    def scenario() -> tuple[bool, bool]:
        connection, listener = open_stomp(port, heartbeats=(500, 500))
        # three server heart-beats take longer than the 1 s TTL the client's beats must renew
        beats = listener.wait_heartbeats(3, timeout=5)
        alive = connection.is_connected()
        close_stomp(connection, listener)
        return beats, alive

    beats, alive = await in_thread(scenario)
    assert beats and alive


def _raw(port: int, payload: bytes, *, timeout: float = TIMEOUT) -> bytes:
    """Send ``payload`` and read until the broker closes the socket (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        chunks = []
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before it read everything: what it wrote may still be readable
        try:
            while data := sock.recv(65536):
                chunks.append(data)
        except TimeoutError:
            return b"".join(chunks) + b"<timeout>"
        except ConnectionResetError:
            # unread input makes the peer's close a reset, which may discard its last bytes
            return b"".join(chunks) + b"<reset>"
        return b"".join(chunks)


async def test_a_silent_client_is_closed_after_its_heart_beat_ttl(pybroker_broker):
    reply = await in_thread(
        _raw, pybroker_broker.port, b"CONNECT\naccept-version:1.2\nheart-beat:100,0\n\n\x00"
    )
    assert not reply.endswith(b"<timeout>")
    assert reply.startswith(b"CONNECTED\n")
    assert b"heart-beat:0,500\n" in reply
    assert b"ERROR\n" in reply and b"AMQ229014" in reply and b"1000ms connection TTL" in reply


# -- security ----------------------------------------------------------------------------------------


_PROPERTIES_MODULE = "org.apache.activemq.artemis.spi.core.security.jaas.PropertiesLoginModule"


async def test_bad_login_is_refused(tmp_path):
    (tmp_path / "login.config").write_text(
        f'activemq {{\n {_PROPERTIES_MODULE} required\n'
        ' org.apache.activemq.jaas.properties.user="artemis-users.properties"\n'
        ' org.apache.activemq.jaas.properties.role="artemis-roles.properties";\n};\n'
    )
    (tmp_path / "artemis-users.properties").write_text("admin = secret\n")
    (tmp_path / "artemis-roles.properties").write_text("amq = admin\n")
    permissions = "".join(
        f'<permission type="{p}" roles="amq"/>'
        for p in ("send", "consume", "createAddress", "createDurableQueue", "createNonDurableQueue",
                  "deleteNonDurableQueue")
    )
    broker = await broker_from_xml(
        tmp_path,
        f'<security-enabled>true</security-enabled><security-settings><security-setting match="#">'
        f'{permissions}</security-setting></security-settings>',
    )
    try:
        def bad(login: str | None, passcode: str | None) -> Any:
            connection = stomp.Connection12([("127.0.0.1", broker.port)], reconnect_attempts_max=1)
            listener = Listener()
            connection.set_listener("test", listener)
            with pytest.raises(stomp.exception.ConnectFailedException):
                connection.connect(login, passcode, wait=True)
            return listener.errors.get(timeout=TIMEOUT)

        error = await in_thread(bad, "admin", "wrong")
        assert error.headers["message"] == "Security Error occurred: User name [admin] or password is invalid"
        error = await in_thread(bad, None, None)
        assert "User name [None]" in error.headers["message"]

        def good() -> str:
            connection, listener = open_stomp(broker.port, login="admin", passcode="secret")
            connection.subscribe("secure", id="s", headers={"subscription-type": "ANYCAST"})
            connection.send("secure", "ok", headers=anycast())
            body = listener.next().body
            close_stomp(connection, listener)
            return body

        assert await in_thread(good) == "ok"
    finally:
        await broker.stop()


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expect_error"),
    [
        (b"CONNECT\naccept-version:1.2\n\n\x00GARBAGE\n\n\x00", b"unknown command"),
        (b"CONNECT\naccept-version:1.2\n\n\x00SEND\ndestination:a\nx:" + b"y" * 20000 + b"\n\n\x00",
         b"longer than"),
        (b"CONNECT\naccept-version:1.2\n\n\x00SEND\ndestination:a\ncontent-length:999999999\n\n", b"larger than"),
        (b"CONNECT\naccept-version:1.2\n\n\x00SEND\ndestination:a\n\n" + b"z" * (11 * 1024 * 1024), b"larger than"),
        # not a STOMP connection: protocol detection refuses it without a reply
        (b"SUBSCRIBE\ndestination:a\n\n\x00", None),
        (b"\xff\xfe\x00binary noise" * 4, None),
    ],
    ids=["garbage-frame", "oversized-header", "huge-content-length", "oversized-body", "no-connect", "noise"],
)
async def test_bad_frames_close_only_that_connection(pybroker_broker, payload, expect_error):
    port = pybroker_broker.port

    def scenario() -> tuple[bytes, str]:
        bystander, listener = open_stomp(port)
        bystander.subscribe("alive", id="s", headers={"subscription-type": "ANYCAST"})
        reply = _raw(port, payload)
        bystander.send("alive", "still here", headers=anycast())
        body = listener.next().body
        close_stomp(bystander, listener)
        return reply, body

    reply, body = await in_thread(scenario)
    assert not reply.endswith(b"<timeout>"), "the broker kept a broken connection open"
    if reply.endswith(b"<reset>"):
        assert payload.endswith(b"z" * 1000), reply  # only the body flood may end in a reset
    elif expect_error is not None:
        assert b"ERROR\n" in reply and expect_error in reply
    else:
        assert reply == b""
    assert body == "still here"


# -- cross-protocol ----------------------------------------------------------------------------------


async def test_stomp_to_amqp(pybroker_broker):
    port = pybroker_broker.port

    def produce() -> None:
        connection, listener = open_stomp(port)
        connection.send("cross.in", "text body", content_type="text/plain", headers=anycast(kind="t"))
        connection.send("cross.in", b"\x00\x01binary", content_type="application/octet-stream",
                        headers=anycast(receipt="sent"))
        listener.receipt()
        close_stomp(connection, listener)

    def consume() -> list[Any]:
        connection = connect(port)
        try:
            receiver = connection.create_receiver("cross.in", options=Capability("queue"), credit=10)
            messages = []
            for _ in range(2):
                message = receiver.receive(timeout=TIMEOUT)
                # binary bodies can be views into proton's buffer: copy at once
                body = message.body if isinstance(message.body, str) else bytes(message.body)
                messages.append((body, message.content_type, dict(message.properties or {})))
                receiver.accept()
            return messages
        finally:
            connection.close()

    await in_thread(produce)
    (text, text_type, text_properties), (binary, binary_type, _) = await in_thread(consume)
    assert text == "text body" and text_type == "text/plain" and text_properties == {"kind": "t"}
    assert binary == b"\x00\x01binary" and binary_type == "application/octet-stream"


async def test_amqp_to_stomp(pybroker_broker):
    port = pybroker_broker.port
    await in_thread(send, port, "cross.out", ["from amqp"], durable=True, properties={"origin": "proton"})

    def consume() -> Any:
        connection, listener = open_stomp(port)
        connection.subscribe("cross.out", id="s", headers={"subscription-type": "ANYCAST"})
        frame = listener.next()
        close_stomp(connection, listener)
        return frame

    frame = await in_thread(consume)
    assert frame.body == "from amqp"
    assert frame.headers["origin"] == "proton"
    assert frame.headers["persistent"] == "true"
    assert frame.headers["destination"] == "cross.out"


# -- back-pressure ----------------------------------------------------------------------------------


async def test_a_consumer_that_does_not_read_holds_the_rest_in_the_queue(pybroker_broker):
    server = pybroker_broker.server
    count, size = 4000, 4096
    body = b"m" * size
    post_office = server.post_office
    post_office.create_queue("flood", "flood", RoutingType.ANYCAST)
    for _ in range(count):
        post_office.route(stomp_to_core(Frame("SEND", [], body), "flood", routing_type=None, prefix=None,
                                        now_ms=0), None)
    flood = post_office.queues["flood"]
    sock = await in_thread(socket.create_connection, ("127.0.0.1", pybroker_broker.port), TIMEOUT)
    try:
        sock.sendall(b"CONNECT\naccept-version:1.2\n\n\x00"
                     b"SUBSCRIBE\ndestination:flood\nid:s\nsubscription-type:ANYCAST\n\n\x00")

        def paused() -> bool:
            handlers = [h for h in pybroker_broker.handlers if getattr(h, "subscriptions", None)]
            return bool(handlers) and handlers[0].write_blocked

        await until(paused)
        delivered = flood.messages_acknowledged  # auto mode: acknowledged when written
        assert 0 < delivered < count and flood.message_count == count - delivered

        def read_all() -> int:
            decoder = StompCodec()
            decoder.set_version("1.2")
            frames = 0
            while frames < count + 1:  # CONNECTED + the messages
                data = sock.recv(1 << 20)
                assert data, "closed early"
                decoder.receive_data(data)
                while (event := decoder.next_event()) is not NEED_DATA:
                    if isinstance(event, Frame):
                        frames += 1
            return frames - 1

        assert await in_thread(read_all) == count
        assert flood.message_count == 0
    finally:
        sock.close()
