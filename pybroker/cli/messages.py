"""``pybroker producer`` and ``pybroker consumer``: the ``artemis producer/consumer`` tools over AMQP.

They speak AMQP 1.0 through python-qpid-proton and build messages as a JMS client would (so an
Artemis or qpid-jms consumer reads them as TextMessage/BytesMessage): the default body is the
text ``test message: <n>`` with the long property ``count`` = n and the string property
``ThreadSent``; ``--message-size`` sends a BytesMessage of that many bytes, ``--text-size`` a
TextMessage of that many characters, ``--message`` a given text. Destinations are
``queue://NAME`` (the default ``queue://TEST``), ``topic://NAME``, or an FQQN ``address::queue``.

Output lines follow Artemis's (``Producer ActiveMQQueue[TEST], thread=0 Produced: 100 messages``);
``--verbose`` prints every message, otherwise a progress bar is shown on a terminal.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import click
from proton import Message, SSLDomain, symbol
from proton.handlers import MessagingHandler
from proton.reactor import Container, DurableSubscription, Filter, Selector

from pybroker.config.model import RoutingType

DEFAULT_URL = "tcp://localhost:61616"
DEFAULT_DESTINATION = "queue://TEST"

JMS_MSG_TYPE = symbol("x-opt-jms-msg-type")
JMS_DEST = symbol("x-opt-jms-dest")
JMS_BYTES_MESSAGE = 3
JMS_TEXT_MESSAGE = 5

_DEMO_TEXT = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat. "
)


@dataclass(frozen=True)
class Destination:
    """A CLI destination: ``queue://X``, ``topic://X`` or ``address::queue``."""

    address: str
    routing: RoutingType | None

    @classmethod
    def parse(cls, text: str) -> Destination:
        if text.startswith("queue://"):
            return cls(text[len("queue://") :], RoutingType.ANYCAST)
        if text.startswith("topic://"):
            return cls(text[len("topic://") :], RoutingType.MULTICAST)
        if "::" in text:
            return cls(text, None)
        return cls(text, RoutingType.ANYCAST)

    @property
    def capability(self) -> str | None:
        if self.routing is RoutingType.ANYCAST:
            return "queue"
        if self.routing is RoutingType.MULTICAST:
            return "topic"
        return None

    def describe(self) -> str:
        kind = "ActiveMQTopic" if self.routing is RoutingType.MULTICAST else "ActiveMQQueue"
        return f"{kind}[{self.address}]"


def amqp_url(url: str) -> tuple[str, bool]:
    """``tcp://host:port`` (Artemis style) -> (``host:port``, ssl?)."""
    if "://" not in url:
        url = "tcp://" + url
    parsed = urlparse(url.split("?", 1)[0])
    host = parsed.hostname or "localhost"
    port = parsed.port or 61616
    ssl = parsed.scheme in ("ssl", "amqps") or "sslEnabled=true" in url
    return f"{host}:{port}", ssl


_PROPERTY_TYPES = {
    "boolean": lambda v: str(v).lower() == "true" if not isinstance(v, bool) else v,
    "int": int,
    "long": int,
    "byte": int,
    "short": int,
    "float": float,
    "double": float,
    "string": str,
}


def parse_properties(text: str | None) -> dict[str, Any]:
    """``[{"type":"string","key":"k","value":"v"}, ...]`` as Artemis's ``--properties``."""
    if not text:
        return {}
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--properties") from None
    if isinstance(items, dict):
        items = [items]
    result: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or "key" not in item or "value" not in item:
            raise click.BadParameter('each property is {"type": ..., "key": ..., "value": ...}', param_hint="--properties")
        kind = str(item.get("type", "string")).lower()
        convert = _PROPERTY_TYPES.get(kind)
        if convert is None:
            raise click.BadParameter(
                f"unknown type {kind!r}: supported types are boolean, int, long, byte, short, float, double, string",
                param_hint="--properties",
            )
        try:
            result[str(item["key"])] = convert(item["value"])
        except (TypeError, ValueError):
            raise click.BadParameter(f"{item['value']!r} is not a {kind}", param_hint="--properties") from None
    return result


class _Capability:
    """A link option putting a capability on the terminus (queue/topic), as qpid-jms does."""

    def __init__(self, capability: str) -> None:
        self.capability = capability

    def apply(self, link: Any) -> None:
        terminus = link.target if link.is_sender else link.source
        terminus.capabilities.put_object(symbol(self.capability))

    def test(self, link: Any) -> bool:
        return True


