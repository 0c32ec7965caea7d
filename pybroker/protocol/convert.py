"""Cross-protocol conversion: every protocol's messages seen through one neutral shape.

A message keeps the encoding of the protocol it came in with. When a consumer of another
protocol receives it, the consumer's protocol asks :func:`portable` for a
:class:`PortableMessage` (body bytes, whether they are text, content type, properties and the
common header fields) and encodes that its own way. Each protocol package provides
``to_portable(message) -> PortableMessage`` in its ``message`` module
(``pybroker.protocol.<name>.message``); this module only dispatches, so protocols never import
each other.

Mapping rules (as Artemis converts between AMQP, MQTT and STOMP):

* AMQP ``data`` sections -> the bytes; ``amqp-value`` string -> UTF-8 text; other ``amqp-value``
  values -> their ``str()`` as text; application properties -> properties.
* MQTT payload -> bytes (text when the v5 payload-format-indicator says UTF-8); v5 user properties
  -> properties; content type, response topic (-> reply_to) and correlation data carried over.
* STOMP body -> bytes (text when ``content-type`` is ``text/*`` or absent with a UTF-8 body);
  custom headers -> properties.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from pybroker.broker.message import Message


@dataclass
class PortableMessage:
    body: bytes
    text: bool = False
    content_type: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    message_id: Any = None
    correlation_id: Any = None
    reply_to: str | None = None
    subject: str | None = None
    user_id: bytes | None = None
    group_id: str | None = None
    durable: bool = False
    priority: int = 4
    expiration: int = 0  # ms epoch, 0 = never
    timestamp: int = 0


def portable(message: Message) -> PortableMessage:
    """The neutral view of ``message`` (from the protocol that produced it)."""
    protocol = message.protocol
    module_name = _MODULES.get(protocol)
    if module_name is not None:
        module = importlib.import_module(module_name)
        result: PortableMessage = module.to_portable(message)
    else:
        result = PortableMessage(body=message.body, properties=dict(message.properties))
        extra = message.extra or {}
        result.content_type = extra.get("content_type")
        result.message_id = extra.get("message_id")
        result.correlation_id = extra.get("correlation_id")
        result.reply_to = extra.get("reply_to")
    result.durable = message.durable
    result.priority = message.priority
    result.expiration = message.expiration
    result.timestamp = message.timestamp
    if message.annotations:
        for key, value in message.annotations.items():
            result.properties.setdefault(key, value)
    return result


_MODULES = {
    "amqp": "pybroker.protocol.amqp.message",
    "mqtt": "pybroker.protocol.mqtt.message",
    "stomp": "pybroker.protocol.stomp.message",
}
