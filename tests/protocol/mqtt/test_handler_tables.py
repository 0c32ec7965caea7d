"""The MQTT session and QoS flow tables, the outbound window, and the message mapping."""

from __future__ import annotations

import itertools
import re

import pytest

from pybroker.broker.message import Message
from pybroker.protocol.convert import portable
from pybroker.protocol.mqtt.message import (
    CODEC,
    message_from_publish,
    message_topic,
    outbound_view,
    v5_properties,
)
from pybroker.protocol.mqtt.packets import Publish
from pybroker.protocol.mqtt.properties import EMPTY_PROPERTIES, Properties
from pybroker.protocol.mqtt.session import (
    INBOUND_FLOW,
    OUTBOUND_FLOW,
    PUBACK,
    PUBCOMP,
    PUBLISH_QOS2,
    PUBREC,
    PUBREC_FAILED,
    PUBREL,
    SESSION_LIFECYCLE,
    Inbound,
    InboundAction,
    Outbound,
    OutboundAction,
    OutboundWindow,
    QoSFlowError,
    SessionPhase,
    SessionState,
    advance_session,
    expiry_from_v5,
)

OUTBOUND_EVENTS = (PUBACK, PUBREC, PUBREC_FAILED, PUBCOMP)


def test_outbound_qos1_flow() -> None:
    window = OutboundWindow()
    packet_id = window.allocate(Outbound.AWAIT_PUBACK, None, None)
    assert window.event(packet_id, PUBACK)[0] is OutboundAction.ACKNOWLEDGE
    assert len(window) == 0
    assert window.event(packet_id, PUBACK)[0] is OutboundAction.IGNORE  # stale


def test_outbound_qos2_flow() -> None:
    window = OutboundWindow()
    packet_id = window.allocate(Outbound.AWAIT_PUBREC, "ref", "sub")
    action, flight = window.event(packet_id, PUBREC)
    assert action is OutboundAction.RELEASE and flight.ref == "ref"
    assert window.flights[packet_id].state is Outbound.AWAIT_PUBCOMP
    assert window.event(packet_id, PUBREC)[0] is OutboundAction.RESEND_PUBREL
    assert window.event(packet_id, PUBCOMP)[0] is OutboundAction.COMPLETE
    assert len(window) == 0
    assert window.event(packet_id, PUBREC)[0] is OutboundAction.UNKNOWN_PUBREL


def test_failed_pubrec_ends_the_flow() -> None:
    window = OutboundWindow()
    packet_id = window.allocate(Outbound.AWAIT_PUBREC, "ref", None)
    assert window.event(packet_id, PUBREC_FAILED)[0] is OutboundAction.ACKNOWLEDGE
    assert len(window) == 0


@pytest.mark.parametrize(
    "state,event",
    [(s, e) for s in Outbound for e in OUTBOUND_EVENTS if (s, e) not in OUTBOUND_FLOW],
)
def test_illegal_outbound_transitions_name_state_and_event(state: Outbound, event: str) -> None:
    window = OutboundWindow()
    packet_id = window.allocate(state, None, None)
    with pytest.raises(QoSFlowError, match=re.escape(f"event {event} is not allowed in state {state.name}")):
        window.event(packet_id, event)
    assert window.flights[packet_id].state is state  # unchanged


def test_every_outbound_state_and_event_is_decided() -> None:
    decided = {(state, event) for state in (None, *Outbound) for event in OUTBOUND_EVENTS
               if (state, event) in OUTBOUND_FLOW}
    # QoS 1 flights refuse PUBREC/PUBCOMP, QoS 2 flights refuse PUBACK: 4 illegal pairs
    assert len(decided) == 4 * 4 - 4 - 2


def test_inbound_qos2_flow() -> None:
    state = SessionState("c")
    assert state.inbound_event(5, PUBLISH_QOS2) is InboundAction.ROUTE
    assert state.inbound[5] is Inbound.AWAIT_PUBREL
    assert state.inbound_event(5, PUBLISH_QOS2) is InboundAction.DUPLICATE
    assert state.inbound_event(5, PUBREL) is InboundAction.COMPLETE
    assert 5 not in state.inbound
    assert state.inbound_event(5, PUBREL) is InboundAction.UNKNOWN
    assert set(INBOUND_FLOW) == {(s, e) for s in (None, *Inbound) for e in (PUBLISH_QOS2, PUBREL)}


def test_session_lifecycle() -> None:
    state = SessionState("c")
    assert advance_session(state, "connect") is SessionPhase.ATTACHED
    assert advance_session(state, "disconnect") is SessionPhase.DETACHED
    assert advance_session(state, "connect") is SessionPhase.ATTACHED
    assert advance_session(state, "end") is SessionPhase.ENDED
    with pytest.raises(QoSFlowError, match="event connect is not allowed in state ENDED"):
        advance_session(state, "connect")
    attached = SessionState("d")
    advance_session(attached, "connect")
    with pytest.raises(QoSFlowError, match="event expire is not allowed in state ATTACHED"):
        advance_session(attached, "expire")
    assert (None, "disconnect") not in SESSION_LIFECYCLE


