"""A persistent MQTT session survives a shared-store HA failover (MQTT 3.1.1 and 5).

A subscriber with a persistent session (3.1.1 clean session 0; v5 clean start 0 and a session
expiry interval) subscribes at QoS 1 to a wildcard filter on the primary and goes away; a
publisher sends QoS 1 messages and a retained one; the primary goes away (as after a crash, or
stopped with failover-on-shutdown) and the backup takes over from the shared store. The
subscriber then connects to the *backup* with the same client id and must find its session
(session present), every queued message exactly once and in order, the retained message on a
re-subscribe, and a subscription that still routes new messages.

The subscriber is a paho-mqtt client (it shows session present, DUP and lets the test hold back
PUBACKs); the publisher is aiomqtt. Both speak to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from mqtt_raw import RawClient
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from pybroker.protocol.mqtt.codec import ConnAck, Connect
from pybroker.protocol.mqtt.packets import SubAck, Subscribe, Subscription
from pybroker.protocol.mqtt.properties import EMPTY_PROPERTIES, Properties
from pybroker.testing.ha import HAPair, ProcessHAPair

pytestmark = pytest.mark.asyncio

#: generous: the machine is shared and noisy; a pass takes well under a second of waiting
TIMEOUT = 20.0
#: how long "nothing more arrives" is watched for (duplicates would be in flight by then)
QUIET = 0.5
COUNT = 20
FILTER = "plant/+/temperature/#"
VERSIONS = pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5"])


class Subscriber:
    """A paho-mqtt client with a persistent session, driven from the event loop through threads."""

    def __init__(self, port: int, client_id: str, *, v5: bool, manual_ack: bool = False) -> None:
        self.port = port
        self.v5 = v5
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self.reason: Any = None
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": paho.MQTTv5 if v5 else paho.MQTTv311}
        if not v5:
            kwargs["clean_session"] = False
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, **kwargs)
        self.client.reconnect_delay_set(60, 60)  # never a reconnect of its own to a dead node
        self.client.manual_ack_set(manual_ack)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)

    def _on_connect(self, client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        self.reason = reason_code
        self.session_present = flags.session_present
        self.connected.set()

    def _connect(self) -> None:
        if self.v5:
            properties = PahoProperties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
            self.client.connect("127.0.0.1", self.port, clean_start=False, properties=properties)
        else:
            self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise AssertionError(f"paho did not connect to port {self.port}")
        assert not self.reason.is_failure, self.reason

    async def connect(self) -> Subscriber:
        await asyncio.to_thread(self._connect)
        return self

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        done = threading.Event()
        granted: list[Any] = []

        def on_subscribe(client, userdata, mid, reason_codes, properties):  # type: ignore[no-untyped-def]
            granted.extend(reason_codes)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(topic_filter, qos)
        assert await asyncio.to_thread(done.wait, TIMEOUT), "no SUBACK"
        assert [int(code.value) if hasattr(code, "value") else int(code) for code in granted] == [qos]

    async def barrier(self) -> None:
        """A retained QoS 1 publish (to a topic outside ``FILTER``) waited for to its PUBACK.

        The server read the PUBACKs sent before it, and the PUBACK of a retained message comes
        once its copy is durable -- with every journal record before it, so those
        acknowledgements too. (A publish that reaches no durable queue is acknowledged at once:
        it would prove nothing about the acknowledgements after a kill -9.)"""
        info = self.client.publish("plant/hall/pressure", b"barrier", 1, retain=True)
        await asyncio.to_thread(info.wait_for_publish, TIMEOUT)
        assert info.is_published()

    async def take(self, count: int) -> list[paho.MQTTMessage]:
        def take() -> list[paho.MQTTMessage]:
            taken = []
            for _ in range(count):
                try:
                    taken.append(self.messages.get(timeout=TIMEOUT))
                except queue.Empty:
                    raise AssertionError(
                        f"{len(taken)} of {count} messages within {TIMEOUT} s: "
                        f"{[m.payload for m in taken]}"
                    ) from None
            return taken

        return await asyncio.to_thread(take)

    async def nothing_more(self) -> None:
        """No further message within ``QUIET`` seconds (no duplicate, nothing unexpected)."""

        def check() -> None:
            with contextlib.suppress(queue.Empty):
                message = self.messages.get(timeout=QUIET)
                raise AssertionError(
                    f"unexpected message {message.topic}: {message.payload!r} dup={message.dup}"
                )

        await asyncio.to_thread(check)

    def ack(self, message: paho.MQTTMessage) -> None:
        self.client.ack(message.mid, message.qos)

    async def disconnect(self) -> None:
        """A normal DISCONNECT (the persistent session stays on the server)."""
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    async def abandon(self) -> None:
        """The server went away under the client: stop its network thread."""
        await asyncio.to_thread(self.client.loop_stop)
        with contextlib.suppress(Exception):
            self.client.disconnect()


def publisher(port: int, v5: bool, identifier: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", port, identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        timeout=TIMEOUT,
    )


def expected_topic(index: int) -> str:
    return f"plant/line{index % 3}/temperature/celsius"


async def prepare(port: int, v5: bool, client_id: str) -> list[tuple[str, bytes]]:
    """The persistent subscription on the primary, then COUNT queued messages and a retained one
    (which the subscription also queues, as a normal message). Returns what was queued, in order."""
    first = await Subscriber(port, client_id, v5=v5).connect()
    assert first.session_present is False
    await first.subscribe(FILTER, 1)
    await first.disconnect()
    queued = [(expected_topic(index), b"reading-%d" % index) for index in range(COUNT)]
    async with publisher(port, v5, f"{client_id}-pub") as client:
        for topic, payload in queued:
            await client.publish(topic, payload, qos=1)
        await client.publish("plant/hall/temperature/state", b"retained-state", qos=1, retain=True)
        await client.publish("plant/hall/pressure", b"not-matching", qos=1)
    return [*queued, ("plant/hall/temperature/state", b"retained-state")]


async def after_failover(port: int, v5: bool, subscriber: Subscriber, client_id: str) -> None:
    """On the backup: the retained message on a re-subscribe, then a new publish through the
    recovered subscription, then nothing else."""
    await subscriber.subscribe(FILTER, 1)
    [retained] = await subscriber.take(1)
    assert (retained.topic, retained.payload, retained.retain) == (
        "plant/hall/temperature/state", b"retained-state", True,
    )
    async with publisher(port, v5, f"{client_id}-pub2") as client:
        await client.publish("plant/line9/temperature/celsius", b"after-failover", qos=1)
    [fresh] = await subscriber.take(1)
    assert (fresh.topic, fresh.payload, fresh.qos, fresh.dup, fresh.retain) == (
        "plant/line9/temperature/celsius", b"after-failover", 1, False, False,
    )
    await subscriber.nothing_more()


async def hold(port: int, v5: bool, client_id: str, queued: list[tuple[str, bytes]],
               acked: int) -> Subscriber:
    """Back on the primary: every queued message delivered (none a redelivery), only the first
    ``acked`` acknowledged. The caller makes the primary go, then abandons the holder."""
    holder = await Subscriber(port, client_id, v5=v5, manual_ack=True).connect()
    assert holder.session_present is True
    delivered = await holder.take(len(queued))
    assert [(m.topic, m.payload) for m in delivered] == queued
    assert not any(m.dup for m in delivered)
    for message in delivered[:acked]:
        holder.ack(message)
    await holder.barrier()
    return holder


async def recovered(port: int, v5: bool, client_id: str, expected: list[tuple[str, bytes]],
                    flags: Callable[[Any], bool]) -> None:
    """On the backup: the session is there, ``expected`` arrives once and in order with
    ``flags`` true of every message, nothing else; then :func:`after_failover`."""
    back = await Subscriber(port, client_id, v5=v5).connect()
    try:
        assert back.session_present is True
        messages = await back.take(len(expected))
        assert [(m.topic, m.payload) for m in messages] == expected
        assert all(flags(m) for m in messages)
        await back.nothing_more()
        await after_failover(port, v5, back, client_id)
    finally:
        await back.disconnect()


@VERSIONS
async def test_persistent_session_survives_a_primary_crash(tmp_path: Path, v5: bool) -> None:
    """In-process pair, ``fail_primary()`` (the primary leaves the store without a state write,
    as after a crash; the real SIGKILL is the process test below). The subscriber was away: all
    queued messages come from the backup once, in order, never sent before (no DUP)."""
    client_id = f"crash-{'v5' if v5 else 'v3'}"
    async with HAPair(tmp_path) as pair:
        queued = await prepare(pair.primary.port, v5, client_id)
        await pair.fail_primary()
        await pair.wait_backup_active(timeout=TIMEOUT)
        assert pair.backup.active
        await recovered(pair.backup.port, v5, client_id, queued,
                        lambda m: m.qos == 1 and not m.retain and not m.dup)


@VERSIONS
async def test_persistent_session_survives_a_graceful_failover_with_messages_in_flight(
    tmp_path: Path, v5: bool
) -> None:
    """Graceful stop with failover-on-shutdown while the subscriber is connected to the primary
    with every message delivered and only the first few PUBACKed: after the failover exactly the
    unacknowledged ones come again, in order, with DUP set (their delivery count was persisted
    when the stopping primary returned them to the queue); the acknowledged ones never do."""
    client_id = f"graceful-{'v5' if v5 else 'v3'}"
    acked = 5
    async with HAPair(tmp_path, failover_on_shutdown=True) as pair:
        queued = await prepare(pair.primary.port, v5, client_id)

        holder = await hold(pair.primary.port, v5, client_id, queued, acked)
        try:
            await pair.stop_primary(failover=True)
        finally:
            await holder.abandon()
        await pair.wait_backup_active(timeout=TIMEOUT)
        assert pair.backup.active
        # delivered before the failover, not acknowledged: sent again with DUP set
        await recovered(pair.backup.port, v5, client_id, queued[acked:],
                        lambda m: m.qos == 1 and m.dup and not m.retain)


@VERSIONS
async def test_persistent_session_survives_kill_9_of_the_primary_process(tmp_path: Path, v5: bool) -> None:
    """The same with two ``pybroker run`` processes and a real SIGKILL of the primary while the
    subscriber holds unacknowledged deliveries: nothing of the primary's shutdown path runs."""
    client_id = f"kill9-{'v5' if v5 else 'v3'}"
    acked = 5
    pair = ProcessHAPair(tmp_path)
    try:
        await asyncio.to_thread(pair.start)
        queued = await prepare(pair.primary_port, v5, client_id)

        holder = await hold(pair.primary_port, v5, client_id, queued, acked)
        try:
            await asyncio.to_thread(pair.kill_primary)
        finally:
            await holder.abandon()
        await asyncio.to_thread(pair.wait_backup_active, TIMEOUT)
        # exactly the unacknowledged ones, in order (DUP is not asserted: the delivery count
        # of a delivery interrupted by a crash is not persisted, as in Artemis)
        await recovered(pair.backup_port, v5, client_id, queued[acked:],
                        lambda m: m.qos == 1 and not m.retain)
    finally:
        await asyncio.to_thread(pair.stop)


