"""MQTT 3.1, 3.1.1 and 5 connections: codec packets <-> ServerSession operations.

Theory of operation
-------------------
Bytes from the socket go into the sans-I/O :class:`~.codec.MQTTCodec`; each decoded packet is
handled at once and the bytes to send are collected and written once per read (or once per loop
turn, for deliveries caused by other connections). The QoS flows and session phases are the
tables of :mod:`.session`; this module carries out their actions.

* CONNECT: authentication (``server.authenticate``; no credentials only when the security store
  allows anonymous clients), client-id rules (an empty id is generated under clean start),
  takeover of a connected client id (v5 DISCONNECT 0x8E to the old connection), the session
  (clean start discards a stored one; persistent = 3.1.1 clean session 0 or v5 session expiry > 0),
  the will, CONNACK with the limits the server announces, then the session's subscriptions are
  consumed again and pending PUBRELs re-sent. Keep alive is enforced at 1.5 times the interval
  (Artemis's ``serverKeepAlive`` acceptor parameter overrides larger or zero client values).
* PUBLISH: a core message per PUBLISH (:mod:`.message`), routed through the session with the
  ``send`` check, a retained copy when RETAIN is set (:mod:`.retain`). PUBACK / PUBREC go out only
  once what was stored is durable, in the order the PUBLISHes came (a FIFO of replies), and
  reading stops while too many replies wait for the disk.
* SUBSCRIBE: one core queue per subscription (durable for a persistent session, temporary
  otherwise, one per share group for ``$share/<group>/<filter>``), a consumer on it whose
  deliverer is a :class:`Subscription`; per-filter SUBACK codes; retained messages by retain
  handling. UNSUBSCRIBE closes the consumer and deletes the queue.
* Delivery: a :class:`Subscription` refuses a reference (returns False) while the socket's writes
  are paused or, for QoS 1/2, while the client's receive-maximum window is full; otherwise it
  sends a PUBLISH at min(subscription QoS, message QoS). QoS 0 references are acknowledged once
  written, QoS 1/2 ones when the flow table says so.
* The end of a connection (DISCONNECT, close, keep-alive timeout, protocol error, takeover,
  broker stop) closes the consumers (unacknowledged references return to their queues), then
  detaches a persistent session (expiry and will-delay timers) or ends a transient one; the will
  is published unless the client disconnected normally.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pybroker.broker.message import MessageReference
from pybroker.broker.postoffice import AddressNotFoundError
from pybroker.broker.queue import QueueError
from pybroker.broker.server import BrokerServer, NotActiveError
from pybroker.broker.session import ServerSession
from pybroker.config.model import RoutingType
from pybroker.errors import AddressFullError, PyBrokerError, SecurityError
from pybroker.protocol.mqtt.base import (
    MQTTLocalProtocolError,
    MQTTProtocolError,
    PacketTooLargeError,
    ReasonCode,
)
from pybroker.protocol.mqtt.codec import NEED_DATA, MQTTCodec
from pybroker.protocol.mqtt.message import (
    PROTOCOL,
    message_from_publish,
    outbound_view,
    v5_properties,
)
from pybroker.protocol.mqtt.packets import (
    MQTT_3_1,
    MQTT_5,
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
    RetainHandling,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from pybroker.protocol.mqtt.properties import EMPTY_PROPERTIES, Properties
from pybroker.protocol.mqtt.retain import RetainedMessages
from pybroker.protocol.mqtt.session import (
    PUBACK,
    PUBCOMP,
    PUBLISH_QOS2,
    PUBREC,
    PUBREC_FAILED,
    PUBREL,
    InboundAction,
    Outbound,
    OutboundAction,
    OutboundWindow,
    QoSFlowError,
    SessionPhase,
    SessionRegistry,
    SessionState,
    SubscriptionOptions,
    advance_session,
    expiry_from_v5,
)
from pybroker.protocol.mqtt.topics import (
    WildcardSyntax,
    core_subscription_queue,
    core_to_mqtt_topic,
    is_shared_subscription,
    mqtt_to_core_address,
    parse_shared_subscription,
)

log = logging.getLogger("pybroker.mqtt")

#: Core addresses MQTT clients may neither publish to nor subscribe to (retained messages etc.).
INTERNAL_ADDRESS_PREFIX = "$sys.mqtt."
MAX_PACKET_SIZE = 268_435_455
_KEEP_ALIVE_FACTOR = 1.5
_FLUSH_BYTES = 256 * 1024
_CACHE_LIMIT = 10_000

_AWAIT_PUBACK = Outbound.AWAIT_PUBACK
_AWAIT_PUBREC = Outbound.AWAIT_PUBREC
_ACKNOWLEDGE = OutboundAction.ACKNOWLEDGE
_MULTICAST = RoutingType.MULTICAST


def _param(params: Any, name: str, default: int) -> int:
    value = params.get(name) if params else None
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        log.warning("MQTT acceptor parameter %s=%r is not an integer; using %d", name, value, default)
        return default


def _param_bool(params: Any, name: str, default: bool) -> bool:
    value = params.get(name) if params else None
    if value is None or value == "":
        return default
    return str(value).strip().lower() == "true"


def wildcard_syntax(server: BrokerServer) -> WildcardSyntax:
    """The broker's core wildcard syntax (``<wildcard-addresses>``)."""
    config = server.configuration.wildcard_addresses
    return WildcardSyntax(config.delimiter, config.single_word, config.any_words)


