"""MQTT messages in the broker core, and MQTT PUBLISH packets built from core messages.

Inbound, a PUBLISH becomes a core :class:`~pybroker.broker.message.Message` whose body is the
payload bytes, untouched. What MQTT says about the message besides the payload lives in
``Message.extra`` (stored with the message, so it survives a restart):

==================  =========================================================================
``qos``             the QoS it was published with (an outbound copy gets min(this, subscription))
``retain``          the RETAIN flag as published (for v5 Retain As Published)
``client_id``       the publisher's client identifier (for v5 No Local)
``payload_format``  v5 Payload Format Indicator (1: UTF-8 text)
``content_type``    v5 Content Type
``response_topic``  v5 Response Topic
``correlation_data`` v5 Correlation Data (bytes)
``user_properties`` v5 User Properties as an ordered list of ``[name, value]`` pairs
``expiry_interval`` v5 Message Expiry Interval in seconds (``Message.expiration`` is absolute)
``topic``           the MQTT topic, when the core address no longer says it (a retained copy)
``retained_copy``   True on a retained message sent because of a new subscription
``v5``              True when any of the v5 properties above is present
==================  =========================================================================

The core sees the v5 user properties as the message's properties (a dict: filters and other
protocols use them); durable = QoS > 0, as Artemis does.

Outbound, :func:`outbound_view` gives the topic, payload and v5 properties of any core message:
MQTT messages directly from ``extra``, messages from AMQP or STOMP through the neutral
:func:`pybroker.protocol.convert.portable` view (text bodies get Payload Format Indicator 1,
``reply_to`` becomes the Response Topic, ``correlation_id`` the Correlation Data, simple-valued
properties User Properties).
"""

from __future__ import annotations

from typing import Any

from pybroker.broker.message import DUPLICATE_ID_PROPERTY, Message
from pybroker.protocol.mqtt.packets import Publish
from pybroker.protocol.mqtt.properties import EMPTY_PROPERTIES, Properties
from pybroker.protocol.mqtt.topics import CORE_WILDCARDS, WildcardSyntax, core_to_mqtt_topic

PROTOCOL = "mqtt"


class MQTTMessageCodec:
    """The core's view of MQTT messages (see :class:`pybroker.broker.message.MessageCodec`)."""

    protocol = PROTOCOL
    properties_in_body = False

    def decode_properties(self, message: Message) -> dict[str, Any]:
        """The v5 user properties as a dict (a repeated name keeps its last value)."""
        extra = message.extra
        pairs = extra.get("user_properties") if extra else None
        return {str(name): value for name, value in pairs} if pairs else {}

    def duplicate_id(self, message: Message) -> Any:
        """The ``_AMQ_DUPL_ID`` user property, if a publisher set one."""
        extra = message.extra
        if not extra or "user_properties" not in extra:
            return None
        return message.properties.get(DUPLICATE_ID_PROPERTY)


CODEC = MQTTMessageCodec()


def message_from_publish(
    publish: Publish, address: str, *, client_id: str | None, now_ms: int
) -> Message:
    """The core message for an inbound PUBLISH routed to ``address``."""
    qos = publish.qos
    extra: dict[str, Any] = {"qos": qos}
    if publish.retain:
        extra["retain"] = True
    if client_id is not None:
        extra["client_id"] = client_id
    properties = None
    expiration = 0
    props = publish.properties
    if props is not EMPTY_PROPERTIES:
        extra["v5"] = True  # marks a message with v5 properties to send on (the fast path)
        if props.payload_format_indicator is not None:
            extra["payload_format"] = props.payload_format_indicator
        if props.content_type is not None:
            extra["content_type"] = props.content_type
        if props.response_topic is not None:
            extra["response_topic"] = props.response_topic
        if props.correlation_data is not None:
            extra["correlation_data"] = bytes(props.correlation_data)
        if props.user_properties:
            pairs = [[name, value] for name, value in props.user_properties]
            extra["user_properties"] = pairs
            properties = {name: value for name, value in pairs}
        interval = props.message_expiry_interval
        if interval is not None:
            extra["expiry_interval"] = interval
            expiration = now_ms + interval * 1000
    return Message(
        address=address,
        body=publish.payload,
        protocol=PROTOCOL,
        codec=CODEC,
        durable=qos > 0,
        expiration=expiration,
        timestamp=now_ms,
        properties=properties,
        extra=extra,
    )