def test_window_skips_identifiers_in_use_and_wraps() -> None:
    window = OutboundWindow(maximum=3)
    first = window.allocate(Outbound.AWAIT_PUBACK, None, None)
    second = window.allocate(Outbound.AWAIT_PUBACK, None, None)
    assert (first, second) == (1, 2)
    window.event(first, PUBACK)
    window._next = 65_534  # noqa: SLF001 - near the end of the range
    assert window.allocate(Outbound.AWAIT_PUBACK, None, None) == 65_535
    assert window.allocate(Outbound.AWAIT_PUBACK, None, None) == 1  # wrapped, 0 is never used
    assert window.full  # 1, 2 and 65535: the maximum of 3
    window.event(65_535, PUBACK)
    assert window.allocate(Outbound.AWAIT_PUBACK, None, None) == 3  # 2 is still in use


def test_window_refuses_when_every_identifier_is_taken() -> None:
    window = OutboundWindow()
    for _ in range(65_535):
        window.allocate(Outbound.AWAIT_PUBACK, None, None)
    assert sorted(window.flights) == list(range(1, 65_536))
    with pytest.raises(Exception, match="all 65535 packet identifiers are in use"):
        window.allocate(Outbound.AWAIT_PUBACK, None, None)


def test_restored_releasing_identifiers_wait_for_pubcomp() -> None:
    window = OutboundWindow()
    window.restore_releasing({7, 9})
    assert window.event(7, PUBCOMP)[0] is OutboundAction.COMPLETE
    assert window.event(9, PUBREC)[0] is OutboundAction.RESEND_PUBREL
    assert window.allocate(Outbound.AWAIT_PUBACK, None, None) == 1


def test_session_expiry_values() -> None:
    assert expiry_from_v5(None) == 0
    assert expiry_from_v5(30) == 30
    assert expiry_from_v5(0xFFFF_FFFF) is None


def test_session_record_rejects_unknown_formats() -> None:
    import msgpack

    with pytest.raises(ValueError, match="unknown format"):
        SessionState.decode("c", msgpack.packb({"version": 99}))


# --- the message mapping ------------------------------------------------------------------------


def test_publish_to_core_message_and_back() -> None:
    properties = Properties(
        payload_format_indicator=1, content_type="text/plain", response_topic="r/t",
        correlation_data=b"id", user_properties=(("a", "1"), ("a", "2"), ("_AMQ_DUPL_ID", "d1")),
        message_expiry_interval=10,
    )
    publish = Publish("a/b", b"text", 1, True, packet_id=3, properties=properties)
    message = message_from_publish(publish, "a.b", client_id="me", now_ms=1_000)
    assert message.durable and message.protocol == "mqtt" and message.codec is CODEC
    assert message.expiration == 11_000
    assert message.properties == {"a": "2", "_AMQ_DUPL_ID": "d1"}
    assert message.duplicate_id == "d1"
    decoded = Message.decode(7, message.encode(), {"mqtt": CODEC})
    assert decoded.extra == message.extra and decoded.properties == message.properties
    view = outbound_view(decoded)
    assert (view.payload, view.qos, view.retain, view.retained_copy) == (b"text", 1, True, False)
    rebuilt = v5_properties(view.properties, subscription_identifier=4, expiry_interval=9)
    assert rebuilt.user_properties == properties.user_properties
    assert rebuilt.subscription_identifiers == (4,)
    assert rebuilt.message_expiry_interval == 9
    assert message_topic(decoded) == "a/b"
    neutral = portable(decoded)
    assert neutral.text and neutral.content_type == "text/plain"
    assert neutral.reply_to == "r/t" and neutral.correlation_id == b"id"


def test_qos0_message_is_not_durable_and_has_no_properties() -> None:
    message = message_from_publish(Publish("t", b"x", 0), "t", client_id=None, now_ms=5)
    assert not message.durable and message.properties == {} and message.duplicate_id is None
    assert v5_properties(None, subscription_identifier=None, expiry_interval=None) is EMPTY_PROPERTIES


def test_foreign_message_view() -> None:
    message = Message(address="x.y", body=b"body", protocol="stomp-like")
    message.extra = {"content_type": "text/plain", "reply_to": "answers"}
    message._properties = {"n": 1, "flag": True, "raw": b"b", "skip": [1, 2]}  # noqa: SLF001
    view = outbound_view(message)
    assert view.qos == 2  # the subscription decides
    assert dict(view.properties["user_properties"]) == {"n": "1", "flag": "true", "raw": "b"}
    assert view.properties["response_topic"] == "answers"
    assert message_topic(message) == "x/y"


@pytest.mark.parametrize("identifier,expiry", list(itertools.product([None, 3], [None, 60])))
def test_v5_properties_combinations(identifier: int | None, expiry: int | None) -> None:
    built = v5_properties({"content_type": "a/b"}, subscription_identifier=identifier,
                          expiry_interval=expiry)
    assert built.content_type == "a/b"
    assert built.subscription_identifiers == ((identifier,) if identifier else ())
    assert built.message_expiry_interval == expiry