def registry_for(server: BrokerServer) -> SessionRegistry:
    """The server's MQTT session registry, wired to delete the queues of expired sessions."""
    registry = SessionRegistry.for_server(server)
    if registry.on_expired is None:
        core = wildcard_syntax(server)

        def expired(state: SessionState) -> None:
            if "will" in state.timers:
                publish_will(server, state, core)
            delete_session_queues(server, registry, state, core)

        registry.on_expired = expired
        registry.start_expiry_timers()
    return registry


def delete_session_queues(
    server: BrokerServer, registry: SessionRegistry, state: SessionState, core: WildcardSyntax
) -> None:
    """Delete the subscription queues of an ended session (shared ones once nobody uses them)."""
    post_office = server.post_office
    for topic_filter in list(state.subscriptions):
        name = core_subscription_queue(topic_filter, state.client_id, core)
        queue = post_office.find_queue(name)
        if queue is None:
            continue
        if is_shared_subscription(topic_filter) and (
            queue.consumers or registry.shared_references(topic_filter, excluding=state)
        ):
            continue
        try:
            post_office.delete_queue(name, force=True)
        except PyBrokerError as error:
            log.warning("could not delete MQTT subscription queue %s: %s", name, error)
    state.subscriptions.clear()


def route_publish(
    server: BrokerServer,
    session: ServerSession,
    retained: RetainedMessages,
    publish: Publish,
    address: str,
    client_id: str | None,
) -> tuple[int, Awaitable[None] | None]:
    """Route one PUBLISH (and set its retained message); (queues reached, durable awaitable)."""
    message = message_from_publish(publish, address, client_id=client_id, now_ms=int(time.time() * 1000))
    routing = None if address in server.post_office.addresses else _MULTICAST
    result = session.send(message, routing)
    durable = result.durable
    if publish.retain:
        retained_durable = retained.retain(message, publish.topic)
        if retained_durable is not None:
            durable = retained_durable  # resolves after everything stored before it
    return result.queues, durable


def publish_will(server: BrokerServer, state: SessionState, core: WildcardSyntax) -> None:
    """Publish the will of ``state`` (through a session of the client's principal) and drop it."""
    will = state.will
    state.will = None
    timer = state.timers.pop("will", None)
    if timer is not None:
        timer.cancel()
    if will is None or state.principal is None or not server.active:
        return
    session = server.create_session(
        principal=state.principal, protocol=PROTOCOL, connection_id=f"will:{state.client_id}",
        client_id=state.client_id,
    )
    try:
        address = mqtt_to_core_address(will.topic, core)
        if address.startswith(INTERNAL_ADDRESS_PREFIX):
            log.warning("MQTT client %r: will topic %r is reserved; not published", state.client_id, will.topic)
            return
        publish = Publish(will.topic, will.payload, will.qos, will.retain, properties=will.properties)
        route_publish(server, session, RetainedMessages.for_server(server, core), publish, address,
                      state.client_id)
        log.debug("published the will of MQTT client %r on %r", state.client_id, will.topic)
    except SecurityError as error:
        log.warning("MQTT client %r may not publish its will on %r: %s", state.client_id, will.topic, error)
    except PyBrokerError as error:
        log.warning("could not publish the will of MQTT client %r: %s", state.client_id, error)
    finally:
        session.close(failed=False)


