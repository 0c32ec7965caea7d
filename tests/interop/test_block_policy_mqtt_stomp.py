"""address-full-policy BLOCK for MQTT and STOMP: the broker stops reading the producer's socket
until the address has room; nothing is lost."""

from __future__ import annotations

import asyncio
import threading

import paho.mqtt.client as mqtt
import pytest
import stomp
from support import receive, until

from pybroker.config.parse import parse_config
from pybroker.embedded import Broker

pytestmark = pytest.mark.asyncio


def _broker(tmp_path) -> Broker:
    xml = """<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <persistence-enabled>false</persistence-enabled><security-enabled>false</security-enabled>
      <acceptors><acceptor name="a">tcp://127.0.0.1:0</acceptor></acceptors>
      <address-settings><address-setting match="blocked.#">
        <max-size-bytes>20K</max-size-bytes><address-full-policy>BLOCK</address-full-policy>
      </address-setting></address-settings>
      <addresses><address name="blocked.q"><anycast><queue name="blocked.q"/></anycast></address></addresses>
      </core></configuration>"""
    return Broker(parse_config(xml, file="block.xml", instance_dir=tmp_path))


async def test_mqtt_publisher_is_held_back_and_resumes(tmp_path):
    async with _broker(tmp_path) as broker:
        acked = []
        done = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="blocked-pub", protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(20)
        client.max_queued_messages_set(0)

        def on_publish(client, userdata, mid, reason_code, properties):
            acked.append(mid)
            if len(acked) == 100:
                done.set()

        client.on_publish = on_publish
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            for i in range(100):
                client.publish("blocked/q", i.to_bytes(4, "big") + b"m" * 1000, qos=1)
            queue = broker.server.post_office.queues["blocked.q"]
            await until(lambda: not broker.server.post_office.can_send("blocked.q"))
            held = queue.message_count
            await asyncio.sleep(0.3)
            assert queue.message_count <= held + 20  # at most what was already read
            assert not done.is_set()
            bodies = await asyncio.to_thread(receive, broker.port, "blocked.q", 100, credit=10)
            assert [int.from_bytes(bytes(b)[:4], "big") for b in bodies] == list(range(100))
            assert await asyncio.to_thread(done.wait, 10)
        finally:
            client.loop_stop()
            client.disconnect()


async def test_stomp_sender_is_held_back_and_resumes(tmp_path):
    async with _broker(tmp_path) as broker:
        connection = stomp.Connection12([("127.0.0.1", broker.port)])
        await asyncio.to_thread(connection.connect, wait=True)
        sent = threading.Event()

        def send_all():
            for i in range(100):
                connection.send("blocked.q", i.to_bytes(4, "big").hex() + "s" * 1000,
                                headers={"destination-type": "ANYCAST"})
            sent.set()

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        try:
            queue = None
            await until(lambda: "blocked.q" in broker.server.post_office.queues
                              and not broker.server.post_office.can_send("blocked.q"))
            queue = broker.server.post_office.queues["blocked.q"]
            held = queue.message_count
            await asyncio.sleep(0.3)
            assert queue.message_count <= held + 5
            bodies = await asyncio.to_thread(receive, broker.port, "blocked.q", 100, credit=10)
            numbers = [int((b if isinstance(b, str) else bytes(b).decode())[:8], 16) for b in bodies]
            assert numbers == list(range(100))
            assert await asyncio.to_thread(sent.wait, 10)
        finally:
            await asyncio.to_thread(connection.disconnect)
