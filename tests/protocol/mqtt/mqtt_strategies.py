"""Hypothesis strategies for valid MQTT packets, and helpers to drive a client/server codec pair.

Strategies produce packets that survive a round trip unchanged: v3 packets keep the v5-only
fields at their defaults; Topic Aliases are left out (the decoder resolves them away, tested on
their own); client PUBLISH packets carry no Subscription Identifier (forbidden client -> server).
"""

from __future__ import annotations

from hypothesis import strategies as st

from pybroker.protocol.mqtt.base import V3_SUBACK_CODES, VALID_REASON_CODES, PacketType
from pybroker.protocol.mqtt.codec import NEED_DATA, MQTTCodec
from pybroker.protocol.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from pybroker.protocol.mqtt.properties import (
    _RULES,
    EMPTY_PROPERTIES,
    WILL_PROPERTIES,
    Properties,
)
from pybroker.protocol.mqtt.topics import topic_filter_problem

VERSIONS = (3, 4, 5)
AUTH_METHOD = "SCRAM-SHA-256"

# Any Unicode scalar value except U+0000 (surrogates cannot be encoded).
_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
texts = st.text(_CHARS, max_size=12)
binaries = st.binary(max_size=24)
packet_ids = st.integers(1, 65_535)
qos_levels = st.integers(0, 2)

_LEVEL_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/+#")
_levels = st.text(_LEVEL_CHARS, max_size=6)
topic_names = st.lists(_levels, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(_levels, st.just("+")), min_size=0, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    result = "/".join(levels)
    if not result or result.startswith("$share/") or topic_filter_problem(result) is not None:
        result = draw(st.sampled_from(["#", "+", "a/+/c", "sport/#", "/", "+/+"]))
    return result


shared_filters = st.builds(
    lambda group, inner: f"$share/{group}/{inner}",
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/+#"),
            min_size=1, max_size=6),
    topic_filters(),
)

_EXCLUDED = {"topic_alias"}


def _value_strategy(rule) -> st.SearchStrategy:  # noqa: ANN001 - a private _Rule
    name = rule.attribute
    kind = rule.kind
    if name in ("payload_format_indicator", "maximum_qos"):
        return st.integers(0, 1)
    if kind == 1:  # flag
        return st.booleans()
    if kind == 0:
        return st.integers(0, 255)
    if kind == 2:
        return st.integers(1 if name == "receive_maximum" else 0, 65_535)
    if kind == 3:
        if name == "maximum_packet_size":
            # the largest packet MQTT can frame; paho refuses bigger limits
            return st.integers(1, 268_435_455)
        return st.integers(0, 0xFFFF_FFFF)
    if kind == 4:
        return st.integers(1, 268_435_455)
    if kind == 5:
        return texts
    if kind == 6:
        return binaries
    return st.tuples(texts, texts)


@st.composite
def properties(
    draw: st.DrawFn,
    context: int,
    *,
    exclude: frozenset[str] = frozenset(),
    subscription_identifiers: int = 0,
) -> Properties:
    """Properties valid on ``context``; ``subscription_identifiers`` caps how many."""
    values: dict[str, object] = {}
    for rule in _RULES:
        if context not in rule.contexts or rule.attribute in _EXCLUDED | exclude:
            continue
        if rule.attribute == "user_properties":
            pairs = draw(st.lists(_value_strategy(rule), max_size=3))
            if pairs:
                values["user_properties"] = tuple(pairs)
        elif rule.attribute == "subscription_identifiers":
            ids = draw(st.lists(_value_strategy(rule), max_size=subscription_identifiers))
            if ids:
                values["subscription_identifiers"] = tuple(ids)
        elif draw(st.integers(0, 3)) == 0:
            values[rule.attribute] = draw(_value_strategy(rule))
    if not values:
        return EMPTY_PROPERTIES
    return Properties(**values)  # type: ignore[arg-type]


def _props(draw: st.DrawFn, version: int, context: int, **kwargs: object) -> Properties:
    return draw(properties(context, **kwargs)) if version == 5 else EMPTY_PROPERTIES


def _reason(draw: st.DrawFn, version: int, packet_type: PacketType) -> int:
    if version != 5:
        return 0
    return draw(st.sampled_from(sorted(VALID_REASON_CODES[packet_type])))


@st.composite
def connects(draw: st.DrawFn, version: int) -> Connect:
    clean_start = draw(st.booleans())
    client_id = draw(texts)
    if not client_id and (version == 3 or (version == 4 and not clean_start)):
        client_id = "client-1"
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(topic_names), draw(binaries), draw(qos_levels), draw(st.booleans()),
            _props(draw, version, WILL_PROPERTIES),
        )
    username = draw(st.none() | texts)
    password = draw(st.none() | binaries)
    if username is None and version != 5:
        password = None
    props = _props(draw, version, PacketType.CONNECT)
    if props.authentication_data is not None and props.authentication_method is None:
        props = Properties(**{**props.present(), "authentication_method": AUTH_METHOD})
    return Connect(
        client_id, version, clean_start, draw(st.integers(0, 65_535)), username, password, will,
        props,
    )


@st.composite
def connacks(draw: st.DrawFn, version: int) -> ConnAck:
    if version == 5:
        code = draw(st.sampled_from(sorted(VALID_REASON_CODES[PacketType.CONNACK])))
    else:
        code = draw(st.integers(0, 5))
    session_present = draw(st.booleans()) and code == 0 and version != 3
    return ConnAck(session_present, code, _props(draw, version, PacketType.CONNACK))