class Subscription:
    """One subscription of a connection: the deliverer of its core queue's consumer."""

    __slots__ = (
        "consumer",
        "dollar_guard",
        "handler",
        "no_local",
        "options",
        "owns_queue",
        "properties",
        "qos",
        "queue",
        "ready",
        "retain_as_published",
    )

    def __init__(self, handler: MQTTConnectionHandler, options: SubscriptionOptions, queue: Any,
                 owns_queue: bool) -> None:
        self.handler = handler
        self.queue = queue
        self.owns_queue = owns_queue
        self.consumer: Any = None
        self.ready = False
        self.update(options)

    def update(self, options: SubscriptionOptions) -> None:
        self.options = options
        self.qos = options.qos
        self.no_local = options.no_local
        self.retain_as_published = options.retain_as_published
        inner = options.topic_filter
        shared = parse_shared_subscription(inner)
        if shared is not None:
            inner = shared.topic_filter
        # [MQTT-4.7.2-1]: a filter starting with a wildcard does not match topics starting with $
        self.dollar_guard = inner[:1] in ("+", "#")
        self.properties = (
            EMPTY_PROPERTIES if options.identifier is None
            else Properties(subscription_identifiers=(options.identifier,))
        )

    # -- Deliverer ---------------------------------------------------------------------------
    def deliver(self, ref: MessageReference) -> bool:
        """Send ``ref`` to the client, or return False (no credit: the queue keeps it)."""
        handler = self.handler
        if not self.ready or handler.write_paused or handler.closed:
            handler.starved.add(self)
            return False
        try:
            return self._deliver(ref, handler)
        except Exception:  # noqa: BLE001 - another connection's read called us: fail only this one
            log.exception("MQTT client %r: delivery of message %s failed; closing the connection",
                          handler.client_id, ref.message.message_id)
            handler.loop.call_soon(handler.fail)
            self.ready = False
            return False

    def _deliver(self, ref: MessageReference, handler: MQTTConnectionHandler) -> bool:
        message = ref.message
        extra = message.extra
        topic = handler.topic_for(message)
        if self.dollar_guard and topic[:1] == "$":
            ref.queue.acknowledge(ref)
            return True
        if self.no_local and extra is not None and extra.get("client_id") == handler.client_id:
            ref.queue.acknowledge(ref)
            return True
        v5 = handler.v5
        if message.protocol == PROTOCOL and extra is not None and (not v5 or "v5" not in extra):
            # the common case: an MQTT message without v5 properties
            message_qos = extra.get("qos", 2)
            retained_copy = "retained_copy" in extra
            retain = retained_copy or (self.retain_as_published and v5 and extra.get("retain", False))
            payload = message.body
            values = None
        else:
            view = outbound_view(message)
            message_qos = view.qos
            retained_copy = view.retained_copy
            retain = retained_copy or (self.retain_as_published and v5 and view.retain)
            payload = view.payload
            values = view.properties
        qos = self.qos if self.qos < message_qos else message_qos
        window = handler.window
        if qos and len(window.flights) >= window.maximum:
            handler.starved.add(self)
            return False
        properties = EMPTY_PROPERTIES
        expiration = message.expiration
        if v5:
            expiry = None
            if expiration:
                left = expiration - int(time.time() * 1000)
                if left <= 0:
                    ref.queue.acknowledge(ref)
                    return True
                expiry = (left + 999) // 1000
            if values is None and expiry is None:
                properties = self.properties
            else:
                properties = v5_properties(
                    values, subscription_identifier=self.options.identifier, expiry_interval=expiry
                )
        packet_id = None
        if qos:
            packet_id = window.allocate(_AWAIT_PUBACK if qos == 1 else _AWAIT_PUBREC, ref, self)
        publish = Publish(topic, payload, qos, bool(retain), qos > 0 and ref.delivery_count > 0,
                          packet_id, properties)
        try:
            data = handler.codec.send(publish)
        except MQTTLocalProtocolError as error:
            # [MQTT-3.1.2-25] too large for the client: discard it as if it had been sent;
            # a topic MQTT cannot carry (a message sent to a wildcard address) likewise
            if packet_id is not None:
                window.release(packet_id)
            level = logging.DEBUG if isinstance(error, PacketTooLargeError) else logging.WARNING
            log.log(level, "MQTT client %r: message %s not delivered: %s", handler.client_id,
                    message.message_id, error)
            ref.queue.acknowledge(ref)
            return True
        handler.write(data)
        if not qos:
            ref.queue.acknowledge(ref)
        return True