def message_topic(message: Message, core: WildcardSyntax = CORE_WILDCARDS) -> str:
    """The MQTT topic a message is delivered under."""
    extra = message.extra
    if extra:
        topic = extra.get("topic")
        if topic is not None:
            return topic
    return core_to_mqtt_topic(message.address, core)


class OutboundView:
    """What an MQTT subscriber is sent for one core message (topic aside).

    ``qos`` is the QoS the message asks for (2 for messages from other protocols, so the
    subscription's QoS decides); ``properties`` are the v5 properties before the subscription
    identifier and the remaining expiry interval are added.
    """

    __slots__ = ("payload", "properties", "qos", "retain", "retained_copy")

    def __init__(
        self,
        payload: bytes,
        qos: int,
        retain: bool,
        retained_copy: bool,
        properties: dict[str, Any] | None,
    ) -> None:
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.retained_copy = retained_copy
        self.properties = properties


def outbound_view(message: Message) -> OutboundView:
    """The payload, QoS, retain flags and v5 property values for delivering ``message``."""
    extra = message.extra
    if message.protocol == PROTOCOL:
        if not extra:
            return OutboundView(message.body, 2, False, False, None)
        properties: dict[str, Any] | None = None
        if "v5" in extra:
            properties = {}
            value = extra.get("payload_format")
            if value is not None:
                properties["payload_format_indicator"] = value
            for key in ("content_type", "response_topic", "correlation_data"):
                value = extra.get(key)
                if value is not None:
                    properties[key] = value
            pairs = extra.get("user_properties")
            if pairs:
                properties["user_properties"] = tuple((str(n), str(v)) for n, v in pairs)
        return OutboundView(
            message.body,
            extra.get("qos", 2),
            bool(extra.get("retain", False)),
            bool(extra.get("retained_copy", False)),
            properties or None,
        )
    from pybroker.protocol.convert import portable

    view = portable(message)
    properties = {}
    if view.text:
        properties["payload_format_indicator"] = 1
    if view.content_type is not None:
        properties["content_type"] = str(view.content_type)
    if view.reply_to is not None:
        properties["response_topic"] = str(view.reply_to)
    correlation = view.correlation_id
    if correlation is not None:
        if isinstance(correlation, bytes | bytearray | memoryview):
            properties["correlation_data"] = bytes(correlation)
        else:
            properties["correlation_data"] = str(correlation).encode("utf-8")
    pairs = tuple(
        (str(name), _text(value))
        for name, value in view.properties.items()
        if value is None or isinstance(value, str | bytes | bool | int | float)
    )
    if pairs:
        properties["user_properties"] = pairs
    retained_copy = bool(extra and extra.get("retained_copy"))
    return OutboundView(view.body, 2, False, retained_copy, properties or None)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def v5_properties(
    values: dict[str, Any] | None,
    *,
    subscription_identifier: int | None,
    expiry_interval: int | None,
) -> Properties:
    """The v5 PUBLISH properties for an outbound message."""
    if values is None and subscription_identifier is None and expiry_interval is None:
        return EMPTY_PROPERTIES
    arguments = dict(values) if values else {}
    if subscription_identifier is not None:
        arguments["subscription_identifiers"] = (subscription_identifier,)
    if expiry_interval is not None:
        arguments["message_expiry_interval"] = expiry_interval
    return Properties(**arguments)


def to_portable(message: Message) -> Any:
    """The neutral view of an MQTT message (see :mod:`pybroker.protocol.convert`)."""
    from pybroker.protocol.convert import PortableMessage

    extra = message.extra or {}
    correlation = extra.get("correlation_data")
    return PortableMessage(
        body=message.body,
        text=extra.get("payload_format") == 1,
        content_type=extra.get("content_type"),
        properties=dict(message.properties),
        correlation_id=correlation,
        reply_to=extra.get("response_topic"),
    )


__all__ = [
    "CODEC",
    "PROTOCOL",
    "MQTTMessageCodec",
    "OutboundView",
    "message_from_publish",
    "message_topic",
    "outbound_view",
    "to_portable",
    "v5_properties",
]
