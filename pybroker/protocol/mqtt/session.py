"""MQTT session state, the QoS flow tables, and the broker's registry of MQTT sessions.

Theory of operation
-------------------
An MQTT *session* outlives its network connection when the client asks for it (3.1.1 clean
session 0, v5 session expiry interval > 0). A :class:`SessionState` is what the broker keeps of
it: the subscriptions with their options, the QoS 2 packet identifiers still in flight in both
directions, the session expiry interval and, while the client is away, when it left. Messages
queued for a session are not kept here: each subscription is a core queue named as Artemis names
it (``<client-id>.<filter as core address>``, ``<share-name>.<filter>`` for a shared one), durable
for a persistent session, so its messages survive a restart through the journal like any other
queue's. The state itself is one key-value record (namespace ``mqtt-session``, key the client id)
written whenever it changes and read back from ``server.recovery.key_values`` when the broker
starts.

Four tables drive everything; each maps (state, event) to (next state, action) and nothing else
is allowed (an unknown pair raises :class:`QoSFlowError` naming both):

* ``SESSION_LIFECYCLE``: a session is ATTACHED to a connection, DETACHED (persistent, client
  away, expiry timer running) or ENDED (its queues deleted, its record removed).
* ``INBOUND_FLOW`` (client -> server, per packet identifier): QoS 0 and 1 need no state (QoS 1 is
  PUBACKed once the message is durable); a QoS 2 PUBLISH is routed once and its identifier held in
  AWAIT_PUBREL until PUBREL, so a re-sent PUBLISH with the same identifier is acknowledged but not
  routed twice (exactly once).
* ``OUTBOUND_FLOW`` (server -> client, per packet identifier): a QoS 1 delivery waits for PUBACK,
  then its core reference is acknowledged; a QoS 2 delivery waits for PUBREC, then the reference is
  acknowledged (the client now owns the message) and the identifier waits in AWAIT_PUBCOMP for the
  PUBCOMP. AWAIT_PUBCOMP identifiers belong to the session: after a reconnect the PUBREL is sent
  again (MQTT 3.1.1 §4.4, 5.0 §4.4), never the PUBLISH. A QoS 1/2 delivery interrupted before its
  acknowledgement goes back to its queue and is sent again with DUP set.

The :class:`OutboundWindow` holds the outbound flows of one connection and allocates packet
identifiers (1..65535, skipping those in use). Its size is the client's v5 Receive Maximum (or
Artemis's default 65535): a subscription's deliverer refuses new QoS 1/2 messages while it is full.

One :class:`SessionRegistry` per broker server (kept beside the server, created by the first MQTT
connection) knows every session and which connection holds each client id (for takeover), writes
and deletes the records, and runs the timers for session expiry and delayed will messages.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from pybroker.protocol.mqtt.base import MQTTProtocolError, ReasonCode
from pybroker.protocol.mqtt.packets import Will

if TYPE_CHECKING:
    from pybroker.broker.message import MessageReference
    from pybroker.broker.security import Principal
    from pybroker.broker.server import BrokerServer

log = logging.getLogger("pybroker.mqtt")

#: Key-value namespace of the session records.
SESSION_NAMESPACE = "mqtt-session"
#: A session expiry interval meaning "never" (v5 0xFFFFFFFF; MQTT 3 persistent sessions).
NEVER_EXPIRES: int | None = None
_FOUR_BYTE_MAX = 0xFFFF_FFFF
_RECORD_VERSION = 1


class QoSFlowError(MQTTProtocolError):
    """An event a flow table has no entry for; names the table, the state and the event."""

    def __init__(self, table: str, state: Any, event: str, what: str = "") -> None:
        name = state.name if isinstance(state, enum.Enum) else "NONE" if state is None else state
        suffix = f" ({what})" if what else ""
        super().__init__(
            ReasonCode.PROTOCOL_ERROR, f"{table}: event {event} is not allowed in state {name}{suffix}"
        )
        self.table = table
        self.state = state
        self.event = event


# --- the tables ---------------------------------------------------------------------------------


class SessionPhase(enum.Enum):
    ATTACHED = "attached"
    DETACHED = "detached"
    ENDED = "ended"


#: (phase or None for a new session, event) -> next phase.
SESSION_LIFECYCLE: dict[tuple[SessionPhase | None, str], SessionPhase] = {
    (None, "connect"): SessionPhase.ATTACHED,
    (SessionPhase.DETACHED, "connect"): SessionPhase.ATTACHED,  # resumed (session present)
    (SessionPhase.ATTACHED, "disconnect"): SessionPhase.DETACHED,  # persistent: kept
    (SessionPhase.ATTACHED, "end"): SessionPhase.ENDED,  # not persistent, or expiry 0 at the end
    (SessionPhase.DETACHED, "expire"): SessionPhase.ENDED,
    (SessionPhase.DETACHED, "end"): SessionPhase.ENDED,  # a clean start discarded it
}


class Inbound(enum.Enum):
    AWAIT_PUBREL = "await-pubrel"


class InboundAction(enum.Enum):
    ROUTE = "route, then PUBREC once durable"
    DUPLICATE = "PUBREC again, do not route"
    COMPLETE = "forget the identifier, PUBCOMP"
    UNKNOWN = "PUBCOMP with 0x92 (packet identifier not found)"


PUBLISH_QOS2 = "PUBLISH(QoS 2)"
PUBREL = "PUBREL"

#: (state of the packet identifier, event) -> (next state, action), client -> server.
INBOUND_FLOW: dict[tuple[Inbound | None, str], tuple[Inbound | None, InboundAction]] = {
    (None, PUBLISH_QOS2): (Inbound.AWAIT_PUBREL, InboundAction.ROUTE),
    (Inbound.AWAIT_PUBREL, PUBLISH_QOS2): (Inbound.AWAIT_PUBREL, InboundAction.DUPLICATE),
    (Inbound.AWAIT_PUBREL, PUBREL): (None, InboundAction.COMPLETE),
    (None, PUBREL): (None, InboundAction.UNKNOWN),
}


class Outbound(enum.Enum):
    AWAIT_PUBACK = "await-puback"
    AWAIT_PUBREC = "await-pubrec"
    AWAIT_PUBCOMP = "await-pubcomp"


class OutboundAction(enum.Enum):
    ACKNOWLEDGE = "acknowledge the reference, free the identifier"
    RELEASE = "acknowledge the reference, send PUBREL"
    RESEND_PUBREL = "send PUBREL again"
    COMPLETE = "free the identifier"
    UNKNOWN_PUBREL = "PUBREL with 0x92 (packet identifier not found)"
    IGNORE = "nothing (a stale acknowledgement)"


PUBACK = "PUBACK"
PUBREC = "PUBREC"
PUBREC_FAILED = "PUBREC(failure)"
PUBCOMP = "PUBCOMP"

#: (state of the packet identifier, event) -> (next state, action), server -> client.
OUTBOUND_FLOW: dict[tuple[Outbound | None, str], tuple[Outbound | None, OutboundAction]] = {
    (Outbound.AWAIT_PUBACK, PUBACK): (None, OutboundAction.ACKNOWLEDGE),
    (Outbound.AWAIT_PUBREC, PUBREC): (Outbound.AWAIT_PUBCOMP, OutboundAction.RELEASE),
    # a PUBREC with a reason code >= 0x80 ends the flow (MQTT 5 §4.3.3): the client refused it
    (Outbound.AWAIT_PUBREC, PUBREC_FAILED): (None, OutboundAction.ACKNOWLEDGE),
    (Outbound.AWAIT_PUBCOMP, PUBREC): (Outbound.AWAIT_PUBCOMP, OutboundAction.RESEND_PUBREL),
    (Outbound.AWAIT_PUBCOMP, PUBREC_FAILED): (None, OutboundAction.COMPLETE),
    (Outbound.AWAIT_PUBCOMP, PUBCOMP): (None, OutboundAction.COMPLETE),
    # identifiers not in use: acknowledgements for deliveries of an earlier connection
    (None, PUBACK): (None, OutboundAction.IGNORE),
    (None, PUBREC): (None, OutboundAction.UNKNOWN_PUBREL),
    (None, PUBREC_FAILED): (None, OutboundAction.IGNORE),
    (None, PUBCOMP): (None, OutboundAction.IGNORE),
}


def advance_session(state: SessionState, event: str) -> SessionPhase:
    """Move ``state`` through SESSION_LIFECYCLE; raises QoSFlowError for a missing entry."""
    phase = SESSION_LIFECYCLE.get((state.phase, event))
    if phase is None:
        raise QoSFlowError("session lifecycle", state.phase, event, f"client {state.client_id!r}")
    state.phase = phase
    return phase


# --- session state ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """One subscription of a session, as the client asked for it."""

    topic_filter: str  # as sent, ``$share/<name>/<filter>`` included
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int | None = None


class SessionState:
    """What the broker keeps of one client's session (see the module docstring)."""

    __slots__ = (
        "client_id",
        "disconnected_at",
        "expiry_interval",
        "inbound",
        "persistent",
        "phase",
        "principal",
        "releasing",
        "subscriptions",
        "timers",
        "will",
        "will_delay",
    )

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.phase: SessionPhase | None = None
        self.subscriptions: dict[str, SubscriptionOptions] = {}
        #: client -> server QoS 2 identifiers routed and waiting for PUBREL
        self.inbound: dict[int, Inbound] = {}
        #: server -> client QoS 2 identifiers PUBRELeased and waiting for PUBCOMP
        self.releasing: set[int] = set()
        #: seconds the session outlives its connection; None = never expires
        self.expiry_interval: int | None = 0
        self.persistent = False
        self.disconnected_at: float | None = None  # wall-clock seconds
        self.will: Will | None = None
        self.will_delay = 0
        self.principal: Principal | None = None
        self.timers: dict[str, asyncio.TimerHandle] = {}

    # -- inbound QoS 2 ------------------------------------------------------------------------
    def inbound_event(self, packet_id: int, event: str) -> InboundAction:
        """Apply ``event`` (PUBLISH_QOS2 or PUBREL) to a client -> server packet identifier."""
        current = self.inbound.get(packet_id)
        entry = INBOUND_FLOW.get((current, event))
        if entry is None:
            raise QoSFlowError("inbound QoS flow", current, event, f"packet identifier {packet_id}")
        following, action = entry
        if following is None:
            self.inbound.pop(packet_id, None)
        else:
            self.inbound[packet_id] = following
        return action

    # -- timers -------------------------------------------------------------------------------
    def cancel_timers(self) -> None:
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()

    # -- record -------------------------------------------------------------------------------
    def encode(self) -> bytes:
        """The key-value record of this session."""
        subscriptions = [
            (s.topic_filter, s.qos, s.no_local, s.retain_as_published, s.retain_handling, s.identifier)
            for s in self.subscriptions.values()
        ]
        return msgpack.packb(
            {
                "version": _RECORD_VERSION,
                "subscriptions": subscriptions,
                "inbound_qos2": sorted(self.inbound),
                "outbound_pubrel": sorted(self.releasing),
                "expiry_interval": self.expiry_interval,
                "disconnected_at": self.disconnected_at,
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, client_id: str, data: bytes) -> SessionState:
        """Inverse of :meth:`encode` (a DETACHED, persistent session)."""
        record = msgpack.unpackb(data, raw=False)
        if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:
            raise ValueError(f"MQTT session record of {client_id!r} has an unknown format")
        state = cls(client_id)
        for topic_filter, qos, no_local, rap, handling, identifier in record["subscriptions"]:
            state.subscriptions[topic_filter] = SubscriptionOptions(
                topic_filter, qos, no_local, rap, handling, identifier
            )
        state.inbound = {packet_id: Inbound.AWAIT_PUBREL for packet_id in record["inbound_qos2"]}
        state.releasing = set(record["outbound_pubrel"])
        state.expiry_interval = record["expiry_interval"]
        state.disconnected_at = record["disconnected_at"]
        state.persistent = True
        state.phase = SessionPhase.DETACHED
        return state

    def __repr__(self) -> str:
        return (
            f"SessionState(client_id={self.client_id!r}, phase={self.phase}, "
            f"subscriptions={list(self.subscriptions)}, expiry={self.expiry_interval})"
        )


def expiry_from_v5(value: int | None) -> int | None:
    """A v5 Session Expiry Interval property as kept here (None = never)."""
    if value is None:
        return 0
    return NEVER_EXPIRES if value == _FOUR_BYTE_MAX else value


# --- the outbound window ------------------------------------------------------------------------


class InFlight:
    """One server -> client delivery waiting for its acknowledgement."""

    __slots__ = ("ref", "state", "subscription")

    def __init__(self, state: Outbound, ref: MessageReference | None, subscription: Any) -> None:
        self.state = state
        self.ref = ref
        self.subscription = subscription


class OutboundWindow:
    """Packet identifiers in use towards one client and the flows they are in."""

    __slots__ = ("_next", "flights", "maximum")

    def __init__(self, maximum: int = 65_535) -> None:
        self.flights: dict[int, InFlight] = {}
        self.maximum = max(1, min(maximum, 65_535))
        self._next = 0

    @property
    def full(self) -> bool:
        return len(self.flights) >= self.maximum

    def __len__(self) -> int:
        return len(self.flights)

    def allocate(self, state: Outbound, ref: MessageReference | None, subscription: Any) -> int:
        """A free packet identifier for a new delivery (raises if all 65535 are in use)."""
        flights = self.flights
        if len(flights) >= 65_535:
            raise MQTTProtocolError(
                ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "all 65535 packet identifiers are in use"
            )
        packet_id = self._next
        while True:
            packet_id = packet_id + 1 if packet_id < 65_535 else 1
            if packet_id not in flights:
                break
        self._next = packet_id
        flights[packet_id] = InFlight(state, ref, subscription)
        return packet_id

    def restore_releasing(self, packet_ids: set[int]) -> None:
        """Identifiers a resumed session still waits a PUBCOMP for."""
        for packet_id in packet_ids:
            self.flights[packet_id] = InFlight(Outbound.AWAIT_PUBCOMP, None, None)

    def release(self, packet_id: int) -> None:
        """Free an identifier whose delivery never went out (too large for the client)."""
        self.flights.pop(packet_id, None)

    def event(self, packet_id: int, event: str) -> tuple[OutboundAction, InFlight | None]:
        """Apply an acknowledgement to ``packet_id``: the action and the flight it concerned."""
        flight = self.flights.get(packet_id)
        current = flight.state if flight is not None else None
        entry = OUTBOUND_FLOW.get((current, event))
        if entry is None:
            raise QoSFlowError("outbound QoS flow", current, event, f"packet identifier {packet_id}")
        following, action = entry
        if flight is not None:
            if following is None:
                del self.flights[packet_id]
            else:
                flight.state = following
        return action, flight

    def clear(self) -> list[InFlight]:
        """Forget every flight (the connection is gone); returns them."""
        flights = list(self.flights.values())
        self.flights.clear()
        return flights


# --- the registry -------------------------------------------------------------------------------

_REGISTRIES: weakref.WeakKeyDictionary[Any, SessionRegistry] = weakref.WeakKeyDictionary()


class SessionRegistry:
    """The MQTT sessions of one broker server (see the module docstring)."""

    def __init__(self, server: BrokerServer, *, clock: Callable[[], float] = time.time) -> None:
        self.server = server
        self.clock = clock
        self.sessions: dict[str, SessionState] = {}
        #: client id -> the connection handler holding it now
        self.connected: dict[str, Any] = {}
        #: called with a DETACHED state whose expiry passed (deletes its queues)
        self.on_expired: Callable[[SessionState], None] | None = None
        #: <mqtt-subscription-persistence-enabled>: false keeps session records in memory only
        self.persistence_enabled = bool(
            getattr(server.configuration, "mqtt_subscription_persistence_enabled", True)
        )
        self._load()

    @classmethod
    def for_server(cls, server: BrokerServer) -> SessionRegistry:
        """The registry of ``server`` (created, and the stored sessions loaded, on first use)."""
        registry = _REGISTRIES.get(server)
        if registry is None:
            registry = _REGISTRIES[server] = cls(server)
        return registry

    def _load(self) -> None:
        recovery = self.server.recovery
        if recovery is None:
            return
        for (namespace, client_id), (_record_id, data) in recovery.key_values.items():
            if namespace != SESSION_NAMESPACE:
                continue
            try:
                state = SessionState.decode(client_id, data)
            except (ValueError, KeyError, TypeError, msgpack.UnpackException) as error:
                log.warning("ignoring the stored MQTT session of %r: %s", client_id, error)
                continue
            self.sessions[client_id] = state
        if self.sessions:
            log.info("recovered %d MQTT session(s)", len(self.sessions))

    def start_expiry_timers(self) -> None:
        """Arm the expiry timer of every recovered (detached) session."""
        for state in list(self.sessions.values()):
            if state.phase is SessionPhase.DETACHED:
                self.schedule_expiry(state)

    # -- records --------------------------------------------------------------------------------
    def store(self, state: SessionState) -> Awaitable[None] | None:
        """Write the record of a persistent session; the awaitable resolves once it is durable
        together with everything stored before it (messages, and the subscription queues whose
        records precede it in the bindings journal)."""
        if not state.persistent or not self.persistence_enabled:
            return None
        storage = self.server.storage
        storage.store_key_value(SESSION_NAMESPACE, state.client_id, state.encode())
        # covers the bindings journal too, where this record and the subscription queues go
        return storage.durable()

    def forget(self, state: SessionState) -> None:
        """Remove a session (its record too). Its queues are the caller's business."""
        state.cancel_timers()
        if self.sessions.get(state.client_id) is state:
            del self.sessions[state.client_id]
        if state.persistent and self.persistence_enabled:
            self.server.storage.delete_key_value(SESSION_NAMESPACE, state.client_id)

    # -- timers ---------------------------------------------------------------------------------
    def call_later(self, state: SessionState, name: str, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` after ``delay`` s unless the state's timers are cancelled first."""
        old = state.timers.pop(name, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            state.timers.pop(name, None)
            if not self.server.active:
                return
            try:
                callback()
            except Exception:  # noqa: BLE001 - a timer is a task boundary
                log.exception("MQTT session %r: %s timer failed", state.client_id, name)

        state.timers[name] = asyncio.get_running_loop().call_later(max(0.0, delay), fire)

    def schedule_expiry(self, state: SessionState) -> None:
        """Arm the expiry timer of a detached session (nothing for one that never expires)."""
        interval = state.expiry_interval
        if interval is None:
            return
        left = interval - (self.clock() - (state.disconnected_at or self.clock()))
        self.call_later(state, "expiry", left, lambda: self._expire(state))

    def _expire(self, state: SessionState) -> None:
        if state.phase is not SessionPhase.DETACHED or self.sessions.get(state.client_id) is not state:
            return
        log.debug("MQTT session %r expired", state.client_id)
        advance_session(state, "expire")
        if self.on_expired is not None:
            self.on_expired(state)
        self.forget(state)

    def shared_references(self, topic_filter: str, *, excluding: SessionState | None = None) -> int:
        """How many sessions (other than ``excluding``) hold the shared subscription ``topic_filter``."""
        return sum(
            1
            for state in self.sessions.values()
            if state is not excluding and topic_filter in state.subscriptions
        )


__all__ = [
    "INBOUND_FLOW",
    "NEVER_EXPIRES",
    "OUTBOUND_FLOW",
    "PUBACK",
    "PUBCOMP",
    "PUBLISH_QOS2",
    "PUBREC",
    "PUBREC_FAILED",
    "PUBREL",
    "SESSION_LIFECYCLE",
    "SESSION_NAMESPACE",
    "InFlight",
    "Inbound",
    "InboundAction",
    "Outbound",
    "OutboundAction",
    "OutboundWindow",
    "QoSFlowError",
    "SessionPhase",
    "SessionRegistry",
    "SessionState",
    "SubscriptionOptions",
    "advance_session",
    "expiry_from_v5",
]
