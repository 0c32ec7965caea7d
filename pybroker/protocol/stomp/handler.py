"""STOMP 1.0 / 1.1 / 1.2 connections: frames <-> ServerSession operations, as Artemis serves them.

Theory of operation
-------------------
Bytes from the socket go into the sans-I/O :class:`~.codec.StompCodec`; each decoded frame is
dispatched by the table ``_ACCEPTED`` (which commands a connection state takes) to one
``_on_<command>`` method. The states:

``AWAITING_CONNECT``  only CONNECT / STOMP: version negotiation (the codec switches version
                      right after the CONNECT, so frames already buffered are decoded in it),
                      authentication through the server's security store, heart-beats, one
                      :class:`ServerSession` for the connection;
``CONNECTED``         SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, BEGIN, COMMIT, ABORT, DISCONNECT;
``CLOSING``           an ERROR (or the RECEIPT of a DISCONNECT) is queued: input is ignored and
                      reading paused; the socket closes once the queued replies are written;
``CLOSED``            the session is closed (unacknowledged messages went back to their queues).

A frame the server refuses (a missing header, an unknown destination, a security failure, a
frame not allowed in the current state, a malformed frame) is answered with an ERROR frame (a
``message`` header, a text body, ``receipt-id`` when the frame asked for a receipt) and the
connection closes, as the STOMP specification says a server does after an ERROR.

Replies (CONNECTED, RECEIPT, ERROR) leave through one FIFO queue. An entry may wait for an
awaitable: a RECEIPT of a SEND waits for ``RouteResult.durable``, any other RECEIPT for
``storage.durable()`` (everything stored before it), so a client never holds a receipt for
something not yet on disk, and receipts keep the order of their frames. MESSAGE frames are
written straight away by the subscriptions, which are the queues' deliverers.

Flow control: a subscription delivers while the socket is writable (``pause_writing`` /
``resume_writing`` from the transport) and, in the client ack modes, while its
``consumer-window-size`` credit (bytes of encoded MESSAGE frames not yet acknowledged; -1 =
unlimited; Artemis's default 10 KiB) lasts. In ``auto`` mode a message is acknowledged once its
frame is written and only the socket limits the flow.

Heart-beats follow Artemis's ``HeartBeater``: the server sends a heart-beat every
``max(cy, 500)`` ms when nothing else was written (cy = the client's wish, 0 = none). The client's
promise cx sets the connection TTL to ``cx * heartBeatToConnectionTtlModifier`` (2.0), at least
``connectionTtlMin`` (1000 ms) and at most ``connectionTtlMax``; the CONNECTED frame answers
``<server period>,<TTL / modifier>``. Without a promise the TTL is the acceptor's
``connectionTtl``, else ``connection-ttl-override``, else 60 s: a connection silent for longer is
sent an ERROR (AMQ229014) and closed, as Artemis does.

Acceptor URL parameters read here (Artemis's names; default in brackets): ``anycastPrefix`` and
``multicastPrefix`` [none; comma-separated lists allowed], ``stompConsumerWindowSize`` (alias
``stompConsumersCredit``) [10240 bytes], ``disableStompServerHeader`` [false],
``connectionTtl`` [``connection-ttl-override``, else 60000 ms], ``connectionTtlMin`` [1000 ms],
``connectionTtlMax`` [no limit], ``heartBeatToConnectionTtlModifier`` [2.0]. Not supported:
``stompEnableMessageId``, ``stompMinLargeMessageSize`` (no large messages over STOMP yet).

Deliberate differences from Artemis: NACK returns the message to its queue counting a failed
delivery (Artemis discards it like an ACK); ACK and NACK honour the ``transaction`` header
(Artemis logs that transactional acks are unsupported and applies them at once); frame headers
(``destination``, ``receipt``, ``transaction``, ``content-length``, ``destination-type``) are not
copied into message properties; a ``subscription-type`` header decides between a topic and a
queue subscription even on an address that has both routing types; a SEND naming an unknown
transaction is an error; every ERROR closes the connection.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from pybroker.broker.addressing import AddressInfo, split_fqqn
from pybroker.broker.message import MessageReference
from pybroker.broker.queue import ServerConsumer
from pybroker.broker.server import BrokerServer
from pybroker.broker.session import ServerSession
from pybroker.config.model import RoutingType
from pybroker.errors import PyBrokerError, SecurityError

from .codec import (
    NEED_DATA,
    VERSIONS,
    Frame,
    HeartBeat,
    StompCodec,
    StompEncodingError,
    StompProtocolError,
    UnsupportedVersionError,
    negotiate_version,
    parse_heart_beat,
)
from .message import encodable_headers, message_headers, stomp_to_core

log = logging.getLogger("pybroker.stomp")

PRODUCT = "pybroker"

#: Separator of the two numbers in a message-id (``<consumer id>,<message id>``, as Artemis).
MESSAGE_ID_SEPARATOR = ","
#: Artemis's ``STOMP_DEFAULT_CONSUMER_WINDOW_SIZE`` (bytes) for the client ack modes.
DEFAULT_CONSUMER_WINDOW_SIZE = 10 * 1024
#: The shortest server heart-beat period (Artemis's ``HeartBeater.MIN_SERVER_PING``), ms.
MIN_SERVER_PING_MS = 500
#: Connection TTL when neither the acceptor nor connection-ttl-override sets one, ms.
DEFAULT_CONNECTION_TTL_MS = 60_000
#: Lower bound of a heart-beat-derived TTL (acceptor ``connectionTtlMin``), ms.
DEFAULT_CONNECTION_TTL_MIN_MS = 1000
#: TTL = client heart-beat period x this (acceptor ``heartBeatToConnectionTtlModifier``).
DEFAULT_HEART_BEAT_TO_TTL_MODIFIER = 2.0
#: The property that marks messages of a connection with no-local subscriptions.
CONNECTION_ID_PROPERTY = "__AMQ_CID"

ACK_AUTO = "auto"
ACK_CLIENT = "client"
ACK_CLIENT_INDIVIDUAL = "client-individual"
_ACK_MODES = (ACK_AUTO, ACK_CLIENT, ACK_CLIENT_INDIVIDUAL)

_SUPPORTED_AS_ERROR_VERSION = ",".join(VERSIONS)
_SUPPORTED_AS_TEXT = " ".join(f"v{version}" for version in VERSIONS)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pybroker")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0"


VERSION = _version()


class _State(enum.Enum):
    AWAITING_CONNECT = "awaiting-connect"
    CONNECTED = "connected"
    CLOSING = "closing"
    CLOSED = "closed"


# state -> the client commands it accepts; anything else is answered with an ERROR
_ACCEPTED: dict[_State, frozenset[str]] = {
    _State.AWAITING_CONNECT: frozenset({"CONNECT", "STOMP"}),
    _State.CONNECTED: frozenset(
        {"SEND", "SUBSCRIBE", "UNSUBSCRIBE", "BEGIN", "COMMIT", "ABORT", "ACK", "NACK", "DISCONNECT"}
    ),
    _State.CLOSING: frozenset(),
    _State.CLOSED: frozenset(),
}

_CLIENT_COMMANDS = frozenset(
    {"SEND", "SUBSCRIBE", "UNSUBSCRIBE", "BEGIN", "COMMIT", "ABORT", "ACK", "NACK", "DISCONNECT",
     "CONNECT", "STOMP"}
)


class StompFrameError(StompProtocolError):
    """A frame the server refuses; it is answered with an ERROR frame, then the connection closes.

    ``str(error)`` is the ERROR's ``message`` header, ``body`` its text body and ``headers``
    extra ERROR headers (the ``version`` list of a failed negotiation).
    """

    def __init__(
        self, message: str, *, body: str | None = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.body = body
        self.headers = headers


class _Done(NamedTuple):
    """What a frame handler leaves to do: wait before its receipt, run after it, close."""

    wait: Awaitable[Any] | None = None
    then: Callable[[], None] | None = None
    close: bool = False


class _Reply:
    __slots__ = ("close", "data", "future", "then")

    def __init__(
        self,
        data: bytes | None,
        future: asyncio.Future[Any] | None,
        then: Callable[[], None] | None,
        close: bool,
    ) -> None:
        self.data = data
        self.future = future
        self.then = then
        self.close = close


class Subscription:
    """One SUBSCRIBE: a consumer on a queue and the queue's deliverer for this connection."""

    __slots__ = (
        "ack_mode",
        "consumer",
        "credits",
        "destination",
        "durable_name",
        "handler",
        "id",
        "multicast",
        "no_local",
        "queue_name",
        "started",
        "temporary",
        "unacked",
        "window",
    )

    def __init__(
        self,
        handler: StompConnectionHandler,
        subscription_id: str,
        *,
        destination: str,
        ack_mode: str,
        queue_name: str,
        multicast: bool,
        temporary: bool,
        durable_name: str | None,
        window: int,
        no_local: bool,
    ) -> None:
        self.handler = handler
        self.id = subscription_id
        self.destination = destination
        self.ack_mode = ack_mode
        self.queue_name = queue_name
        self.multicast = multicast
        self.temporary = temporary
        self.durable_name = durable_name
        self.no_local = no_local
        # auto mode: acknowledged when written, so only the socket limits the flow
        self.window = -1 if ack_mode == ACK_AUTO else window
        # Artemis gives a window of 0 one credit: one message at a time
        self.credits = 1 if self.window == 0 else self.window
        self.consumer: ServerConsumer | None = None
        # message-id -> (reference, encoded frame size), in delivery order
        self.unacked: dict[str, tuple[MessageReference, int]] = {}
        # no delivery before the RECEIPT of the SUBSCRIBE is written
        self.started = False

    # -- Deliverer ---------------------------------------------------------------------------
    def deliver(self, ref: MessageReference) -> bool:
        handler = self.handler
        consumer = self.consumer
        if (
            not self.started
            or consumer is None
            or handler.write_blocked
            or handler.state is not _State.CONNECTED
            or (self.window != -1 and self.credits <= 0)
        ):
            return False
        message_id = f"{consumer.consumer_id}{MESSAGE_ID_SEPARATOR}{ref.message.message_id}"
        try:
            data = handler.encode_message(self, ref, message_id)
        except Exception:  # noqa: BLE001 - one bad message must not stall the queue
            log.exception(
                "AMQ332071: Unable to send message to client: %s; moving it to the "
                "dead-letter address",
                ref.message,
            )
            handler.loop.call_soon(consumer.reject, ref)
            return True
        handler.write(data)
        if self.ack_mode == ACK_AUTO:
            consumer.acknowledge(ref)
        else:
            size = len(data)
            self.unacked[message_id] = (ref, size)
            if self.window != -1:
                self.credits -= size
        return True

    def start(self) -> None:
        if self.consumer is not None and not self.started:
            self.started = True
            self.consumer.prompt_delivery()

    def take(self, message_id: str) -> list[MessageReference]:
        """Remove and return what an ACK/NACK of ``message_id`` settles (cumulative in client
        mode); their credit comes back. ``message_id`` must be in :attr:`unacked`."""
        unacked = self.unacked
        if self.ack_mode == ACK_CLIENT_INDIVIDUAL:
            ids = [message_id]
        else:
            ids = []
            for key in unacked:
                ids.append(key)
                if key == message_id:
                    break
        refs = []
        returned = 0
        for key in ids:
            ref, size = unacked.pop(key)
            refs.append(ref)
            returned += size
        if self.window != -1:
            blocked = self.credits <= 0
            self.credits += returned
            if blocked and self.credits > 0 and self.consumer is not None:
                # prompted after the ack itself is applied (see the handler)
                self.handler.want_prompt(self)
        return refs