class MQTTConnectionHandler:
    """One MQTT connection (the transport's protocol handler)."""

    def __init__(self, server: BrokerServer, context: Any) -> None:
        self.server = server
        self.context = context
        self.loop = asyncio.get_running_loop()
        params = getattr(context.acceptor, "params", None) or {}
        maximum_packet_size = _param(params, "maximumPacketSize", MAX_PACKET_SIZE)
        self.maximum_packet_size = (
            None if maximum_packet_size <= 0 else min(maximum_packet_size, MAX_PACKET_SIZE)
        )
        self.receive_maximum = max(1, min(_param(params, "receiveMaximum", 65_535), 65_535))
        self.topic_alias_maximum = min(_param(params, "topicAliasMaximum", 65_535), 65_535)
        self.server_keep_alive = _param(params, "serverKeepAlive", 60)
        self.default_session_expiry = _param(params, "defaultMqttSessionExpiryInterval", -1)
        self.default_in_flight = _param(params, "defaultMaximumInFlightPublishMessages", 65_535)
        self.close_on_publish_refused = _param_bool(
            params, "closeMqttConnectionOnPublishAuthorizationFailure", True
        )
        self.allow_link_stealing = _param_bool(params, "allowLinkStealing", True)
        self.codec = MQTTCodec("server", maximum_packet_size=self.maximum_packet_size)
        self.core = wildcard_syntax(server)
        self.registry = registry_for(server)
        self.retained = RetainedMessages.for_server(server, self.core)
        self.server_session: ServerSession | None = None
        self.state: SessionState | None = None
        self.client_id: str | None = None
        self.version = 0
        self.v5 = False
        self.window = OutboundWindow(self.default_in_flight)
        self.subscriptions: dict[str, Subscription] = {}
        self.starved: set[Subscription] = set()
        self.closed = False
        self.finished = False
        self.write_paused = False
        self.reading_paused = False
        self.limits_blocked = False
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_scheduled = False
        self._in_batch = False
        self._replies: deque[list[Any]] = deque()
        self.pending_replies_limit = 1000  #: replies waiting for the disk before reading stops
        self._keep_alive = 0.0
        self._last_activity = self.loop.time()
        self._keep_alive_handle: asyncio.TimerHandle | None = None
        self._topics: dict[str, str] = {}
        self._addresses: dict[str, str] = {}
        self._dispatch: dict[type, Callable[[Any], None]] = {
            Publish: self._on_publish,
            PubAck: self._on_puback,
            PubRec: self._on_pubrec,
            PubRel: self._on_pubrel,
            PubComp: self._on_pubcomp,
            Subscribe: self._on_subscribe,
            Unsubscribe: self._on_unsubscribe,
            PingReq: self._on_pingreq,
            Disconnect: self._on_disconnect,
            Connect: self._on_connect,
            Auth: self._on_auth,
        }

    # -- transport callbacks -----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._last_activity = self.loop.time()
        codec = self.codec
        dispatch = self._dispatch
        self._in_batch = True
        try:
            codec.receive_data(data)
            while True:
                packet = codec.next_event()
                if packet is NEED_DATA:
                    break
                dispatch[type(packet)](packet)
                if self.closed:
                    return
        except MQTTProtocolError as error:
            self._protocol_error(error)
            return
        finally:
            self._in_batch = False
        if self.starved and not self.write_paused:
            self._prompt_starved()
        if self._out:
            self._flush()

    def eof_received(self) -> None:
        self._finish(will=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(will=True)

    def pause_writing(self) -> None:
        self.write_paused = True
        # the client does not read: stop reading its publishes too (our acks would pile up)
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if len(self._replies) < self.pending_replies_limit // 2:
            self._resume_reading()
        if self.starved:
            self._prompt_starved()
        if self._out:
            self._flush()

    def force_close(self) -> None:
        """Close from the broker side (broker stop, failback)."""
        if self.closed:
            return
        self._send_disconnect(ReasonCode.SERVER_SHUTTING_DOWN)
        self._flush()
        self.context.close()
        self._finish(will=False)

    # -- output ------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue bytes for the socket (written at the end of the read, or on the next turn)."""
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= _FLUSH_BYTES:
            self._flush()
        elif not self._flush_scheduled and not self._in_batch:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_size = 0
        self.context.write(data)

    def _send(self, packet: Any) -> None:
        self.write(self.codec.send(packet))

    def _send_disconnect(self, reason: int) -> None:
        if self.v5 and self.state is not None:
            try:
                self._send(Disconnect(reason))
            except MQTTLocalProtocolError:
                pass

    def _block_on_limits(self, address: str) -> None:
        """The address is full with the BLOCK policy: stop reading until it has room (MQTT has
        no credit; the client's TCP window does the rest)."""
        if self.limits_blocked:
            return
        self.limits_blocked = True
        self._pause_reading()

        def unblocked() -> None:
            self.limits_blocked = False
            self._resume_reading()

        self.server.post_office.when_free(address, unblocked)

    def _pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.context.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and not self.write_paused and not self.limits_blocked and not self.closed:
            self.reading_paused = False
            self.context.resume_reading()

    # -- ordered replies ---------------------------------------------------------------------
    def _reply(self, data: bytes, durable: Awaitable[None] | None = None,
               then: Callable[[], None] | None = None) -> None:
        """Send ``data`` once ``durable`` resolved and every earlier reply went out."""
        replies = self._replies
        if durable is None and not replies:
            self.write(data)
            if then is not None:
                then()
            return
        entry = [data, durable is None, then]
        replies.append(entry)
        if durable is not None:
            self._when_durable(durable, entry)
            if len(replies) >= self.pending_replies_limit:
                self._pause_reading()
        else:
            self._drain_replies()

    def _when_durable(self, durable: Awaitable[None], entry: list[Any]) -> None:
        def done(future: Any) -> None:
            if self.closed:
                return
            error = None if future.cancelled() else future.exception()
            if error is not None or future.cancelled():
                log.error("MQTT client %r: storage failed, closing: %s", self.client_id, error)
                self._close(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, will=True)
                return
            entry[1] = True
            self._drain_replies()
            if not self._in_batch:
                self._flush()

        if isinstance(durable, asyncio.Future):
            durable.add_done_callback(done)
        else:
            asyncio.ensure_future(durable).add_done_callback(done)

    def _drain_replies(self) -> None:
        replies = self._replies
        while replies and replies[0][1]:
            data, _ready, then = replies.popleft()
            self.write(data)
            if then is not None:
                then()
        if self.reading_paused and len(replies) < self.pending_replies_limit // 2:
            self._resume_reading()

    # -- connection end ----------------------------------------------------------------------
    def _protocol_error(self, error: MQTTProtocolError) -> None:
        log.warning("MQTT connection %s from %s: %s", self.context.connection_id,
                    self.context.remote_address, error)
        response = error.response
        if response is None and isinstance(error, QoSFlowError) and self.v5:
            response = Disconnect(ReasonCode.PROTOCOL_ERROR)
        if response is not None:
            try:
                self.write(self.codec.send(response))
            except MQTTLocalProtocolError:
                pass
        self._flush()
        self.context.close()
        self._finish(will=True)

    def _close(self, reason: int, *, will: bool) -> None:
        """Close from our side, with a v5 DISCONNECT naming ``reason``."""
        if self.closed:
            return
        self._send_disconnect(reason)
        self._flush()
        self.context.close()
        self._finish(will=will)

    def fail(self) -> None:
        """Close after an internal error (logged by the caller)."""
        self._close(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, will=True)

    def take_over(self) -> None:
        """Another connection CONNECTed with our client id: step aside ([MQTT-3.1.4-2])."""
        self._close(ReasonCode.SESSION_TAKEN_OVER, will=False)

    def _finish(self, *, will: bool) -> None:
        """The connection is gone: settle the session (see the module docstring)."""
        if self.finished:
            return
        self.finished = True
        self.closed = True
        if self._keep_alive_handle is not None:
            self._keep_alive_handle.cancel()
            self._keep_alive_handle = None
        self._replies.clear()
        self._out.clear()
        for subscription in self.subscriptions.values():
            subscription.ready = False
        self.starved.clear()
        if self.server_session is not None:
            # unacknowledged references return to their queues (redelivered with DUP set)
            self.server_session.close(failed=True)
        self.window.clear()
        state = self.state
        if state is None:
            return
        registry = self.registry
        if registry.connected.get(state.client_id) is self:
            del registry.connected[state.client_id]
        if state.phase is not SessionPhase.ATTACHED:
            return
        if state.persistent and state.expiry_interval != 0:
            advance_session(state, "disconnect")
            state.disconnected_at = registry.clock()
            registry.store(state)
            registry.schedule_expiry(state)
            if will and state.will is not None:
                delay = state.will_delay
                if state.expiry_interval is not None:
                    delay = min(delay, state.expiry_interval)
                if delay > 0:
                    registry.call_later(state, "will", delay,
                                        lambda: publish_will(self.server, state, self.core))
                else:
                    publish_will(self.server, state, self.core)
            else:
                state.will = None
            return
        if will:
            publish_will(self.server, state, self.core)
        advance_session(state, "end")
        delete_session_queues(self.server, registry, state, self.core)
        registry.forget(state)

    # -- keep alive --------------------------------------------------------------------------
    def _arm_keep_alive(self, seconds: int) -> None:
        if seconds <= 0:
            return
        self._keep_alive = seconds * _KEEP_ALIVE_FACTOR
        self._keep_alive_handle = self.loop.call_later(self._keep_alive, self._check_keep_alive)

    def _check_keep_alive(self) -> None:
        self._keep_alive_handle = None
        if self.closed:
            return
        idle = self.loop.time() - self._last_activity
        if idle >= self._keep_alive:
            log.info("MQTT client %r: no packet for %.1f s (keep alive), closing", self.client_id, idle)
            self._close(ReasonCode.KEEP_ALIVE_TIMEOUT, will=True)
            return
        self._keep_alive_handle = self.loop.call_later(self._keep_alive - idle, self._check_keep_alive)

    # -- CONNECT -----------------------------------------------------------------------------
    def _refuse(self, reason: int) -> None:
        try:
            self.write(self.codec.send(ConnAck(False, reason)))
        except MQTTLocalProtocolError:
            pass  # MQTT 3 has no code for it: just close
        self._flush()
        self.context.close()
        self.closed = True
        self.finished = True

    def _on_connect(self, connect: Connect) -> None:
        server = self.server
        version = connect.protocol_version
        self.version = version
        self.v5 = v5 = version == MQTT_5
        properties = connect.properties
        if v5 and properties.authentication_method is not None:
            self._refuse(ReasonCode.BAD_AUTHENTICATION_METHOD)
            return
        client_id = connect.client_id
        assigned = False
        if not client_id:
            if not connect.clean_start:
                self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
                return
            client_id = str(uuid.uuid4())
            assigned = True
        # authentication
        security = server.security
        username = connect.username
        password = None
        if connect.password is not None:
            password = connect.password.decode("utf-8", errors="replace")
        if username is None and password is None and not security.allows_anonymous():
            log.warning("AMQ224018: MQTT connection from %s refused: no credentials and anonymous "
                        "clients are not allowed", self.context.remote_address)
            self._refuse(ReasonCode.NOT_AUTHORIZED)
            return
        try:
            principal = server.authenticate(username, password)
        except SecurityError as error:
            log.warning("AMQ224018: Failed to authenticate MQTT client %r from %s (user %r): %s",
                        client_id, self.context.remote_address, username, error)
            self._refuse(ReasonCode.BAD_USER_NAME_OR_PASSWORD)
            return
        # takeover
        registry = self.registry
        existing = registry.connected.get(client_id)
        if existing is not None and existing is not self:
            if not self.allow_link_stealing:
                self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
                return
            log.debug("MQTT client %r connected again from %s: closing its old connection",
                      client_id, self.context.remote_address)
            existing.take_over()
        try:
            server.check_accepting()
        except NotActiveError:
            self._refuse(ReasonCode.SERVER_UNAVAILABLE)
            return
        session = server.create_session(
            principal=principal, protocol=PROTOCOL, connection_id=self.context.connection_id,
            client_id=client_id, remote_address=self.context.remote_address,
        )
        self.server_session = session
        self.client_id = client_id
        registry.connected[client_id] = self
        # the session
        state = registry.sessions.get(client_id)
        if state is not None and state.phase is SessionPhase.ENDED:
            state = None
        if state is not None and connect.clean_start:
            self._discard(state)
            state = None
        session_present = state is not None
        if state is None:
            state = SessionState(client_id)
            registry.sessions[client_id] = state
        state.cancel_timers()  # reconnected before expiry / will delay: neither happens now
        state.will = None
        advance_session(state, "connect")
        state.principal = principal
        state.disconnected_at = None
        if v5:
            state.expiry_interval = expiry_from_v5(properties.session_expiry_interval)
            persistent = state.expiry_interval != 0
        else:
            persistent = not connect.clean_start
            default = self.default_session_expiry
            state.expiry_interval = None if default < 0 else default
            if connect.clean_start:
                state.expiry_interval = 0
        # a resumed persistent session keeps its durable queues even when this connection asks
        # for expiry 0 (it then ends at disconnect)
        state.persistent = persistent or state.persistent
        self.state = state
        will = connect.will
        if will is not None:
            state.will = will
            state.will_delay = (will.properties.will_delay_interval or 0) if v5 else 0
        if v5 and properties.receive_maximum is not None:
            self.window.maximum = properties.receive_maximum
        # keep alive (Artemis: the server's value wins when the client's is larger or zero)
        keep_alive = connect.keep_alive
        using_server_keep_alive = False
        server_keep_alive = self.server_keep_alive
        if not (server_keep_alive == -1 or (0 < keep_alive <= server_keep_alive)):
            keep_alive = server_keep_alive
            using_server_keep_alive = True
        durable = registry.store(state) if persistent else None
        connack_properties = EMPTY_PROPERTIES
        if v5:
            connack_properties = Properties(
                assigned_client_identifier=client_id if assigned else None,
                receive_maximum=self.receive_maximum,
                retain_available=True,
                maximum_packet_size=self.maximum_packet_size,
                topic_alias_maximum=self.topic_alias_maximum if self.topic_alias_maximum > 0 else None,
                wildcard_subscription_available=True,
                subscription_identifier_available=True,
                shared_subscription_available=True,
                server_keep_alive=keep_alive if using_server_keep_alive else None,
            )
        connack = self.codec.send(ConnAck(session_present, ReasonCode.SUCCESS, connack_properties))
        self._reply(connack, durable, then=self._resume_session if session_present else None)
        self._arm_keep_alive(keep_alive)
        log.debug("MQTT client %r connected (version %d, session present %s, persistent %s)",
                  client_id, version, session_present, persistent)

    def _discard(self, state: SessionState) -> None:
        """A clean start ends the stored session of this client id."""
        if "will" in state.timers:
            publish_will(self.server, state, self.core)
        advance_session(state, "end")
        delete_session_queues(self.server, self.registry, state, self.core)
        self.registry.forget(state)

    def _resume_session(self) -> None:
        """After the CONNACK of a present session: consume again, re-send pending PUBRELs."""
        state = self.state
        if state is None or self.closed:
            return
        self.window.restore_releasing(state.releasing)
        for packet_id in sorted(state.releasing):
            self._send(PubRel(packet_id))
        for options in list(state.subscriptions.values()):
            try:
                subscription = self._open_subscription(options)
            except PyBrokerError as error:
                log.warning("MQTT client %r: could not resume subscription %r: %s",
                            self.client_id, options.topic_filter, error)
                continue
            self._start(subscription)

    def _on_auth(self, packet: Auth) -> None:
        # the codec only lets an AUTH through when CONNECT named a method, which we refuse
        self._close(ReasonCode.PROTOCOL_ERROR, will=True)

    def _on_pingreq(self, packet: PingReq) -> None:
        self._reply(self.codec.send(PingResp()))  # never ahead of a CONNACK waiting for the disk

    def _on_disconnect(self, packet: Disconnect) -> None:
        state = self.state
        if self.v5 and state is not None:
            expiry = packet.properties.session_expiry_interval
            if expiry is not None:
                state.expiry_interval = expiry_from_v5(expiry)
        # [MQTT-3.1.2-10] a normal DISCONNECT (0x00) discards the will; 0x04 and errors send it
        will = self.v5 and packet.reason_code != ReasonCode.NORMAL_DISCONNECTION
        self._flush()
        self.context.close()
        self._finish(will=will)

    # -- PUBLISH in --------------------------------------------------------------------------
    def _address_for(self, topic: str) -> str:
        address = self._addresses.get(topic)
        if address is None:
            if len(self._addresses) >= _CACHE_LIMIT:
                self._addresses.clear()
            address = self._addresses[topic] = mqtt_to_core_address(topic, self.core)
        return address

    def topic_for(self, message: Any) -> str:
        """The MQTT topic a core message goes out under."""
        extra = message.extra
        if extra is not None:
            topic = extra.get("topic")
            if topic is not None:
                return topic
        address = message.address
        topic = self._topics.get(address)
        if topic is None:
            if len(self._topics) >= _CACHE_LIMIT:
                self._topics.clear()
            topic = self._topics[address] = core_to_mqtt_topic(address, self.core)
        return topic

    def _on_publish(self, publish: Publish) -> None:
        state = self.state
        session = self.server_session
        if state is None or session is None:
            return  # refused connection (the codec lets packets follow the CONNECT)
        qos = publish.qos
        packet_id = publish.packet_id
        if qos == 2:
            action = state.inbound_event(packet_id, PUBLISH_QOS2)  # type: ignore[arg-type]
            if action is InboundAction.DUPLICATE:
                self._reply(self.codec.send(PubRec(packet_id)))  # type: ignore[arg-type]
                return
            if self.v5 and len(state.inbound) > self.receive_maximum:
                state.inbound.pop(packet_id, None)  # type: ignore[arg-type]
                self._close(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, will=True)
                return
        address = self._address_for(publish.topic)
        reason = ReasonCode.SUCCESS
        durable = None
        try:
            if address.startswith(INTERNAL_ADDRESS_PREFIX):
                raise _Refused(ReasonCode.TOPIC_NAME_INVALID, f"topic {publish.topic!r} is reserved")
            _queues, durable = route_publish(self.server, session, self.retained, publish, address,
                                             self.client_id)
            if not self.server.post_office.can_send(address):
                self._block_on_limits(address)
        except SecurityError as error:
            reason = ReasonCode.NOT_AUTHORIZED
            log.warning("MQTT client %r may not publish to %r: %s", self.client_id, publish.topic, error)
        except _Refused as error:
            reason = error.reason
            log.warning("MQTT client %r: %s", self.client_id, error)
        except AddressFullError as error:
            reason = ReasonCode.QUOTA_EXCEEDED
            log.warning("MQTT client %r: %s", self.client_id, error)
        except NotActiveError:
            self._close(ReasonCode.SERVER_UNAVAILABLE, will=False)
            return
        except (AddressNotFoundError, QueueError, PyBrokerError) as error:
            reason = ReasonCode.UNSPECIFIED_ERROR
            log.warning("MQTT client %r: publish to %r failed: %s", self.client_id, publish.topic, error)
        if reason:
            if qos == 2:
                state.inbound.pop(packet_id, None)  # type: ignore[arg-type]
            if not self.v5:
                if reason == ReasonCode.NOT_AUTHORIZED and (
                    self.version == MQTT_3_1 or not self.close_on_publish_refused
                ):
                    reason = ReasonCode.SUCCESS  # acknowledged, silently dropped (as Artemis)
                else:
                    self._close(reason, will=True)
                    return
        if qos == 1:
            self._reply(self.codec.send(PubAck(packet_id, reason)), durable)  # type: ignore[arg-type]
        elif qos == 2:
            if not reason and state.persistent:
                durable = self.registry.store(state) or durable
            self._reply(self.codec.send(PubRec(packet_id, reason)), durable)  # type: ignore[arg-type]

    def _on_pubrel(self, packet: PubRel) -> None:
        state = self.state
        if state is None:
            return
        action = state.inbound_event(packet.packet_id, PUBREL)
        if action is InboundAction.UNKNOWN:
            reason = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self.v5 else ReasonCode.SUCCESS
            self._reply(self.codec.send(PubComp(packet.packet_id, reason)))
            return
        durable = self.registry.store(state) if state.persistent else None
        self._reply(self.codec.send(PubComp(packet.packet_id)), durable)

    # -- acknowledgements of deliveries ------------------------------------------------------
    def _on_puback(self, packet: PubAck) -> None:
        action, flight = self.window.event(packet.packet_id, PUBACK)
        if action is _ACKNOWLEDGE and flight is not None and flight.ref is not None:
            ref = flight.ref
            ref.queue.acknowledge(ref)

    def _on_pubrec(self, packet: PubRec) -> None:
        event = PUBREC_FAILED if packet.reason_code >= 0x80 else PUBREC
        action, flight = self.window.event(packet.packet_id, event)
        state = self.state
        if action is OutboundAction.RELEASE:
            assert flight is not None
            ref, flight.ref = flight.ref, None
            if ref is not None:
                ref.queue.acknowledge(ref)
            if state is not None:
                state.releasing.add(packet.packet_id)
                self.registry.store(state)
            self._send(PubRel(packet.packet_id))
        elif action is OutboundAction.RESEND_PUBREL:
            self._send(PubRel(packet.packet_id))
        elif action is OutboundAction.UNKNOWN_PUBREL:
            reason = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self.v5 else ReasonCode.SUCCESS
            self._send(PubRel(packet.packet_id, reason))
        elif action is _ACKNOWLEDGE and flight is not None and flight.ref is not None:
            ref = flight.ref
            ref.queue.acknowledge(ref)
        elif action is OutboundAction.COMPLETE and state is not None:
            state.releasing.discard(packet.packet_id)
            self.registry.store(state)

    def _on_pubcomp(self, packet: PubComp) -> None:
        action, _flight = self.window.event(packet.packet_id, PUBCOMP)
        state = self.state
        if action is OutboundAction.COMPLETE and state is not None:
            state.releasing.discard(packet.packet_id)
            self.registry.store(state)

    def _prompt_starved(self) -> None:
        starved = list(self.starved)
        self.starved.clear()
        for subscription in starved:
            consumer = subscription.consumer
            if consumer is not None and subscription.ready:
                consumer.prompt_delivery()

    # -- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------
    def _subscription_queue(self, options: SubscriptionOptions) -> tuple[Any, bool, bool]:
        """The core queue of a subscription, whether the subscription owns it (an MQTT
        subscription to an anycast-only address consumes that address's queue, as Artemis does,
        and never deletes it) and whether it was created now."""
        session = self.server_session
        state = self.state
        assert session is not None and state is not None
        topic_filter = options.topic_filter
        shared = parse_shared_subscription(topic_filter)
        inner = shared.topic_filter if shared is not None else topic_filter
        address = mqtt_to_core_address(inner, self.core)
        if address.startswith(INTERNAL_ADDRESS_PREFIX):
            raise _Refused(ReasonCode.TOPIC_FILTER_INVALID, f"topic filter {topic_filter!r} is reserved")
        name = core_subscription_queue(topic_filter, state.client_id, self.core)
        queue = session.find_queue(name)
        if queue is not None:
            return queue, True, False
        # an existing address keeps its routing types (Artemis adds none); a new one is multicast
        info = session.post_office.addresses.get(address)
        if info is None:
            info = session.address_query(address, _MULTICAST, auto_create=True)
        if info is None:
            raise AddressNotFoundError(f"address {address!r} does not exist and may not be created")
        if _MULTICAST not in info.routing_types:
            queue = session.matching_queue(address, RoutingType.ANYCAST)
            if queue is None:
                raise AddressNotFoundError(f"anycast address {address!r} has no queue")
            return queue, False, False
        if state.persistent or shared is not None:
            queue = session.create_queue(name, address, _MULTICAST, durable=state.persistent,
                                         exist_ok=True)
        else:
            queue = session.create_temporary_queue(address, _MULTICAST, name=name)
        return queue, True, True

    def _open_subscription(self, options: SubscriptionOptions) -> Subscription:
        session = self.server_session
        assert session is not None
        queue, owns, created = self._subscription_queue(options)
        subscription = Subscription(self, options, queue, owns)
        try:
            subscription.consumer = session.create_consumer(queue.name, subscription)
        except PyBrokerError:
            if created and not queue.consumers:  # no queue left behind by a refused subscription
                self.server.post_office.delete_queue(queue.name, force=True)
                session.temporary_queues.discard(queue.name)
            raise
        self.subscriptions[options.topic_filter] = subscription
        return subscription

    def _start(self, subscription: Subscription) -> None:
        subscription.ready = True
        if subscription.consumer is not None:
            subscription.consumer.prompt_delivery()

    def _on_subscribe(self, packet: Subscribe) -> None:
        state = self.state
        if state is None or self.server_session is None:
            return
        identifiers = packet.properties.subscription_identifiers
        identifier = identifiers[0] if identifiers else None
        codes: list[int] = []
        started: list[Subscription] = []
        retained_for: list[Subscription] = []
        for requested in packet.subscriptions:
            topic_filter = requested.topic_filter
            options = SubscriptionOptions(
                topic_filter, requested.qos, requested.no_local, requested.retain_as_published,
                requested.retain_handling, identifier,
            )
            existed = topic_filter in state.subscriptions
            try:
                subscription = self.subscriptions.get(topic_filter)
                if subscription is None:
                    subscription = self._open_subscription(options)
                    started.append(subscription)
                else:
                    subscription.update(options)
            except SecurityError as error:
                log.warning("MQTT client %r may not subscribe to %r: %s", self.client_id, topic_filter, error)
                if self.v5:
                    codes.append(ReasonCode.NOT_AUTHORIZED)
                elif self.version == MQTT_3_1:
                    codes.append(requested.qos)  # 3.1 has no failure code (as Artemis)
                else:
                    codes.append(ReasonCode.UNSPECIFIED_ERROR)
                continue
            except _Refused as error:
                log.warning("MQTT client %r: %s", self.client_id, error)
                codes.append(error.reason)
                continue
            except PyBrokerError as error:
                log.warning("MQTT client %r: subscription to %r failed: %s", self.client_id, topic_filter, error)
                codes.append(ReasonCode.UNSPECIFIED_ERROR)
                continue
            state.subscriptions[topic_filter] = options
            codes.append(requested.qos)
            handling = requested.retain_handling
            if subscription.owns_queue and not is_shared_subscription(topic_filter) and (
                handling == RetainHandling.SEND_ON_SUBSCRIBE
                or (handling == RetainHandling.SEND_IF_NEW_SUBSCRIPTION and not existed)
            ):
                retained_for.append(subscription)
        durable = self.registry.store(state)
        suback = self.codec.send(SubAck(packet.packet_id, tuple(codes)))

        def after_suback() -> None:
            if self.closed:
                return
            for subscription in started:
                self._start(subscription)
            now_ms = int(time.time() * 1000)
            for subscription in retained_for:
                self._send_retained(subscription, now_ms)

        self._reply(suback, durable, then=after_suback)

    def _send_retained(self, subscription: Subscription, now_ms: int) -> None:
        topic_filter = subscription.options.topic_filter
        for topic, message in self.retained.matching(topic_filter, now_ms):
            try:
                self.retained.send_to_queue(subscription.queue, topic, message)
            except PyBrokerError as error:
                log.warning("MQTT client %r: retained message of %r not sent: %s",
                            self.client_id, topic, error)

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        state = self.state
        session = self.server_session
        if state is None or session is None:
            return
        codes: list[int] = []
        for topic_filter in packet.topic_filters:
            subscription = self.subscriptions.get(topic_filter)
            if topic_filter not in state.subscriptions and subscription is None:
                codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
                continue
            if subscription is not None:
                queue, owns = subscription.queue, subscription.owns_queue
            else:  # a stored subscription that could not be resumed
                queue = session.find_queue(core_subscription_queue(topic_filter, state.client_id, self.core))
                owns = True
            if queue is not None and owns:
                permission = "deleteDurableQueue" if queue.durable else "deleteNonDurableQueue"
                try:
                    session.check(queue.address, permission)
                except SecurityError as error:
                    log.warning("MQTT client %r may not unsubscribe from %r: %s",
                                self.client_id, topic_filter, error)
                    codes.append(ReasonCode.NOT_AUTHORIZED)
                    continue
            self.subscriptions.pop(topic_filter, None)
            state.subscriptions.pop(topic_filter, None)
            if subscription is not None:
                subscription.ready = False
                self.starved.discard(subscription)
                if subscription.consumer is not None:
                    session.close_consumer(subscription.consumer, failed=False)
            if queue is not None and owns and not queue.deleted:
                shared = is_shared_subscription(topic_filter)
                if not shared or not (queue.consumers or self.registry.shared_references(topic_filter)):
                    try:
                        session.delete_queue(queue.name)
                    except PyBrokerError as error:
                        log.warning("could not delete MQTT subscription queue %s: %s", queue.name, error)
            codes.append(ReasonCode.SUCCESS)
        durable = self.registry.store(state)
        unsuback = UnsubAck(packet.packet_id, tuple(codes) if self.v5 else ())
        self._reply(self.codec.send(unsuback), durable)


class _Refused(PyBrokerError):
    """A client operation refused with a specific reason code."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = ReasonCode(reason)


__all__ = [
    "INTERNAL_ADDRESS_PREFIX",
    "MQTTConnectionHandler",
    "Subscription",
    "delete_session_queues",
    "publish_will",
    "registry_for",
    "route_publish",
    "wildcard_syntax",
]
