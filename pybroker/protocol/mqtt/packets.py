"""MQTT control packets as frozen dataclasses, one class per packet type.

The same classes serve MQTT 3.1, 3.1.1 and 5.0. Fields only v5 can carry (``properties``, reason
codes on acknowledgements, subscription options other than QoS) keep their defaults on packets
decoded from a v3 peer, and are left out when the codec encodes for a v3 peer. Topic names, filters
and strings are ``str``; payloads, passwords and binary properties are ``bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from pybroker.protocol.mqtt.base import PacketType, ReasonCode
from pybroker.protocol.mqtt.properties import EMPTY_PROPERTIES, Properties

#: MQTT protocol levels (the "Protocol Version" byte of CONNECT).
MQTT_3_1 = 3
MQTT_3_1_1 = 4
MQTT_5 = 5
PROTOCOL_NAMES: dict[int, str] = {MQTT_3_1: "MQIsdp", MQTT_3_1_1: "MQTT", MQTT_5: "MQTT"}


class RetainHandling(IntEnum):
    """MQTT 5 subscription option Retain Handling (§3.8.3.1)."""

    SEND_ON_SUBSCRIBE = 0
    SEND_IF_NEW_SUBSCRIPTION = 1
    DO_NOT_SEND = 2


@dataclass(frozen=True, slots=True)
class Will:
    """The will message of a CONNECT (topic, payload, QoS, retain and v5 will properties)."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT. ``protocol_version`` is the protocol level: 3 (3.1), 4 (3.1.1) or 5.

    ``clean_start`` is "Clean Session" in MQTT 3. ``password`` is binary data.
    """

    packet_type: ClassVar[PacketType] = PacketType.CONNECT
    client_id: str = ""
    protocol_version: int = MQTT_3_1_1
    clean_start: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = EMPTY_PROPERTIES

    @property
    def protocol_name(self) -> str:
        """``MQIsdp`` for 3.1, ``MQTT`` for 3.1.1 and 5."""
        return PROTOCOL_NAMES.get(self.protocol_version, "MQTT")


@dataclass(frozen=True, slots=True)
class ConnAck:
    """CONNACK. ``reason_code`` is a v5 :class:`ReasonCode` or a v3 return code (0-5).

    The codec converts between the two when it encodes (see ``base.v3_connect_return_code``);
    decoding gives a ``ConnectReturnCode`` from a v3 peer and a ``ReasonCode`` from a v5 one.
    """

    packet_type: ClassVar[PacketType] = PacketType.CONNACK
    session_present: bool = False
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH. ``packet_id`` is set exactly when ``qos`` is 1 or 2.

    On decode the codec resolves a v5 Topic Alias: ``topic`` is always the full topic name and
    ``properties.topic_alias`` is cleared (aliases belong to one connection).
    """

    packet_type: ClassVar[PacketType] = PacketType.PUBLISH
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class _PublishResponse:
    packet_id: int
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubAck(_PublishResponse):
    """PUBACK (QoS 1 acknowledgement)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBACK


@dataclass(frozen=True, slots=True)
class PubRec(_PublishResponse):
    """PUBREC (QoS 2, part 1)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREC


@dataclass(frozen=True, slots=True)
class PubRel(_PublishResponse):
    """PUBREL (QoS 2, part 2)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREL


@dataclass(frozen=True, slots=True)
class PubComp(_PublishResponse):
    """PUBCOMP (QoS 2, part 3)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBCOMP


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (v5 §3.8.3.1; v3 has only ``qos``)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = RetainHandling.SEND_ON_SUBSCRIBE


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE: at least one :class:`Subscription`."""

    packet_type: ClassVar[PacketType] = PacketType.SUBSCRIBE
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK: one code per subscription (v3: granted QoS 0-2 or 0x80; v5: a ReasonCode)."""

    packet_type: ClassVar[PacketType] = PacketType.SUBACK
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE: at least one topic filter."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBSCRIBE
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """UNSUBACK: v5 carries one reason code per topic filter, v3 none."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBACK
    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq:
    """PINGREQ."""

    packet_type: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(frozen=True, slots=True)
class PingResp:
    """PINGRESP."""

    packet_type: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT (v3: from the client only, no fields; v5: either side, reason code)."""

    packet_type: ClassVar[PacketType] = PacketType.DISCONNECT
    reason_code: int = ReasonCode.NORMAL_DISCONNECTION
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH (v5 enhanced authentication)."""

    packet_type: ClassVar[PacketType] = PacketType.AUTH
    reason_code: int = ReasonCode.SUCCESS
    properties: Properties = EMPTY_PROPERTIES


Packet = (
    Connect | ConnAck | Publish | PubAck | PubRec | PubRel | PubComp | Subscribe | SubAck
    | Unsubscribe | UnsubAck | PingReq | PingResp | Disconnect | Auth
)

#: The packet class of each packet type.
PACKET_CLASSES: dict[PacketType, type] = {
    cls.packet_type: cls
    for cls in (
        Connect, ConnAck, Publish, PubAck, PubRec, PubRel, PubComp, Subscribe, SubAck,
        Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect, Auth,
    )
}

__all__ = [
    "MQTT_3_1",
    "MQTT_3_1_1",
    "MQTT_5",
    "PACKET_CLASSES",
    "PROTOCOL_NAMES",
    "Auth",
    "ConnAck",
    "Connect",
    "Disconnect",
    "Packet",
    "PingReq",
    "PingResp",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "RetainHandling",
    "SubAck",
    "Subscribe",
    "Subscription",
    "UnsubAck",
    "Unsubscribe",
    "Will",
]
