"""Acceptors: asyncio servers built from ``<acceptor>`` URLs.

``tcp://host:port?protocols=AMQP,MQTT;sslEnabled=true;...`` binds a listening socket. The
``protocols`` parameter restricts which protocols the first bytes may select; omitted means every
protocol pybroker implements. Port 0 binds a free port (:attr:`Acceptor.port` reads it back).

Supported parameters: ``protocols``, ``sslEnabled`` with ``keyStorePath`` (a PEM file holding the
certificate chain and key, or ``keyStoreType=PEM`` with ``keyStorePath`` and ``keyStorePassword``),
``trustStorePath`` (PEM CA bundle), ``needClientAuth``, ``wantClientAuth``, ``enabledProtocols``,
``enabledCipherSuites``, ``tcpNoDelay`` (true), ``tcpSendBufferSize``, ``tcpReceiveBufferSize``,
``connectionsAllowed`` (-1), ``handshake-timeout`` (seconds, 10), ``autoStart`` (true). Others
(``useEpoll``, ``amqpCredits``, ...) belong to the protocols or are accepted as JVM-only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from pybroker.errors import ConfigError
from pybroker.protocol.detect import ALL_PROTOCOLS, UNSUPPORTED

from .connection import Connection, HandlerFactory

log = logging.getLogger("pybroker.transport")


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes")


class Acceptor:
    """One listening endpoint."""

    def __init__(
        self,
        config: Any,
        handler_factory: HandlerFactory,
        *,
        host_override: str | None = None,
        port_override: int | None = None,
    ) -> None:
        self.config = config
        self.name: str = config.name
        self._handler_factory = handler_factory
        params = {k: v for k, v in config.params.items()}
        self.params = params
        self.host = host_override if host_override is not None else config.host
        port = config.port if port_override is None else port_override
        self.requested_port = 61616 if port is None else port
        protocols = config.protocols
        if protocols is not None:
            wanted = {p.upper() for p in protocols}
            unsupported = wanted & UNSUPPORTED
            if unsupported:
                log.info(
                    "acceptor %s: protocols %s are not implemented by pybroker and are ignored",
                    self.name,
                    ",".join(sorted(unsupported)),
                )
            self.protocols: frozenset[str] = frozenset(wanted & ALL_PROTOCOLS)
            if not self.protocols:
                raise ConfigError(
                    f"acceptor {self.name!r} enables no protocol pybroker implements "
                    f"(asked for {','.join(sorted(wanted))}; pybroker has AMQP, MQTT, STOMP)",
                    element="acceptor",
                    file=getattr(config, "file", None),
                    line=getattr(config, "line", None),
                )
        else:
            self.protocols = ALL_PROTOCOLS
        self.handshake_timeout = float(params.get("handshake-timeout", "10"))
        self.connections_allowed = int(params.get("connectionsAllowed", "-1"))
        self.auto_start = _bool(params.get("autoStart"), True)
        self.tcp_no_delay = _bool(params.get("tcpNoDelay"), True)
        self.connections: set[Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self.port: int | None = None
        self.refused = 0

    @property
    def url(self) -> str:
        return self.config.url

    def _ssl_context(self) -> ssl.SSLContext | None:
        params = self.params
        if not _bool(params.get("sslEnabled"), False):
            return None
        key_store = params.get("keyStorePath")
        if not key_store:
            raise ConfigError(f"acceptor {self.name!r}: sslEnabled=true needs keyStorePath", element="acceptor")
        store_type = params.get("keyStoreType", "PEM").upper()
        if store_type not in ("PEM",):
            raise ConfigError(
                f"acceptor {self.name!r}: keyStoreType={store_type} is not supported by pybroker; "
                "convert the key store to PEM (openssl pkcs12 -in store.p12 -out store.pem -nodes)",
                element="acceptor",
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(key_store, password=params.get("keyStorePassword"))
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"acceptor {self.name!r}: cannot load {key_store}: {error}", element="acceptor") from None
        trust = params.get("trustStorePath")
        if trust:
            context.load_verify_locations(trust)
        if _bool(params.get("needClientAuth"), False):
            context.verify_mode = ssl.CERT_REQUIRED
        elif _bool(params.get("wantClientAuth"), False):
            context.verify_mode = ssl.CERT_OPTIONAL
        ciphers = params.get("enabledCipherSuites")
        if ciphers:
            context.set_ciphers(ciphers.replace(",", ":"))
        return context

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ssl_context = self._ssl_context()

        def factory() -> Connection:
            connection = Connection(
                acceptor=self,
                handler_factory=self._handler_factory,
                allowed_protocols=self.protocols,
                handshake_timeout=self.handshake_timeout,
                on_closed=self._connection_closed,
            )
            if self.connections_allowed >= 0 and len(self.connections) >= self.connections_allowed:
                self.refused += 1
                log.warning(
                    "AMQ222184: acceptor %s refused a connection: connectionsAllowed=%d reached",
                    self.name,
                    self.connections_allowed,
                )
                connection_made = connection.connection_made

                def refuse(transport: asyncio.BaseTransport) -> None:
                    connection_made(transport)
                    transport.close()

                connection.connection_made = refuse  # type: ignore[method-assign]
                return connection
            self.connections.add(connection)
            return connection

        host = None if self.host in ("0.0.0.0", "", "*") else self.host
        try:
            self._server = await loop.create_server(
                factory,
                host=host,
                port=self.requested_port,
                reuse_address=True,
                ssl=ssl_context,
                backlog=1024,
            )
        except OSError as error:
            raise OSError(
                error.errno,
                f"AMQ224000: acceptor {self.name!r} cannot bind {self.host}:{self.requested_port}: {error.strerror}",
            ) from None
        for sock in self._server.sockets:
            if self.tcp_no_delay:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
            for key, option in (("tcpSendBufferSize", socket.SO_SNDBUF), ("tcpReceiveBufferSize", socket.SO_RCVBUF)):
                value = self.params.get(key)
                if value:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, option, int(value))
                    except (OSError, ValueError):
                        pass
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "AMQ221020: Started %s Acceptor at %s:%s for protocols [%s]",
            "TLS" if ssl_context else "EPOLL",
            self.host,
            self.port,
            ",".join(sorted(self.protocols)),
        )

    def _connection_closed(self, connection: Connection) -> None:
        self.connections.discard(connection)

    async def stop(self, *, close_connections: bool = True) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if close_connections:
            for connection in list(self.connections):
                connection.abort()
        if server is not None:
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=5)
            except TimeoutError:
                log.warning("acceptor %s: connections did not close within 5 s", self.name)
        if self.port is not None:
            log.info("AMQ221021: stopped acceptor %s at %s:%s", self.name, self.host, self.port)

    def pause(self) -> None:
        """Stop accepting new connections (existing ones go on)."""
        if self._server is not None:
            for sock in self._server.sockets:
                loop = asyncio.get_running_loop()
                loop.remove_reader(sock.fileno())


AcceptorFactory = Callable[[Any], Acceptor]