@VERSIONS
async def test_connack_and_suback_of_a_persistent_session_wait_for_its_record(
    tmp_path: Path, v5: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the client was told before the primary dies is on the shared store: the CONNACK of a
    new persistent session and the SUBACK of its subscription go out only once the session record
    (bindings journal, with the subscription queue's record before it) is durable."""
    client_id = f"record-{'v5' if v5 else 'v3'}"
    async with HAPair(tmp_path) as pair:
        storage = pair.primary.server.storage
        original = storage.durable
        gate = asyncio.Event()

        def slow_durable() -> Any:
            # the storage's own durable() (both journals), held back until the gate opens
            written = original()

            async def durable() -> None:
                await gate.wait()
                if written is not None:
                    await written

            return asyncio.ensure_future(durable())

        monkeypatch.setattr(storage, "durable", slow_durable)
        properties = Properties(session_expiry_interval=3600) if v5 else EMPTY_PROPERTIES
        raw = await RawClient.open(pair.primary.port, timeout=TIMEOUT)
        try:
            raw.send(Connect(client_id, 5 if v5 else 4, clean_start=False, properties=properties))
            await raw.nothing_within(0.3, "before the session record was durable")
            gate.set()
            connack = await raw.packet()
            assert isinstance(connack, ConnAck) and connack.reason_code == 0
            assert connack.session_present is False

            gate.clear()
            raw.send(Subscribe(1, (Subscription(FILTER, 1),)))
            await raw.nothing_within(0.3, "before the session record was durable")
            gate.set()
            suback = await raw.packet()
            assert isinstance(suback, SubAck) and tuple(suback.reason_codes) == (1,)
        finally:
            raw.close()

        await pair.fail_primary()
        await pair.wait_backup_active(timeout=TIMEOUT)
        back = await Subscriber(pair.backup.port, client_id, v5=v5).connect()
        try:
            assert back.session_present is True
            async with publisher(pair.backup.port, v5, f"{client_id}-pub") as client:
                await client.publish(expected_topic(1), b"routed", qos=1)
            [message] = await back.take(1)
            assert (message.topic, message.payload) == (expected_topic(1), b"routed")
        finally:
            await back.disconnect()