def _connect(container: Container, url: str, user: str | None, password: str | None, client_id: str | None) -> Any:
    address, ssl = amqp_url(url)
    kwargs: dict[str, Any] = {"allowed_mechs": "PLAIN" if user else "ANONYMOUS PLAIN"}
    if user:
        kwargs["user"] = user
        kwargs["password"] = password or ""
    if ssl:
        kwargs["ssl_domain"] = SSLDomain(SSLDomain.MODE_CLIENT)
    return container.connect(("amqps://" if ssl else "amqp://") + address, sasl_enabled=True, **kwargs)


class _Progress:
    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self._progress = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
            )
            self._task = self._progress.add_task(label, total=total)
            self._progress.start()

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


class _ProducerHandler(MessagingHandler):
    def __init__(self, options: dict[str, Any], thread: int, out: Any, progress: _Progress) -> None:
        super().__init__(auto_accept=False)
        self.options = options
        self.destination: Destination = options["destination"]
        self.name = f"Producer {self.destination.describe()}, thread={thread}"
        self.out = out
        self.progress = progress
        self.total = options["message_count"]
        self.sent = 0
        self.confirmed = 0
        self.rejected = 0
        self.error: str | None = None
        self.started = 0.0
        self.finished = 0.0
        self._next_send = 0.0
        self._payload = _payload(options)

    def on_start(self, event: Any) -> None:
        o = self.options
        self.connection = _connect(event.container, o["url"], o["user"], o["password"], o["client_id"])
        capability = self.destination.capability
        link_options = [_Capability(capability)] if capability else None
        self.sender = event.container.create_sender(self.connection, self.destination.address, options=link_options)
        self.out(f"{self.name} Started to calculate elapsed time ...\n")
        self.started = time.monotonic()

    def on_sendable(self, event: Any) -> None:
        self._send_some(event)

    def on_timer_task(self, event: Any) -> None:
        self._send_some(event)

    def _send_some(self, event: Any) -> None:
        sleep_ms = self.options["sleep"]
        sender = self.sender
        while sender.credit > 0 and self.sent < self.total:
            if sleep_ms > 0:
                now = time.monotonic()
                if now < self._next_send:
                    event.container.schedule(self._next_send - now, self)
                    return
                self._next_send = now + sleep_ms / 1000.0
            message = self._message(self.sent)
            sender.send(message)
            if self.options["verbose"]:
                body = message.body
                self.out(f"{self.name} Sent: {body if isinstance(body, str) else message.id}")
            self.sent += 1
            if sleep_ms > 0 and self.sent < self.total:
                event.container.schedule(sleep_ms / 1000.0, self)
                return

    def _message(self, count: int) -> Message:
        o = self.options
        properties = {"count": count, "ThreadSent": self.name}
        properties.update(o["properties"])
        annotations = {JMS_DEST: 1 if self.destination.routing is RoutingType.MULTICAST else 0}
        body: Any
        if isinstance(self._payload, bytes):
            body = self._payload
            annotations[JMS_MSG_TYPE] = JMS_BYTES_MESSAGE
            content_type = "application/octet-stream"
        else:
            body = self._payload if self._payload is not None else f"test message: {count}"
            annotations[JMS_MSG_TYPE] = JMS_TEXT_MESSAGE
            content_type = None
        message = Message(
            body=body,
            durable=not o["non_persistent"],
            properties=properties,
            annotations=annotations,
            id=f"ID:{uuid.uuid4()}",
            address=self.destination.address,
        )
        if content_type:
            message.content_type = content_type
            message.inferred = True
        if o["msgttl"] > 0:
            message.ttl = o["msgttl"] / 1000.0
        if o["group"]:
            message.group_id = o["group"]
        return message

    def on_accepted(self, event: Any) -> None:
        self.confirmed += 1
        self.progress.advance()
        self._maybe_done(event)

    def on_rejected(self, event: Any) -> None:
        self.rejected += 1
        condition = event.delivery.remote.condition
        if self.error is None:
            self.error = f"{condition.name}: {condition.description}" if condition else "rejected"
        self._maybe_done(event)

    def on_released(self, event: Any) -> None:
        self.on_rejected(event)

    def _maybe_done(self, event: Any) -> None:
        if self.confirmed + self.rejected >= self.total:
            self.finished = time.monotonic()
            event.connection.close()

    def on_link_error(self, event: Any) -> None:
        condition = event.link.remote_condition
        self.error = f"{condition.name}: {condition.description}" if condition else "link error"
        event.connection.close()

    def on_connection_error(self, event: Any) -> None:
        condition = event.connection.remote_condition
        self.error = f"{condition.name}: {condition.description}" if condition else "connection error"
        event.connection.close()

    def on_transport_error(self, event: Any) -> None:
        condition = event.transport.condition
        if self.error is None:
            self.error = f"{condition.name}: {condition.description}" if condition else "transport error"
        if event.connection is not None:
            event.connection.close()
        self.finished = time.monotonic()