def _first_header(frame: Frame, *names: str) -> str | None:
    for name in names:
        value = frame.header(name)
        if value is not None:
            return value
    return None


def _prefixes(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(prefix for prefix in (part.strip() for part in value.split(",")) if prefix)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


class StompConnectionHandler:
    """One STOMP connection (the transport's protocol handler)."""

    def __init__(self, server: BrokerServer, context: Any) -> None:
        self.server = server
        self.context = context
        self.loop: asyncio.AbstractEventLoop = getattr(context, "loop", None) or asyncio.get_running_loop()
        params = dict(getattr(context.acceptor, "params", None) or {})
        self.anycast_prefixes = _prefixes(params.get("anycastPrefix"))
        self.multicast_prefixes = _prefixes(params.get("multicastPrefix"))
        self.default_window = self._int_param(
            params, "stompConsumerWindowSize",
            self._int_param(params, "stompConsumersCredit", DEFAULT_CONSUMER_WINDOW_SIZE),
        )
        self.server_header = params.get("disableStompServerHeader", "false").strip().lower() != "true"
        self.ttl_modifier = self._modifier_param(params)
        self.ttl_min_ms = self._int_param(params, "connectionTtlMin", DEFAULT_CONNECTION_TTL_MIN_MS)
        self.ttl_max_ms = self._int_param(params, "connectionTtlMax", 2**63 - 1)
        ttl = self._int_param(params, "connectionTtl", -1)
        if ttl <= 0:
            override = getattr(server.configuration, "connection_ttl_override", -1)
            ttl = override if override is not None and override > 0 else DEFAULT_CONNECTION_TTL_MS
        self.connection_ttl_ms = ttl
        self.codec = StompCodec()
        self.state = _State.AWAITING_CONNECT
        self.version = "1.0"
        self.session: ServerSession | None = None
        self.client_id: str | None = None
        self.user: str | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self._by_consumer: dict[int, Subscription] = {}
        # STOMP transaction name -> (core transaction, NACKed references to return at its end)
        self.transactions: dict[str, tuple[Any, list[tuple[Any, list[MessageReference]]]]] = {}
        self.limits_blocked = False
        self.no_local_subscriptions = 0
        self.write_blocked = False
        self.heart_beat_send_ms = 0
        self._replies: deque[_Reply] = deque()
        self._prompts: list[Subscription] = []
        now = self.loop.time()
        self._last_read = now
        self._last_write = now
        self._ttl_handle: asyncio.TimerHandle | None = None
        self._beat_handle: asyncio.TimerHandle | None = None
        self._arm_ttl()

    @staticmethod
    def _int_param(params: dict[str, str], name: str, default: int) -> int:
        value = params.get(name)
        if value is None or not value.strip():
            return default
        try:
            return int(value.strip())
        except ValueError:
            log.warning("STOMP acceptor parameter %s=%r is not a number; using %s", name, value, default)
            return default

    @staticmethod
    def _modifier_param(params: dict[str, str]) -> float:
        value = params.get("heartBeatToConnectionTtlModifier")
        if value is None or not value.strip():
            return DEFAULT_HEART_BEAT_TO_TTL_MODIFIER
        try:
            modifier = float(value)
        except ValueError:
            modifier = 0.0
        if not modifier > 0:
            log.warning("STOMP acceptor parameter heartBeatToConnectionTtlModifier=%r is not a "
                        "positive number; using %s", value, DEFAULT_HEART_BEAT_TO_TTL_MODIFIER)
            return DEFAULT_HEART_BEAT_TO_TTL_MODIFIER
        return modifier

    @property
    def closed(self) -> bool:
        return self.state is _State.CLOSED

    # -- transport callbacks ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.state is not _State.AWAITING_CONNECT and self.state is not _State.CONNECTED:
            return
        self._last_read = self.loop.time()
        codec = self.codec
        try:
            codec.receive_data(data)
            while self.state is _State.CONNECTED or self.state is _State.AWAITING_CONNECT:
                event = codec.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, HeartBeat):
                    continue
                self._handle_frame(event)
        except StompProtocolError as error:
            self._fail(str(error), None, body=str(error))

    def eof_received(self) -> None:
        # the transport closes after this; connection_lost cleans up
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._shutdown()

    def pause_writing(self) -> None:
        self.write_blocked = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        for subscription in list(self.subscriptions.values()):
            if self.write_blocked or self.state is not _State.CONNECTED:
                break
            if subscription.consumer is not None and subscription.started:
                subscription.consumer.prompt_delivery()

    def force_close(self) -> None:
        """Close from the broker side (broker stop): an ERROR frame, then the socket."""
        if self.state is _State.CLOSED:
            return
        self._write_error("AMQ219015: The connection was disconnected because of server shutdown", None)
        self._close_now()

    # -- output ------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write bytes to the peer (MESSAGE frames, replies, heart-beats)."""
        self._last_write = self.loop.time()
        self.context.write(data)

    def encode_message(self, subscription: Subscription, ref: MessageReference, message_id: str) -> bytes:
        """The MESSAGE frame for ``ref`` on ``subscription`` in the negotiated version."""
        headers, body = message_headers(ref.message, ref.delivery_count)
        head = [("subscription", subscription.id), ("message-id", message_id), *headers]
        if self.version == "1.2" and subscription.ack_mode != ACK_AUTO:
            head.append(("ack", message_id))
        return self.codec.send(Frame("MESSAGE", encodable_headers(head, self.version), body))

    def _encode(self, frame: Frame) -> bytes:
        try:
            return self.codec.send(frame)
        except StompEncodingError:
            frame.headers = encodable_headers(frame.headers, self.version)
            return self.codec.send(frame)

    def _reply(
        self,
        frame: Frame | None,
        wait: Awaitable[Any] | None = None,
        *,
        then: Callable[[], None] | None = None,
        close: bool = False,
    ) -> None:
        """Queue a reply; it is written after every earlier one, once ``wait`` is done."""
        future = None
        if wait is not None:
            future = asyncio.ensure_future(wait)
            future.add_done_callback(self._reply_ready)
        data = self._encode(frame) if frame is not None else None
        self._replies.append(_Reply(data, future, then, close))
        self._flush_replies()

    def _reply_ready(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved here; reported in _flush_replies
        if self.state is not _State.CLOSED:
            self._flush_replies()

    def _flush_replies(self) -> None:
        replies = self._replies
        while replies:
            reply = replies[0]
            future = reply.future
            if future is not None and not future.done():
                return
            replies.popleft()
            error = None
            if future is not None:
                error = future.exception() if not future.cancelled() else asyncio.CancelledError()
            if error is not None:
                log.warning("STOMP connection from %s: storing failed: %s", self.context.remote_address, error)
                self._write_error(f"Error sending reply: {error}", None)
                self._close_now()
                return
            if reply.data is not None:
                self.write(reply.data)
            if reply.then is not None:
                reply.then()
            if reply.close:
                self._close_now()
                return

    def _write_error(
        self,
        message: str,
        receipt: str | None,
        *,
        body: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        data = self._encode(self._error_frame(message, receipt, body=body, headers=headers))
        self.write(data)
        return data

    def _error_frame(
        self,
        message: str,
        receipt: str | None,
        *,
        body: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Frame:
        message = _one_line(message)
        log.warning("AMQ332069: Sent ERROR frame to STOMP client %s: %s", self.context.remote_address, message)
        frame_headers = [("message", message), *headers]
        if receipt is not None:
            frame_headers.append(("receipt-id", receipt))
        payload = b""
        if body:
            frame_headers.append(("content-type", "text/plain"))
            payload = body.encode("utf-8", errors="replace")
        return Frame("ERROR", frame_headers, payload)

    def _fail(
        self,
        message: str,
        receipt: str | None,
        *,
        body: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Answer with an ERROR after the queued replies, then close."""
        if self.state is _State.CLOSED or self.state is _State.CLOSING:
            return
        self.state = _State.CLOSING
        self.context.pause_reading()
        self._reply(self._error_frame(message, receipt, body=body, headers=headers), close=True)

    # -- timers ------------------------------------------------------------------------------
    def _arm_ttl(self) -> None:
        if self._ttl_handle is not None:
            self._ttl_handle.cancel()
        self._ttl_handle = self.loop.call_at(
            self._last_read + self.connection_ttl_ms / 1000.0, self._check_ttl
        )

    def _check_ttl(self) -> None:
        self._ttl_handle = None
        if self.state is _State.CLOSED:
            return
        deadline = self._last_read + self.connection_ttl_ms / 1000.0
        if self.loop.time() < deadline:
            self._ttl_handle = self.loop.call_at(deadline, self._check_ttl)
            return
        text = (
            f"AMQ229014: Did not receive data from {self.context.remote_address} within the "
            f"{self.connection_ttl_ms}ms connection TTL. The connection will now be closed."
        )
        self._write_error(text, None)
        self._close_now()

    def _arm_beat(self) -> None:
        if self.heart_beat_send_ms <= 0 or self.state is _State.CLOSED:
            return
        self._beat_handle = self.loop.call_at(
            self._last_write + self.heart_beat_send_ms / 1000.0, self._beat
        )

    def _beat(self) -> None:
        self._beat_handle = None
        if self.state is not _State.CONNECTED and self.state is not _State.CLOSING:
            return
        period = self.heart_beat_send_ms / 1000.0
        now = self.loop.time()
        # timers may fire a hair early: a beat within 1 ms of its due time is due
        if now - self._last_write >= period - 0.001:
            self.write(self.codec.send_heartbeat())
        self._arm_beat()

    # -- dispatch ----------------------------------------------------------------------------
    def _handle_frame(self, frame: Frame) -> None:
        command = frame.command
        receipt = frame.header("receipt")
        try:
            if command not in _ACCEPTED[self.state]:
                raise self._not_accepted(command)
            if command == "NACK" and self.version == "1.0":
                raise StompFrameError(f"AMQ339029: Unsupported command: {command}")
            done = getattr(self, "_on_" + command.lower())(frame)
        except StompFrameError as error:
            self._fail(str(error), receipt, body=error.body, headers=error.headers)
            return
        except (PyBrokerError, ValueError) as error:
            self._fail(str(error), receipt, body=str(error))
            return
        except Exception as error:  # noqa: BLE001 - task boundary: this connection only
            log.exception("STOMP connection %s: error handling a %s frame", self.context.connection_id, command)
            self._fail(f"internal error: {type(error).__name__}: {error}", receipt)
            return
        finally:
            self._run_prompts()
        if done is None:
            done = _Done()
        if receipt is not None and command not in ("CONNECT", "STOMP"):
            wait = done.wait
            if wait is None and command != "SEND":
                wait = self.server.storage.durable()
            self._reply(Frame("RECEIPT", [("receipt-id", receipt)]), wait)
        if done.then is not None or done.close:
            self._reply(None, then=done.then, close=done.close)

    def _not_accepted(self, command: str) -> StompFrameError:
        if command not in _CLIENT_COMMANDS:
            return StompFrameError(f"AMQ339029: Unsupported command: {command}")
        if self.state is _State.AWAITING_CONNECT:
            return StompFrameError(
                "AMQ339008: Connection has not been established.",
                body=f"a {command} frame arrived before CONNECT (connection state {self.state.value})",
            )
        return StompFrameError(
            f"STOMP {command} frame is not allowed in connection state {self.state.value}",
            body="the connection is already connected" if command in ("CONNECT", "STOMP") else None,
        )

    def want_prompt(self, subscription: Subscription) -> None:
        """Prompt ``subscription`` once the current frame has been handled."""
        self._prompts.append(subscription)

    def _run_prompts(self) -> None:
        while self._prompts:
            subscription = self._prompts.pop()
            consumer = subscription.consumer
            if consumer is not None and subscription.started and self.state is _State.CONNECTED:
                consumer.prompt_delivery()

    # -- CONNECT / STOMP ---------------------------------------------------------------------
    def _on_connect(self, frame: Frame) -> _Done | None:
        try:
            version = negotiate_version(frame.header("accept-version"))
        except UnsupportedVersionError:
            raise StompFrameError(
                f"AMQ339002: Stomp versions not supported: {frame.header('accept-version')}",
                headers=(("version", _SUPPORTED_AS_ERROR_VERSION),),
                body=f"Supported protocol versions are {_SUPPORTED_AS_TEXT}",
            ) from None
        self.version = version
        self.codec.set_version(version)
        if frame.command == "STOMP" and version == "1.0":
            raise StompFrameError("AMQ339029: Unsupported command: STOMP")
        heart_beat = frame.header("heart-beat") if version != "1.0" else None
        client_beats: tuple[int, int] | None = None
        if heart_beat is not None:
            try:
                client_beats = parse_heart_beat(heart_beat)
            except StompProtocolError:
                raise StompFrameError(f"Incorrect heartbeat header {heart_beat}") from None
        login = frame.header("login")
        passcode = frame.header("passcode")
        try:
            principal = self.server.authenticate(login, passcode)
        except SecurityError as error:
            log.warning(
                "STOMP connection from %s: authentication failed for user %r: %s",
                self.context.remote_address,
                login,
                error,
            )
            text = f"Security Error occurred: User name [{login}] or password is invalid"
            raise StompFrameError(text, body=text) from None
        self.client_id = frame.header("client-id")
        self.user = principal.user
        self.session = self.server.create_session(
            principal=principal,
            protocol="stomp",
            connection_id=self.context.connection_id,
            client_id=self.client_id,
            remote_address=self.context.remote_address,
        )
        headers: list[tuple[str, str]] = []
        if version != "1.0" or frame.has_header("accept-version"):
            headers.append(("version", version))
        headers.append(("session", str(self.context.connection_id)))
        if version != "1.0" and self.server_header:
            headers.append(("server", f"{PRODUCT}/{VERSION}"))
        request_id = frame.header("request-id")
        if request_id is not None:
            headers.append(("response-id", request_id))
        if client_beats is not None:
            headers.append(("heart-beat", self._negotiate_heart_beat(*client_beats)))
        self.state = _State.CONNECTED
        self._reply(Frame("CONNECTED", headers))
        self._arm_ttl()
        self._arm_beat()
        log.debug(
            "STOMP %s connection %s from %s: user %r, client-id %r",
            version,
            self.context.connection_id,
            self.context.remote_address,
            self.user,
            self.client_id,
        )
        return None

    _on_stomp = _on_connect

    def _negotiate_heart_beat(self, client_send: int, client_receive: int) -> str:
        """Artemis's HeartBeater: server period from cy, connection TTL from cx."""
        send_ms = 0 if client_receive == 0 else max(client_receive, MIN_SERVER_PING_MS)
        modifier = self.ttl_modifier
        if client_send != 0:
            response = client_send
            ttl = int(client_send * modifier)
            if ttl < self.ttl_min_ms:
                ttl = self.ttl_min_ms
                response = int(self.ttl_min_ms / modifier)
            elif ttl > self.ttl_max_ms:
                ttl = self.ttl_max_ms
                response = int(self.ttl_max_ms / modifier)
            self.connection_ttl_ms = ttl
        else:
            response = int(self.connection_ttl_ms / modifier)
        self.heart_beat_send_ms = send_ms
        return f"{send_ms},{response}"

    # -- destinations ------------------------------------------------------------------------
    def _resolve(self, destination: str, type_header: str | None) -> tuple[str, str | None, RoutingType | None]:
        """Strip an acceptor prefix: ``(address, prefix, routing type)``; the header wins."""
        address, prefix, routing = destination, None, None
        for candidate in self.anycast_prefixes:
            if destination.startswith(candidate):
                address, prefix, routing = destination[len(candidate):], candidate, RoutingType.ANYCAST
                break
        else:
            for candidate in self.multicast_prefixes:
                if destination.startswith(candidate):
                    address, prefix, routing = destination[len(candidate):], candidate, RoutingType.MULTICAST
                    break
        if type_header is not None:
            try:
                routing = RoutingType.parse(type_header)
            except ValueError:
                raise StompFrameError(f"bad routing type {type_header!r}: expected ANYCAST or MULTICAST") from None
        if not address:
            raise StompFrameError(f"AMQ339001: Destination does not exist: {destination}")
        return address, prefix, routing

    def _prepare_destination(self, address: str, routing: RoutingType | None) -> AddressInfo:
        """Artemis's autoCreateDestinationIfPossible + checkDestination + checkRoutingSemantics."""
        session = self._session()
        base, queue_name = split_fqqn(address)
        settings = self.server.address_settings(base)
        effective = routing or settings.default_address_routing_type or RoutingType.MULTICAST
        post_office = session.post_office
        known = post_office.addresses.get(base)
        if (
            known is not None
            and queue_name is None
            and effective in known.routing_types
            and (
                effective is RoutingType.MULTICAST
                or any(q.routing_type is RoutingType.ANYCAST for q in post_office.bindings.get(base, ()))
            )
        ):
            # the common case, an address that is ready: nothing to create or check
            return known
        if (
            queue_name is not None
            and session.find_queue(queue_name) is None
            and settings.auto_create_queues
            and settings.auto_create_addresses
        ):
            session.create_queue(queue_name, base, effective, auto_created=True, exist_ok=True)
        info = session.address_query(base, effective, auto_create=True)
        if info is None:
            raise StompFrameError(f"AMQ339001: Destination does not exist: {address}")
        if queue_name is not None:
            queue = session.find_queue(queue_name)
            if queue is None or queue.address != base:
                raise StompFrameError(f"AMQ339001: Destination does not exist: {address}")
        if routing is not None and routing not in info.routing_types:
            types = "[" + ", ".join(sorted(rt.value for rt in info.routing_types)) + "]"
            raise StompFrameError(f"AMQ339041: Not allowed to specify {routing.value} semantics on {types} address.")
        return info

    def _session(self) -> ServerSession:
        session = self.session
        if session is None:  # pragma: no cover - _ACCEPTED only lets these run when connected
            raise StompFrameError("AMQ339010: Connection is not valid.")
        return session

    # -- SEND --------------------------------------------------------------------------------
    def _on_send(self, frame: Frame) -> _Done:
        session = self._session()
        destination = frame.header("destination")
        if destination is None:
            raise StompFrameError("STOMP SEND frame has no 'destination' header")
        address, prefix, routing = self._resolve(destination, frame.header("destination-type"))
        transaction = frame.header("transaction")
        entry = None
        if transaction is not None:
            entry = self.transactions.get(transaction)
            if entry is None:
                raise StompFrameError(f"No transaction started: {transaction}")
        self._prepare_destination(address, routing)
        message = stomp_to_core(
            frame, address, routing_type=routing, prefix=prefix, now_ms=int(time.time() * 1000)
        )
        if self.no_local_subscriptions:
            message.properties[CONNECTION_ID_PROPERTY] = str(self.context.connection_id)
        if entry is not None:
            # checked now (refused now rather than at COMMIT), routed by the COMMIT
            session.send_transacted(entry[0], message, routing)
            return _Done()
        result = session.send(message, routing)
        post_office = self.server.post_office
        if not self.limits_blocked and not post_office.can_send(address):
            # the address is full with the BLOCK policy: stop reading frames until it has room
            self.limits_blocked = True
            self.context.pause_reading()

            def unblocked() -> None:
                self.limits_blocked = False
                if self.state is _State.CONNECTED:
                    self.context.resume_reading()

            post_office.when_free(address, unblocked)
        return _Done(wait=result.durable)

    # -- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------
    def _on_subscribe(self, frame: Frame) -> _Done:
        session = self._session()
        destination = frame.header("destination")
        if destination is None:
            raise StompFrameError("AMQ339015: Client must set destination or id header to a SUBSCRIBE command")
        address, _prefix, routing = self._resolve(destination, frame.header("subscription-type"))
        subscription_id = frame.header("id")
        if subscription_id is None:
            if self.version != "1.0":
                raise StompFrameError(f"STOMP {self.version} SUBSCRIBE frame has no 'id' header")
            subscription_id = "subscription/" + address
        if subscription_id in self.subscriptions:
            raise StompFrameError(
                f"There already is a subscription for: {subscription_id}. Either use unique "
                "subscription IDs or do not create multiple subscriptions for the same destination"
            )
        ack_mode = frame.header("ack", ACK_AUTO) or ACK_AUTO
        if ack_mode not in _ACK_MODES:
            raise StompFrameError(f"bad ack mode {ack_mode!r}: expected auto, client or client-individual")
        selector = frame.header("selector")
        if selector is not None:
            if not selector.strip():
                raise StompFrameError("Selector cannot be empty")
            try:
                self.server.make_filter(selector)
            except PyBrokerError as error:
                raise StompFrameError(f'Invalid selector "{selector}"', body=str(error)) from None
        durable_name = _first_header(
            frame, "durable-subscription-name", "durable-subscriber-name", "activemq.subscriptionName"
        )
        no_local_text = _first_header(frame, "no-local", "activemq.noLocal")
        no_local = no_local_text is not None and no_local_text.strip().lower() == "true"
        window_text = _first_header(frame, "consumer-window-size", "activemq.prefetchSize")
        if window_text is not None:
            try:
                window = int(window_text.strip())
            except ValueError:
                raise StompFrameError(f"bad consumer-window-size {window_text!r}") from None
            if window < -1:
                raise StompFrameError(f"bad consumer-window-size {window_text!r}")
        else:
            window = -1 if ack_mode == ACK_AUTO else self.default_window
        info = self._prepare_destination(address, routing)
        base, fqqn_queue = split_fqqn(address)
        if no_local:
            clause = (
                f"({CONNECTION_ID_PROPERTY} <> '{self.context.connection_id}' OR "
                f"{CONNECTION_ID_PROPERTY} IS NULL)"
            )
            selector = f"({selector}) AND {clause}" if selector else clause
        if routing is not None:
            multicast = routing is RoutingType.MULTICAST
        else:
            multicast = info.routing_types == {RoutingType.MULTICAST}
        temporary = False
        consumer_filter = selector
        if multicast and fqqn_queue is None:
            consumer_filter = None  # the filter lives on the subscription queue
            if durable_name:
                if not self.client_id:
                    raise StompFrameError(
                        "AMQ339027: Cannot create a subscriber on the durable subscription if the "
                        "client-id of the connection is not set"
                    )
                queue_name = f"{self.client_id}.{durable_name}"
                if session.find_queue(queue_name) is None:
                    session.create_queue(queue_name, base, RoutingType.MULTICAST, filter_expression=selector, durable=True)
            else:
                queue_name = session.create_temporary_queue(
                    base, RoutingType.MULTICAST, name=str(uuid.uuid4()), filter_expression=selector
                ).name
                temporary = True
        elif fqqn_queue is not None:
            queue_name = fqqn_queue
        else:
            matching = session.matching_queue(base, RoutingType.ANYCAST)
            if matching is None:
                raise StompFrameError(
                    f"AMQ339016: Error creating subscription {subscription_id}",
                    body=f"address {base} has no anycast queue",
                )
            queue_name = matching.name
        subscription = Subscription(
            self,
            subscription_id,
            destination=destination,
            ack_mode=ack_mode,
            queue_name=queue_name,
            multicast=multicast,
            temporary=temporary,
            durable_name=durable_name,
            window=window,
            no_local=no_local,
        )
        try:
            subscription.consumer = session.create_consumer(
                queue_name, subscription, filter_expression=consumer_filter
            )
        except BaseException:
            if temporary and session.find_queue(queue_name) is not None:
                session.delete_queue(queue_name)
            raise
        self.subscriptions[subscription_id] = subscription
        self._by_consumer[subscription.consumer.consumer_id] = subscription
        if no_local:
            self.no_local_subscriptions += 1
        # messages flow once the RECEIPT (if any) is out, as Artemis starts the consumer
        return _Done(then=subscription.start)

    def _on_unsubscribe(self, frame: Frame) -> _Done:
        session = self._session()
        subscription_id = frame.header("id")
        durable_name = _first_header(
            frame, "durable-subscriber-name", "durable-subscription-name", "activemq.subscriptionName"
        )
        if subscription_id is None:
            if self.version == "1.0":
                destination = frame.header("destination")
                if destination is None:
                    raise StompFrameError(
                        "AMQ339035: Must specify the subscription's id or the destination you are "
                        "unsubscribing from"
                    )
                subscription_id = "subscription/" + self._resolve(destination, None)[0]
            elif durable_name is None:
                raise StompFrameError("AMQ339037: Must specify the subscription's id")
        found = False
        subscription = self.subscriptions.pop(subscription_id, None) if subscription_id else None
        if subscription is not None:
            self._close_subscription(subscription, delete_temporary=True)
            found = True
        if durable_name is not None and self.client_id:
            queue_name = f"{self.client_id}.{durable_name}"
            queue = session.find_queue(queue_name)
            if queue is not None:
                if queue.consumers:
                    raise StompFrameError(
                        f"AMQ339017: Error unsubscribing {subscription_id or durable_name}",
                        body=f"the durable subscription {queue_name} has {len(queue.consumers)} consumer(s)",
                    )
                session.delete_queue(queue_name)
            found = True
        if not found:
            raise StompFrameError(f"Cannot unsubscribe as no subscription exists for id: {subscription_id}")
        return _Done()

    def _close_subscription(self, subscription: Subscription, *, delete_temporary: bool) -> None:
        session = self._session()
        consumer, subscription.consumer = subscription.consumer, None
        subscription.unacked.clear()
        if consumer is not None:
            self._by_consumer.pop(consumer.consumer_id, None)
            session.close_consumer(consumer, failed=True)
        if subscription.no_local:
            self.no_local_subscriptions -= 1
        if delete_temporary and subscription.temporary and session.find_queue(subscription.queue_name) is not None:
            try:
                session.delete_queue(subscription.queue_name)
            except PyBrokerError as error:
                log.debug("could not delete subscription queue %s: %s", subscription.queue_name, error)

    # -- ACK / NACK --------------------------------------------------------------------------
    def _on_ack(self, frame: Frame) -> _Done:
        return self._settle(frame, nack=False)

    def _on_nack(self, frame: Frame) -> _Done:
        return self._settle(frame, nack=True)

    def _settle(self, frame: Frame, *, nack: bool) -> _Done:
        subscription_id = None
        if self.version == "1.2":
            message_id = frame.header("id")
            if message_id is None:
                raise StompFrameError("AMQ339039: No id header in ACK/NACK frame.")
        else:
            message_id = frame.header("message-id")
            if message_id is None:
                raise StompFrameError(f"STOMP {frame.command} frame has no 'message-id' header")
            if self.version == "1.1":
                subscription_id = frame.header("subscription")
                if subscription_id is None:
                    raise StompFrameError("AMQ339037: Must specify the subscription's id")
        consumer_text, separator, _ = message_id.partition(MESSAGE_ID_SEPARATOR)
        subscription = None
        if separator and consumer_text.isdigit():
            subscription = self._by_consumer.get(int(consumer_text))
        if subscription is None or message_id not in subscription.unacked:
            raise StompFrameError(f"AMQ339025: failed to ack because no message with id: {message_id}")
        if subscription_id is not None and subscription.id != subscription_id:
            raise StompFrameError(
                f"AMQ339026: subscription id {subscription_id} does not match {subscription.id}"
            )
        transaction = frame.header("transaction")
        entry = None
        if transaction is not None:
            entry = self.transactions.get(transaction)
            if entry is None:
                raise StompFrameError(f"No transaction started: {transaction}")
        refs = subscription.take(message_id)
        if entry is not None:
            core, nacked = entry
            if nack:
                nacked.append((subscription, refs))
            elif subscription.consumer is not None:
                for ref in refs:
                    if ref.consumer is subscription.consumer:
                        core.acknowledge(subscription.consumer, ref)
        elif nack:
            self._return(subscription, refs)
        else:
            self._acknowledge(subscription, refs)
        return _Done()

    @staticmethod
    def _acknowledge(subscription: Subscription, refs: list[MessageReference]) -> None:
        consumer = subscription.consumer
        if consumer is None:
            return  # unsubscribed since: the messages went back to the queue
        for ref in refs:
            if ref.consumer is consumer:
                consumer.acknowledge(ref)

    @staticmethod
    def _return(subscription: Subscription, refs: list[MessageReference]) -> None:
        """Back to the queue counting a failed delivery (dead-lettered after
        max-delivery-attempts); the earliest ends up first."""
        consumer = subscription.consumer
        if consumer is None:
            return
        for ref in reversed(refs):
            if ref.consumer is consumer:
                consumer.cancel(ref, failed=True)

    # -- transactions ------------------------------------------------------------------------
    def _on_begin(self, frame: Frame) -> _Done:
        transaction = frame.header("transaction")
        if transaction is None:
            raise StompFrameError("AMQ339032: Need a transaction id to begin")
        if transaction in self.transactions:
            raise StompFrameError(f"Transaction already started: {transaction}")
        self.transactions[transaction] = (self._session().begin_transaction(), [])
        return _Done()

    def _on_commit(self, frame: Frame) -> _Done:
        transaction = frame.header("transaction")
        if transaction is None:
            raise StompFrameError("AMQ339030: transaction header is mandatory to COMMIT a transaction")
        entry = self.transactions.pop(transaction, None)
        if entry is None:
            raise StompFrameError(f"No transaction started: {transaction}")
        core, nacked = entry
        session = self._session()
        # every send and ack of the transaction takes effect together (one journal transaction);
        # a RECEIPT waits until the commit is durable
        committed = asyncio.ensure_future(session.commit(core))
        for subscription, refs in nacked:
            self._return(subscription, refs)
        return _Done(wait=committed)

    def _on_abort(self, frame: Frame) -> _Done:
        transaction = frame.header("transaction")
        if transaction is None:
            raise StompFrameError("AMQ339033: transaction header is mandatory to ABORT a transaction")
        entry = self.transactions.pop(transaction, None)
        if entry is None:
            raise StompFrameError(f"No transaction started: {transaction}")
        # sends are dropped; what was acknowledged (or refused) in it goes back to its queue,
        # counted as a failed delivery like a rolled-back JMS session's messages
        core, nacked = entry
        self._session().rollback(core)
        for subscription, refs in reversed(nacked):
            self._return(subscription, refs)
        return _Done()

    # -- DISCONNECT --------------------------------------------------------------------------
    def _on_disconnect(self, frame: Frame) -> _Done:
        self.state = _State.CLOSING
        self.context.pause_reading()
        return _Done(close=True)

    # -- closing -----------------------------------------------------------------------------
    def _close_now(self) -> None:
        self._shutdown()
        self.context.close()

    def _shutdown(self) -> None:
        if self.state is _State.CLOSED:
            return
        self.state = _State.CLOSED
        for handle in (self._ttl_handle, self._beat_handle):
            if handle is not None:
                handle.cancel()
        self._ttl_handle = self._beat_handle = None
        for reply in self._replies:
            if reply.future is not None:
                reply.future.remove_done_callback(self._reply_ready)
        self._replies.clear()
        # acknowledged-in-a-transaction messages are still in flight: closing returns them
        self.transactions.clear()
        for subscription in self.subscriptions.values():
            subscription.consumer = None
            subscription.unacked.clear()
        self.subscriptions.clear()
        self._by_consumer.clear()
        session, self.session = self.session, None
        if session is not None:
            try:
                session.close(failed=True)
            except Exception:  # noqa: BLE001 - cleanup of one connection must not fail the loop
                log.exception("error closing the session of STOMP connection %s", self.context.connection_id)


__all__ = [
    "ACK_AUTO",
    "ACK_CLIENT",
    "ACK_CLIENT_INDIVIDUAL",
    "DEFAULT_CONSUMER_WINDOW_SIZE",
    "MESSAGE_ID_SEPARATOR",
    "StompConnectionHandler",
    "StompFrameError",
    "Subscription",
]
