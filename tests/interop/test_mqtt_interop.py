"""Real MQTT clients (aiomqtt 2.x and paho-mqtt 2.x, MQTT 3.1.1 and 5) against an embedded broker,
and messages crossing between MQTT and AMQP (python-qpid-proton)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from mqtt_raw import RawClient
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions
from proton import Message as AMQPMessage
from support import connect as amqp_connect
from support import send as amqp_send

from pybroker.broker.security import SecurityStore
from pybroker.config.parse import default_config
from pybroker.embedded import Broker
from pybroker.errors import SecurityError
from pybroker.protocol.mqtt.codec import (
    NEED_DATA,
    Connect,
    Disconnect,
    MQTTCodec,
    ReasonCode,
    Will,
)
from pybroker.testing import embedded_broker

pytestmark = pytest.mark.asyncio

V311 = aiomqtt.ProtocolVersion.V311
V5 = aiomqtt.ProtocolVersion.V5
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["3.1.1", "5"])
TIMEOUT = 10.0


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with embedded_broker() as running:
        yield running


def client(broker: Broker, identifier: str, version: aiomqtt.ProtocolVersion = V311, **kwargs: Any) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, identifier=identifier, protocol=version, **kwargs)


async def take(subscriber: aiomqtt.Client, count: int, timeout: float = TIMEOUT) -> list[aiomqtt.Message]:
    messages = []
    async with asyncio.timeout(timeout):
        async for message in subscriber.messages:
            messages.append(message)
            if len(messages) == count:
                return messages
    return messages


async def nothing_within(subscriber: aiomqtt.Client, seconds: float) -> None:
    """No message arrives within ``seconds`` (a negative check: the wait is the point)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in subscriber.messages:
                raise AssertionError(f"unexpected message {message.topic}: {message.payload!r}")


# --- QoS both directions ------------------------------------------------------------------------


@VERSIONS
async def test_qos_0_1_2_with_aiomqtt(broker: Broker, version: aiomqtt.ProtocolVersion) -> None:
    async with client(broker, "sub", version) as subscriber, client(broker, "pub", version) as publisher:
        for qos in (0, 1, 2):
            await subscriber.subscribe(f"levels/{qos}", qos=qos)
        for sent in (0, 1, 2):
            for qos in (0, 1, 2):
                await publisher.publish(f"levels/{qos}", f"{sent}->{qos}".encode(), qos=sent)
        messages = await take(subscriber, 9)
    got = {(m.topic.value, m.payload): m.qos for m in messages}
    for sent in (0, 1, 2):
        for qos in (0, 1, 2):
            assert got[(f"levels/{qos}", f"{sent}->{qos}".encode())] == min(sent, qos)
    assert "sub.levels.0" not in broker.server.queue_statistics()  # clean session: temporary


