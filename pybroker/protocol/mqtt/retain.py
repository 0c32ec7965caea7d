"""Retained messages, kept the way Artemis keeps them: one queue per topic.

The retained message of topic ``a/b`` is the only message of the durable queue (and address)
``$sys.mqtt.retain.a.b``. Setting it empties the queue and routes a copy of the new message to it
by its fully qualified name, so no subscription sees the copy; an empty payload clears it (the
queue and its address are deleted). The copy is durable whatever its QoS, so retained messages
survive a restart through the journal with the queue that holds them; its ``extra["topic"]``
keeps the MQTT topic (core addresses do not round-trip every topic).

A new subscription gets the retained messages of every topic its filter matches: a copy of each
is routed to the subscription's queue by its fully qualified name (marked ``retained_copy`` so it
goes out with RETAIN set). The registry of topics is rebuilt from the queues the broker knows when
it is created (after a restart, from the recovered queues).

These are broker-internal resources: they are created and routed through the post office without
the publisher's or subscriber's permissions (as Artemis does), after the handler has checked the
``send`` and ``consume`` permissions the client operation needs.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from pybroker.broker.message import Message
from pybroker.config.model import RoutingType
from pybroker.protocol.mqtt.topics import (
    MQTT_RETAIN_ADDRESS_PREFIX,
    WildcardSyntax,
    core_retain_address,
    core_to_mqtt_topic,
    topic_matches,
)

if TYPE_CHECKING:
    from pybroker.broker.queue import Queue
    from pybroker.broker.server import BrokerServer

log = logging.getLogger("pybroker.mqtt")

_STORES: weakref.WeakKeyDictionary[Any, RetainedMessages] = weakref.WeakKeyDictionary()


class RetainedMessages:
    """The retained messages of one broker server."""

    def __init__(self, server: BrokerServer, core: WildcardSyntax) -> None:
        self.server = server
        self.core = core
        #: MQTT topic -> name of the queue holding its retained message
        self.topics: dict[str, str] = {}
        for name, queue in server.post_office.queues.items():
            if name.startswith(MQTT_RETAIN_ADDRESS_PREFIX):
                message = self._retained(queue)
                topic = None
                if message is not None and message.extra:
                    topic = message.extra.get("topic")
                self.topics[topic or core_to_mqtt_topic(name, core)] = name

    @classmethod
    def for_server(cls, server: BrokerServer, core: WildcardSyntax) -> RetainedMessages:
        """The store of ``server`` (built from its queues on first use)."""
        store = _STORES.get(server)
        if store is None:
            store = _STORES[server] = cls(server, core)
        return store

    @staticmethod
    def _retained(queue: Queue) -> Message | None:
        for ref in queue.iter_queued():
            return ref.message
        return None

    def retain(self, message: Message, topic: str) -> Awaitable[None] | None:
        """Make ``message`` the retained message of ``topic`` (an empty body clears it).

        Returns the awaitable resolved once the change is durable (None if nothing was stored).
        """
        post_office = self.server.post_office
        name = self.topics.get(topic) or core_retain_address(topic, self.core)
        queue = post_office.find_queue(name)
        if not message.body:
            self.topics.pop(topic, None)
            if queue is not None:
                post_office.delete_queue(name, force=True)
                if name in post_office.addresses and not post_office.bindings.get(name):
                    post_office.delete_address(name)
            return self.server.storage.durable() if self.server.storage.persistent else None
        if queue is None:
            queue = post_office.create_queue(name, name, RoutingType.ANYCAST, durable=True)
        else:
            queue.purge()
        self.topics[topic] = name
        copy = message.copy(address=f"{name}::{name}")
        copy.durable = True
        copy.extra = {**(message.extra or {}), "topic": topic}
        result = post_office.route(copy, None, auto_create=False)
        return result.durable

    def matching(self, topic_filter: str, now_ms: int) -> list[tuple[str, Message]]:
        """(topic, retained message) for every topic ``topic_filter`` matches, unexpired."""
        found = []
        post_office = self.server.post_office
        for topic, name in list(self.topics.items()):
            if not topic_matches(topic_filter, topic):
                continue
            queue = post_office.find_queue(name)
            if queue is None:
                self.topics.pop(topic, None)
                continue
            message = self._retained(queue)
            if message is None or message.is_expired(now_ms):
                continue
            found.append((topic, message))
        return found

    def send_to_queue(self, queue: Queue, topic: str, message: Message) -> Awaitable[None] | None:
        """Route a copy of a retained message to one subscription queue."""
        copy = message.copy(address=f"{queue.address}::{queue.name}")
        copy.durable = queue.durable
        copy.extra = {**(message.extra or {}), "topic": topic, "retained_copy": True}
        return self.server.post_office.route(copy, None, auto_create=False).durable


__all__ = ["RetainedMessages"]