def _payload(options: dict[str, Any]) -> bytes | str | None:
    if options.get("message_size"):
        size = options["message_size"]
        return bytes((i % 26) + 65 for i in range(size))
    if options.get("text_size"):
        size = options["text_size"]
        repeated = (_DEMO_TEXT * (size // len(_DEMO_TEXT) + 1))[:size]
        return repeated
    if options.get("message") is not None:
        return options["message"]
    return None


class _ConsumerHandler(MessagingHandler):
    def __init__(self, options: dict[str, Any], thread: int, out: Any, progress: _Progress) -> None:
        super().__init__(prefetch=0, auto_accept=False)
        self.options = options
        self.destination: Destination = options["destination"]
        self.name = f"Consumer {self.destination.describe()}, thread={thread}"
        self.thread = thread
        self.out = out
        self.progress = progress
        self.total = options["message_count"]
        self.received = 0
        self.error: str | None = None
        self.started = 0.0
        self.finished = 0.0
        self._timer: Any = None
        self._last = 0.0

    def on_start(self, event: Any) -> None:
        o = self.options
        timeout = o["receive_timeout"]
        self.out(f"{self.name} wait {'forever' if timeout == -1 else f'{timeout}ms'} until {self.total} messages are consumed")
        self.connection = _connect(event.container, o["url"], o["user"], o["password"], o["client_id"])
        link_options: list[Any] = []
        capability = self.destination.capability
        if capability:
            link_options.append(_Capability(capability))
        if o["filter"]:
            link_options.append(Selector(o["filter"]))
        name = None
        if o["durable"] and self.destination.routing is RoutingType.MULTICAST:
            link_options.append(DurableSubscription())
            name = o["subscription"] or f"consumer{self.thread}"
        self.receiver = event.container.create_receiver(
            self.connection, self.destination.address, name=name, options=link_options or None
        )
        self.receiver.flow(min(self.total, 1000))
        self.started = self._last = time.monotonic()
        if timeout != -1:
            self._timer = event.container.schedule(timeout / 1000.0, self)

    def on_message(self, event: Any) -> None:
        message = event.message
        self.received += 1
        self._last = time.monotonic()
        if self.options["verbose"]:
            body = message.body
            self.out(f"{self.name} Received {body if isinstance(body, str) else message.id}")
        self.progress.advance()
        self.accept(event.delivery)
        remaining = self.total - self.received
        if remaining <= 0:
            self._done(event)
            return
        if self.receiver.credit == 0:
            self.receiver.flow(min(remaining, 1000))
        sleep_ms = self.options["sleep"]
        if sleep_ms > 0:
            time.sleep(sleep_ms / 1000.0)

    def on_timer_task(self, event: Any) -> None:
        timeout = self.options["receive_timeout"] / 1000.0
        idle = time.monotonic() - self._last
        if self.received >= self.total:
            return
        if idle >= timeout:
            if self.options["break_on_null"]:
                self._done(event)
                return
            self._last = time.monotonic()
        self._timer = event.container.schedule(max(0.01, timeout - idle if idle < timeout else timeout), self)

    def _done(self, event: Any) -> None:
        self.finished = time.monotonic()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.receiver.close()
        self.connection.close()

    def on_link_error(self, event: Any) -> None:
        condition = event.link.remote_condition
        self.error = f"{condition.name}: {condition.description}" if condition else "link error"
        self._close(event)

    def on_connection_error(self, event: Any) -> None:
        condition = event.connection.remote_condition
        self.error = f"{condition.name}: {condition.description}" if condition else "connection error"
        self._close(event)

    def on_transport_error(self, event: Any) -> None:
        condition = event.transport.condition
        if self.error is None:
            self.error = f"{condition.name}: {condition.description}" if condition else "transport error"
        self._close(event)

    def _close(self, event: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if event.connection is not None:
            event.connection.close()
        self.finished = self.finished or time.monotonic()


def _run_threads(handler_class: type, options: dict[str, Any], verb: str) -> int:
    lock = threading.Lock()

    def out(line: str) -> None:
        with lock:
            click.echo(line)

    show_progress = not options["verbose"] and sys.stdout.isatty()
    progress = _Progress(options["message_count"] * options["threads"], verb, show_progress)
    handlers = [handler_class(options, index, out, progress) for index in range(options["threads"])]
    threads = [threading.Thread(target=Container(h).run, name=h.name, daemon=True) for h in handlers]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        progress.close()
        click.echo("interrupted", err=True)
        return 130
    progress.close()
    failed = 0
    for handler in handlers:
        finished = handler.finished or time.monotonic()
        elapsed_ms = int((finished - handler.started) * 1000) if handler.started else 0
        if verb == "Produced":
            count = handler.confirmed
        else:
            count = handler.received
        if handler.error:
            failed += 1
            click.echo(f"{handler.name} Error: {handler.error}", err=True)
        out(f"{handler.name} {verb}: {count} messages")
        out(f"{handler.name} Elapsed time in second : {elapsed_ms // 1000} s")
        out(f"{handler.name} Elapsed time in milli second : {elapsed_ms} milli seconds")
    return 1 if failed else 0


def _common(function: Any) -> Any:
    options = [
        click.option("--url", default=DEFAULT_URL, show_default=True, help="broker URL (tcp://host:port)"),
        click.option("--user", default=None, help="user name"),
        click.option("--password", default=None, help="password"),
        click.option("--destination", default=DEFAULT_DESTINATION, show_default=True, help="queue://NAME, topic://NAME or address::queue"),
        click.option("--message-count", default=1000, show_default=True, type=click.IntRange(min=0), help="messages per thread"),
        click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), help="parallel connections"),
        click.option("--sleep", default=0, show_default=True, type=click.IntRange(min=0), help="ms to sleep between messages"),
        click.option("--verbose", is_flag=True, help="print every message"),
        click.option("--clientID", "client_id", default=None, help="AMQP container id (JMS client id)"),
        click.option("--protocol", default="AMQP", show_default=True, help="only AMQP (core is accepted and means AMQP)"),
        click.option("--txt-size", "--commit-interval", "commit_interval", default=0, hidden=True, help="accepted for Artemis compatibility"),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.command()
@_common
@click.option("--message-size", default=0, type=click.IntRange(min=0), help="send a BytesMessage of this many bytes")
@click.option("--text-size", default=0, type=click.IntRange(min=0), help="send a TextMessage of this many characters")
@click.option("--message", "message", default=None, help="send this text")
@click.option("--non-persistent", is_flag=True, help="send non-durable messages")
@click.option("--msgttl", default=0, type=click.IntRange(min=0), help="time to live in ms (0: none)")
@click.option("--group", default=None, help="message group id (JMSXGroupID)")
@click.option("--properties", default=None, help='JSON: [{"type":"string","key":"k","value":"v"}]')
def producer(**options: Any) -> None:
    """Send messages (like 'artemis producer')."""
    options["destination"] = Destination.parse(options["destination"])
    options["properties"] = parse_properties(options["properties"])
    sys.exit(_run_threads(_ProducerHandler, options, "Produced"))


@click.command()
@_common
@click.option("--receive-timeout", default=3000, show_default=True, type=int, help="ms to wait for a message (-1: forever)")
@click.option("--break-on-null", is_flag=True, help="stop when a receive times out")
@click.option("--durable", is_flag=True, help="durable subscription (topics)")
@click.option("--subscription", default=None, help="durable subscription name (default consumer<thread>)")
@click.option("--filter", "filter", default=None, help="message selector")
def consumer(**options: Any) -> None:
    """Receive messages (like 'artemis consumer')."""
    options["destination"] = Destination.parse(options["destination"])
    click.echo(f"Consumer:: filter = {options['filter']}")
    sys.exit(_run_threads(_ConsumerHandler, options, "Consumed"))


__all__ = ["Destination", "Filter", "amqp_url", "consumer", "parse_properties", "producer"]