@st.composite
def publishes(draw: st.DrawFn, version: int, *, from_server: bool = False) -> Publish:
    qos = draw(qos_levels)
    return Publish(
        draw(topic_names),
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(packet_ids) if qos else None,
        _props(draw, version, PacketType.PUBLISH,
               subscription_identifiers=3 if from_server else 0),
    )


@st.composite
def publish_responses(draw: st.DrawFn, version: int) -> PubAck | PubRec | PubRel | PubComp:
    cls = draw(st.sampled_from([PubAck, PubRec, PubRel, PubComp]))
    return cls(
        draw(packet_ids), _reason(draw, version, cls.packet_type),
        _props(draw, version, cls.packet_type),
    )


@st.composite
def subscriptions(draw: st.DrawFn, version: int) -> Subscription:
    if version != 5:
        return Subscription(draw(topic_filters()), draw(qos_levels))
    if draw(st.integers(0, 4)) == 0:
        return Subscription(
            draw(shared_filters), draw(qos_levels), False, draw(st.booleans()),
            draw(st.integers(0, 2)),
        )
    return Subscription(
        draw(topic_filters()), draw(qos_levels), draw(st.booleans()), draw(st.booleans()),
        draw(st.integers(0, 2)),
    )


@st.composite
def subscribes(draw: st.DrawFn, version: int) -> Subscribe:
    return Subscribe(
        draw(packet_ids),
        tuple(draw(st.lists(subscriptions(version), min_size=1, max_size=4))),
        _props(draw, version, PacketType.SUBSCRIBE, subscription_identifiers=1),
    )


@st.composite
def subacks(draw: st.DrawFn, version: int) -> SubAck:
    valid = VALID_REASON_CODES[PacketType.SUBACK] if version == 5 else V3_SUBACK_CODES
    codes = draw(st.lists(st.sampled_from(sorted(valid)), min_size=1, max_size=4))
    return SubAck(draw(packet_ids), tuple(codes), _props(draw, version, PacketType.SUBACK))


@st.composite
def unsubscribes(draw: st.DrawFn, version: int) -> Unsubscribe:
    filters = draw(st.lists(st.one_of(topic_filters(), shared_filters), min_size=1, max_size=4))
    return Unsubscribe(
        draw(packet_ids), tuple(filters), _props(draw, version, PacketType.UNSUBSCRIBE)
    )


@st.composite
def unsubacks(draw: st.DrawFn, version: int) -> UnsubAck:
    if version != 5:
        return UnsubAck(draw(packet_ids))
    codes = draw(
        st.lists(st.sampled_from(sorted(VALID_REASON_CODES[PacketType.UNSUBACK])), min_size=1,
                 max_size=4)
    )
    return UnsubAck(draw(packet_ids), tuple(codes), draw(properties(PacketType.UNSUBACK)))


@st.composite
def disconnects(draw: st.DrawFn, version: int) -> Disconnect:
    if version != 5:
        return Disconnect()
    return Disconnect(
        _reason(draw, version, PacketType.DISCONNECT), draw(properties(PacketType.DISCONNECT))
    )


@st.composite
def client_auths(draw: st.DrawFn) -> Auth:
    props = draw(properties(PacketType.AUTH, exclude=frozenset({"authentication_method"})))
    return Auth(
        draw(st.sampled_from([0x18, 0x19])),
        Properties(**{**props.present(), "authentication_method": AUTH_METHOD}),
    )


@st.composite
def server_auths(draw: st.DrawFn) -> Auth:
    return Auth(
        draw(st.sampled_from(sorted(VALID_REASON_CODES[PacketType.AUTH]))),
        draw(properties(PacketType.AUTH)),
    )


def client_session_packets(version: int) -> st.SearchStrategy:
    """Packets a client sends after CONNECT (DISCONNECT excluded: it ends the stream)."""
    options = [
        publishes(version), publish_responses(version), subscribes(version),
        unsubscribes(version), st.just(PingReq()),
    ]
    if version == 5:
        options.append(client_auths())
    return st.one_of(options)


def server_session_packets(version: int) -> st.SearchStrategy:
    """Packets a server sends after an accepting CONNACK (DISCONNECT excluded)."""
    options = [
        publishes(version, from_server=True), publish_responses(version), subacks(version),
        unsubacks(version), st.just(PingResp()),
    ]
    if version == 5:
        options.append(server_auths())
    return st.one_of(options)


def handshake_connect(version: int) -> Connect:
    """The CONNECT used to set up sessions: session expiry and an auth method (v5), so that any
    generated DISCONNECT / AUTH is legal."""
    if version == 5:
        return Connect(
            "session", 5, True, 30,
            properties=Properties(session_expiry_interval=60, authentication_method=AUTH_METHOD),
        )
    return Connect("session", version, True, 30)


def connected_pair(
    version: int, connect: Connect | None = None, connack: ConnAck | None = None,
    maximum_packet_size: int | None = None,
) -> tuple[MQTTCodec, MQTTCodec]:
    """A client and a server codec that exchanged CONNECT and an accepting CONNACK."""
    client = MQTTCodec("client")
    server = MQTTCodec("server", maximum_packet_size=maximum_packet_size)
    transfer(client, server, connect or handshake_connect(version))
    transfer(server, client, connack or ConnAck())
    return client, server


def transfer(sender: MQTTCodec, receiver: MQTTCodec, packet: object) -> object:
    """Send one packet through both codecs and return what the receiver decoded."""
    receiver.receive_data(sender.send(packet))  # type: ignore[arg-type]
    event = receiver.next_event()
    assert receiver.next_event() is NEED_DATA
    return event


def drain(codec: MQTTCodec) -> list[object]:
    """Every complete packet buffered in ``codec``."""
    events = []
    while (event := codec.next_event()) is not NEED_DATA:
        events.append(event)
    return events