class Paho:
    """A paho-mqtt client on its own network thread; messages land in a thread-safe queue."""

    def __init__(self, port: int, client_id: str, *, v5: bool, clean: bool = True,
                 properties: PahoProperties | None = None, will: tuple[str, bytes, PahoProperties | None] | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.reason: Any = None
        self.disconnect_reason: Any = None
        self.v5 = v5
        protocol = paho.MQTTv5 if v5 else paho.MQTTv311
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
        if not v5:
            kwargs["clean_session"] = clean
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, **kwargs)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_disconnect = self._on_disconnect
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            topic, payload, will_properties = will
            self.client.will_set(topic, payload, qos=1, properties=will_properties)
        self.port = port
        self.clean = clean
        self.properties = properties

    def _on_connect(self, client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        self.reason = reason_code
        self.session_present = flags.session_present
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        self.disconnect_reason = reason_code
        self.disconnected.set()

    def start(self) -> Paho:
        if self.v5:
            self.client.connect("127.0.0.1", self.port, clean_start=self.clean, properties=self.properties)
        else:
            self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise AssertionError("paho did not connect")
        return self

    def subscribe(self, topic: str, qos: int = 1, **kwargs: Any) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        if self.v5:
            self.client.subscribe(topic, options=SubscribeOptions(qos=qos, **kwargs),
                                  properties=kwargs.pop("properties", None))
        else:
            self.client.subscribe(topic, qos)
        assert done.wait(TIMEOUT)

    def publish(self, topic: str, payload: bytes, qos: int = 1, **kwargs: Any) -> None:
        self.client.publish(topic, payload, qos, **kwargs).wait_for_publish(TIMEOUT)

    def take(self, count: int) -> list[paho.MQTTMessage]:
        return [self.messages.get(timeout=TIMEOUT) for _ in range(count)]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5"])
async def test_qos_0_1_2_with_paho(broker: Broker, v5: bool) -> None:
    def scenario() -> list[tuple[str, bytes, int]]:
        subscriber = Paho(broker.port, "paho-sub", v5=v5).start()
        publisher = Paho(broker.port, "paho-pub", v5=v5).start()
        try:
            subscriber.subscribe("paho/#", qos=2)
            for qos in (0, 1, 2):
                publisher.publish(f"paho/{qos}", b"q%d" % qos, qos)
            return sorted((m.topic, m.payload, m.qos) for m in subscriber.take(3))
        finally:
            publisher.stop()
            subscriber.stop()

    got = await asyncio.to_thread(scenario)
    assert got == [("paho/0", b"q0", 0), ("paho/1", b"q1", 1), ("paho/2", b"q2", 2)]


# --- retained messages --------------------------------------------------------------------------


@VERSIONS
async def test_retained_set_clear_and_on_subscribe(broker: Broker, version: aiomqtt.ProtocolVersion) -> None:
    async with client(broker, "retainer", version) as publisher:
        await publisher.publish("status/a", b"up", qos=1, retain=True)
        await publisher.publish("status/b", b"up", qos=1, retain=True)
        await publisher.publish("status/b", b"", qos=1, retain=True)  # cleared
    async with client(broker, "reader", version) as subscriber:
        await subscriber.subscribe("status/#", qos=1)
        [message] = await take(subscriber, 1)
        assert (message.topic.value, message.payload, message.retain) == ("status/a", b"up", True)
        await nothing_within(subscriber, 0.3)


async def test_retain_handling_with_aiomqtt(broker: Broker) -> None:
    async with client(broker, "retainer", V5) as publisher:
        await publisher.publish("rh/x", b"kept", qos=1, retain=True)
    async with client(broker, "reader", V5) as subscriber:
        await subscriber.subscribe("rh/x", options=SubscribeOptions(qos=1, retainHandling=2))
        await nothing_within(subscriber, 0.3)
        await subscriber.subscribe("rh/#", options=SubscribeOptions(qos=1, retainHandling=1))
        [message] = await take(subscriber, 1)
        assert message.retain and message.payload == b"kept"
        await subscriber.subscribe("rh/#", options=SubscribeOptions(qos=1, retainHandling=1))
        await nothing_within(subscriber, 0.3)  # not a new subscription: nothing again


# --- wills --------------------------------------------------------------------------------------


@VERSIONS
async def test_will_on_abnormal_close(broker: Broker, version: aiomqtt.ProtocolVersion) -> None:
    async with client(broker, "watcher", version) as watcher:
        await watcher.subscribe("wills/#", qos=1)
        raw, connack = await RawClient.connect(
            broker.port, Connect("dying", 5 if version == V5 else 4, will=Will("wills/dying", b"gone", 1))
        )
        assert connack.reason_code == 0
        raw.abort()
        [message] = await take(watcher, 1)
        assert message.payload == b"gone"


async def test_will_delay(broker: Broker) -> None:
    async with client(broker, "watcher", V5) as watcher:
        await watcher.subscribe("wills/late", qos=1)
        raw, _ = await RawClient.connect(broker.port, Connect(
            "delayed", 5, False, will=Will("wills/late", b"late", 1, properties=_will_delay(1)),
            properties=_session_expiry(60),
        ))
        loop = asyncio.get_running_loop()
        raw.abort()
        closed_at = loop.time()
        [message] = await take(watcher, 1, timeout=4)
        assert message.payload == b"late"
        assert loop.time() - closed_at >= 0.9


def _will_delay(seconds: int) -> Any:
    from pybroker.protocol.mqtt.properties import Properties

    return Properties(will_delay_interval=seconds)


def _session_expiry(seconds: int) -> Any:
    from pybroker.protocol.mqtt.properties import Properties

    return Properties(session_expiry_interval=seconds)


async def test_normal_disconnect_sends_no_will(broker: Broker) -> None:
    async with client(broker, "watcher", V311) as watcher:
        await watcher.subscribe("wills/polite", qos=1)
        async with client(broker, "polite", V311, will=aiomqtt.Will("wills/polite", b"no", 1)):
            pass
        await nothing_within(watcher, 0.3)


# --- takeover, keep alive, persistent sessions --------------------------------------------------


@pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5"])
async def test_client_id_takeover(broker: Broker, v5: bool) -> None:
    def scenario() -> Any:
        first = Paho(broker.port, "twin", v5=v5).start()
        second = Paho(broker.port, "twin", v5=v5)
        second.client.reconnect_delay_set(60, 60)
        first.client.reconnect_delay_set(60, 60)  # no automatic reconnect fight
        second.start()
        try:
            assert first.disconnected.wait(TIMEOUT)
            return first.disconnect_reason
        finally:
            first.client.loop_stop()
            second.stop()

    reason = await asyncio.to_thread(scenario)
    if v5:
        assert reason == ReasonCode.SESSION_TAKEN_OVER


async def test_keep_alive_timeout_closes_the_connection(broker: Broker) -> None:
    raw, connack = await RawClient.connect(broker.port, Connect("quiet", 5, keep_alive=1))
    assert connack.reason_code == 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    data = await raw.closed_by_server(timeout=5)
    assert loop.time() - start >= 1.4
    raw.codec.receive_data(data)
    packets = []
    while (packet := raw.codec.next_event()) is not NEED_DATA:
        packets.append(packet)
    assert any(isinstance(p, Disconnect) and p.reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT for p in packets)


@pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5"])
async def test_persistent_session_across_a_reconnect(broker: Broker, v5: bool) -> None:
    properties = None
    if v5:
        properties = PahoProperties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 300

    def scenario() -> tuple[bool, list[bytes]]:
        subscriber = Paho(broker.port, "persist", v5=v5, clean=False, properties=properties).start()
        subscriber.subscribe("persist/topic", qos=1)
        subscriber.stop()
        publisher = Paho(broker.port, "persist-pub", v5=v5).start()
        for index in range(3):
            publisher.publish("persist/topic", b"%d" % index, 1)
        publisher.stop()
        back = Paho(broker.port, "persist", v5=v5, clean=False, properties=properties).start()
        try:
            return back.session_present, [m.payload for m in back.take(3)]
        finally:
            back.stop()

    present, payloads = await asyncio.to_thread(scenario)
    assert present
    assert payloads == [b"0", b"1", b"2"]


JOURNAL_STORAGE = importlib.util.find_spec("pybroker.storage.journal_storage") is not None


@pytest.mark.skipif(not JOURNAL_STORAGE, reason="journal storage (pybroker.storage.journal_storage) "
                                                 "is not in this build yet")
async def test_persistent_session_and_retained_across_a_broker_restart(tmp_path: Any) -> None:
    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        async with client(broker, "survivor", V5, clean_start=False,
                          properties=_paho_session(3600)) as subscriber:
            await subscriber.subscribe("restart/#", qos=1)
        async with client(broker, "pub", V5) as publisher:
            await publisher.publish("restart/queued", b"waiting", qos=1)
            await publisher.publish("restart/state", b"retained", qos=1, retain=True)
    async with embedded_broker(persistence=True, data_dir=tmp_path) as broker:
        async with client(broker, "survivor", V5, clean_start=False,
                          properties=_paho_session(3600)) as subscriber:
            messages = await take(subscriber, 2)
            assert sorted(m.payload for m in messages) == [b"retained", b"waiting"]
        async with client(broker, "late", V311) as late:
            await late.subscribe("restart/state", qos=1)
            [message] = await take(late, 1)
            assert message.retain and message.payload == b"retained"


def _paho_session(seconds: int) -> PahoProperties:
    properties = PahoProperties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = seconds
    return properties


# --- subscriptions ------------------------------------------------------------------------------


async def test_shared_subscription(broker: Broker) -> None:
    async with client(broker, "w1", V5) as first, client(broker, "w2", V5) as second, \
            client(broker, "boss", V5) as publisher:
        await first.subscribe("$share/pool/tasks/#", qos=1)
        await second.subscribe("$share/pool/tasks/#", qos=1)
        for index in range(6):
            await publisher.publish("tasks/new", b"%d" % index, qos=1)
        got_first = await take(first, 3)
        got_second = await take(second, 3)
    payloads = sorted(m.payload for m in got_first + got_second)
    assert payloads == [b"%d" % i for i in range(6)]


@VERSIONS
async def test_wildcard_subscriptions(broker: Broker, version: aiomqtt.ProtocolVersion) -> None:
    async with client(broker, "wild", version) as subscriber, client(broker, "pub", version) as publisher:
        await subscriber.subscribe("home/+/temperature", qos=1)
        await subscriber.subscribe("garden/#", qos=1)
        for topic in ("home/kitchen/temperature", "home/kitchen/humidity", "garden", "garden/pond/level"):
            await publisher.publish(topic, topic.encode(), qos=1)
        messages = await take(subscriber, 3)
        await nothing_within(subscriber, 0.2)
    assert sorted(m.topic.value for m in messages) == ["garden", "garden/pond/level", "home/kitchen/temperature"]


async def test_user_properties_topic_alias_no_local_subscription_ids_with_paho(broker: Broker) -> None:
    def scenario() -> tuple[list[paho.MQTTMessage], list[paho.MQTTMessage]]:
        me = Paho(broker.port, "me", v5=True).start()
        other = Paho(broker.port, "other", v5=True).start()
        try:
            subscribe_properties = PahoProperties(PacketTypes.SUBSCRIBE)
            subscribe_properties.SubscriptionIdentifier = 17
            done = threading.Event()
            me.client.on_subscribe = lambda *args: done.set()
            me.client.subscribe("props/#", options=SubscribeOptions(qos=1, noLocal=True),
                                properties=subscribe_properties)
            assert done.wait(TIMEOUT)
            other.subscribe("props/#", qos=1)
            publish_properties = PahoProperties(PacketTypes.PUBLISH)
            publish_properties.UserProperty = [("origin", "me"), ("n", "1")]
            publish_properties.TopicAlias = 1
            publish_properties.ContentType = "application/json"
            me.publish("props/a", b"{}", 1, properties=publish_properties)
            alias_only = PahoProperties(PacketTypes.PUBLISH)
            alias_only.TopicAlias = 1
            me.publish("", b"[]", 1, properties=alias_only)
            from_other = PahoProperties(PacketTypes.PUBLISH)
            from_other.UserProperty = [("origin", "other")]
            other.publish("props/b", b"x", 1, properties=from_other)
            return me.take(1), other.take(3)
        finally:
            me.stop()
            other.stop()

    mine, theirs = await asyncio.to_thread(scenario)
    assert [m.topic for m in mine] == ["props/b"]  # no local: not its own two
    assert mine[0].properties.SubscriptionIdentifier == [17]
    assert mine[0].properties.UserProperty == [("origin", "other")]
    by_payload = {m.payload: m for m in theirs}
    assert by_payload[b"{}"].topic == "props/a"
    assert by_payload[b"[]"].topic == "props/a"  # the alias resolved
    assert by_payload[b"{}"].properties.UserProperty == [("origin", "me"), ("n", "1")]
    assert by_payload[b"{}"].properties.ContentType == "application/json"


# --- refusals and bad input ---------------------------------------------------------------------


class _Users:
    def authenticate(self, user: str | None, password: str | None) -> Any:
        if (user, password) != ("app", "good"):
            raise SecurityError(f"AMQ229031: Unable to validate user {user}")
        return type("P", (), {"user": user, "roles": {"app"}})()

    def allows_anonymous(self) -> bool:
        return False


@VERSIONS
async def test_bad_credentials(broker: Broker, version: aiomqtt.ProtocolVersion) -> None:
    broker.server.security = SecurityStore(
        enabled=True, authenticator=_Users(),
        repository=type("R", (), {"match": lambda self, address: {"send": {"app"}, "consume": {"app"}}})(),
    )
    with pytest.raises(aiomqtt.MqttCodeError) as failure:
        async with client(broker, "intruder", version, username="app", password="bad"):
            pass
    # paho reports the 3.1.1 return code 4 as its v5 equivalent 0x86
    assert failure.value.rc.value == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    async with client(broker, "legit", version, username="app", password="good") as legit:
        await legit.publish("ok", b"x", qos=1)


async def test_garbage_and_oversized_packets_leave_the_broker_up() -> None:
    configuration = default_config(port=0, persistence_enabled=False)
    acceptors = tuple(replace(a, host="127.0.0.1", params={**a.params, "maximumPacketSize": "4096"})
                      for a in configuration.acceptors)
    async with Broker(replace(configuration, acceptors=acceptors)) as broker:
        raw, connack = await RawClient.connect(broker.port, Connect("garbage", 5))
        assert connack.properties.maximum_packet_size == 4096
        raw.writer.write(b"\x30\xff\xff\xff\xff\x7f")  # a remaining length of five bytes
        assert b"\xe0" in await raw.closed_by_server()  # DISCONNECT (malformed packet)
        big, _ = await RawClient.connect(broker.port, Connect("big", 4))
        unlimited = MQTTCodec("client")
        unlimited.send(Connect("x", 4))
        from pybroker.protocol.mqtt.codec import Publish

        big.writer.write(unlimited.send(Publish("t", b"x" * 10_000, 0)))
        assert await big.closed_by_server() == b""  # MQTT 3: closed, nothing said
        async with client(broker, "after", V5) as fine:
            await fine.publish("still/up", b"yes", qos=1)


# --- across protocols ---------------------------------------------------------------------------


async def test_mqtt_to_amqp_and_back(broker: Broker) -> None:
    port = broker.port
    amqp = await asyncio.to_thread(amqp_connect, port)
    try:
        receiver = await asyncio.to_thread(amqp.create_receiver, "sensors.room1.temp", credit=10)
        async with client(broker, "bridge", V5) as mqtt_client:
            properties = PahoProperties(PacketTypes.PUBLISH)
            properties.UserProperty = [("unit", "C")]
            properties.PayloadFormatIndicator = 1
            properties.ContentType = "text/plain"
            await mqtt_client.publish("sensors/room1/temp", b"21.5", qos=1, properties=properties)
            message: AMQPMessage = await asyncio.to_thread(receiver.receive, TIMEOUT)
            await asyncio.to_thread(receiver.accept)
            assert message.body == "21.5"  # UTF-8 text -> a string body
            assert message.properties == {"unit": "C"}
            assert message.content_type == "text/plain"
            # and AMQP -> MQTT: "/" is "." in core addresses
            await mqtt_client.subscribe("alerts/+/fire", qos=1)
            await asyncio.to_thread(amqp_send, port, "alerts.kitchen.fire", ["smoke"], capability="topic",
                                    properties={"level": 3})
            [received] = await take(mqtt_client, 1)
            assert received.topic.value == "alerts/kitchen/fire"
            assert received.payload == b"smoke"
            assert received.properties.PayloadFormatIndicator == 1
            assert ("level", "3") in received.properties.UserProperty
    finally:
        await asyncio.to_thread(amqp.close)


async def test_mqtt_publish_reaches_an_amqp_queue(broker: Broker) -> None:
    port = broker.port
    # an anycast queue "orders": an MQTT publish to "orders" lands in it, an MQTT subscription
    # to it consumes from it (as Artemis)
    await asyncio.to_thread(amqp_send, port, "orders", ["first"], capability="queue")
    async with client(broker, "mq", V311) as mqtt_client:
        await mqtt_client.publish("orders", b"second", qos=1)

        def receive_two() -> list[Any]:
            connection = amqp_connect(port)
            try:
                receiver = connection.create_receiver("orders", credit=10)
                bodies = []
                for _ in range(2):
                    message = receiver.receive(timeout=TIMEOUT)  # its body views its buffer
                    body = message.body
                    bodies.append(bytes(body) if isinstance(body, memoryview) else body)
                    receiver.accept()
                return bodies
            finally:
                connection.close()

        bodies = await asyncio.to_thread(receive_two)
        assert bodies == ["first", b"second"]  # bytes without a payload format: a data section
