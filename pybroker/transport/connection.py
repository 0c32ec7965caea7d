"""One accepted socket: protocol detection, then bytes to and from a protocol handler.

This is the only code (with acceptor.py) that touches sockets. It is an ``asyncio.Protocol``
(callbacks, no per-read coroutine) because the broker's per-message budget is a few tens of
microseconds. Handlers are sans-I/O towards the socket: they get bytes in ``data_received`` and
write through the :class:`ConnectionContext` they are given.

Back-pressure: when the socket's write buffer passes the high-water mark, asyncio calls
``pause_writing``; the handler is told and stops producing (consumers report "no credit"), and
is told again on ``resume_writing``. A handler that cannot take more input (a BLOCK address) calls
``context.pause_reading()``.

A connection that has not identified its protocol within ``handshake_timeout`` seconds, or sends
bytes no enabled protocol recognises, is closed with one log line; the broker carries on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any, Protocol

from pybroker.errors import ProtocolError
from pybroker.protocol.detect import UnknownProtocolError, detect

log = logging.getLogger("pybroker.transport")

_connection_ids = itertools.count(1)


class ProtocolHandler(Protocol):
    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


# (protocol name, context) -> handler
HandlerFactory = Callable[[str, "ConnectionContext"], ProtocolHandler]


class ConnectionContext:
    """What a protocol handler may do with its connection."""

    __slots__ = (
        "_connection",
        "acceptor",
        "connection_id",
        "loop",
        "protocol",
        "remote_address",
    )

    def __init__(self, connection: Connection, acceptor: Any, remote_address: str) -> None:
        self._connection = connection
        self.acceptor = acceptor
        self.loop = asyncio.get_running_loop()
        self.connection_id = f"{next(_connection_ids)}"
        self.remote_address = remote_address
        self.protocol: str | None = None

    def write(self, data: bytes | bytearray) -> None:
        transport = self._connection.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        """Flush what was written, then close."""
        transport = self._connection.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        transport = self._connection.transport
        if transport is not None:
            transport.abort()

    def pause_reading(self) -> None:
        transport = self._connection.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._connection.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    @property
    def writing_paused(self) -> bool:
        return self._connection.writing_paused

    @property
    def closing(self) -> bool:
        transport = self._connection.transport
        return transport is None or transport.is_closing()

    def get_extra_info(self, name: str) -> Any:
        transport = self._connection.transport
        return None if transport is None else transport.get_extra_info(name)


class Connection(asyncio.Protocol):
    """asyncio protocol for one accepted socket."""

    def __init__(
        self,
        *,
        acceptor: Any,
        handler_factory: HandlerFactory,
        allowed_protocols: frozenset[str] | None,
        handshake_timeout: float,
        on_closed: Callable[[Connection], None],
        max_detect_bytes: int = 4096,
    ) -> None:
        self.acceptor = acceptor
        self._handler_factory = handler_factory
        self._allowed = allowed_protocols
        self._handshake_timeout = handshake_timeout
        self._on_closed = on_closed
        self._max_detect_bytes = max_detect_bytes
        self.transport: asyncio.Transport | None = None
        self.handler: ProtocolHandler | None = None
        self.context: ConnectionContext | None = None
        self._prefix = b""
        self._timer: asyncio.TimerHandle | None = None
        self.writing_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.context = ConnectionContext(self, self.acceptor, remote)
        if self._handshake_timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        handler = self.handler
        if handler is not None:
            try:
                handler.data_received(data)
            except Exception as error:  # task boundary: log, close this one connection
                self._fail(error)
            return
        self._prefix += data
        try:
            protocol = detect(self._prefix, self._allowed)
        except UnknownProtocolError as error:
            log.warning(
                "AMQ214013: closing connection %s from %s on acceptor %s: %s",
                self.context.connection_id if self.context else "?",
                self.context.remote_address if self.context else "?",
                getattr(self.acceptor, "name", "?"),
                error,
            )
            self._close_now()
            return
        if protocol is None:
            if len(self._prefix) > self._max_detect_bytes:
                log.warning("closing connection from %s: no protocol header in the first %d bytes",
                            self.context.remote_address if self.context else "?", len(self._prefix))
                self._close_now()
            return
        self._cancel_timer()
        assert self.context is not None
        self.context.protocol = protocol
        try:
            self.handler = self._handler_factory(protocol, self.context)
        except Exception as error:
            self._fail(error)
            return
        prefix, self._prefix = self._prefix, b""
        try:
            self.handler.data_received(prefix)
        except Exception as error:
            self._fail(error)

    def eof_received(self) -> bool | None:
        handler = self.handler
        if handler is not None:
            try:
                handler.eof_received()
            except Exception as error:
                self._fail(error)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        handler, self.handler = self.handler, None
        if handler is not None:
            try:
                handler.connection_lost(exc)
            except Exception:  # noqa: BLE001 - task boundary
                log.exception("error while closing connection %s", self.context.connection_id if self.context else "?")
        self.transport = None
        self._on_closed(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.handler is not None:
            try:
                self.handler.resume_writing()
            except Exception as error:
                self._fail(error)

    # -- helpers ---------------------------------------------------------------------------
    def _handshake_expired(self) -> None:
        self._timer = None
        if self.handler is None and self.transport is not None:
            log.warning(
                "AMQ224088: closing connection from %s: no protocol handshake within %.1f s",
                self.context.remote_address if self.context else "?",
                self._handshake_timeout,
            )
            self._close_now()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, error: Exception) -> None:
        remote = self.context.remote_address if self.context else "?"
        if isinstance(error, ProtocolError):
            log.warning("closing %s connection from %s: protocol error: %s",
                        self.context.protocol if self.context else "?", remote, error)
        else:
            log.exception("closing connection from %s after an internal error", remote, exc_info=error)
        self._close_now()

    def _close_now(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def close(self) -> None:
        self._close_now()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
