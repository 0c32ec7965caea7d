"""The assembled broker node: configuration -> storage -> core -> protocols -> acceptors -> HA.

:class:`Broker` is what ``pybroker run`` runs and what tests and applications embed::

    async with Broker.from_xml("etc/broker.xml") as broker:
        print(broker.port)

    async with Broker.embedded(port=0) as broker:   # the built-in default, on a free port
        ...

Which phases run when is decided by the HA *activation* the configuration's ``ha-policy``
selects (``pybroker.ha.activation``): a primary loads the journal and opens its acceptors once it
holds the primary lock; a backup waits and does so only when it takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pybroker.broker.security import SecurityStore
from pybroker.broker.server import BrokerServer
from pybroker.broker.settings import AddressSettingsRepository, SecurityRepository
from pybroker.config.model import AcceptorConfig, Configuration
from pybroker.config.parse import default_config, load_config
from pybroker.errors import ConfigError
from pybroker.protocol.detect import AMQP, MQTT, STOMP
from pybroker.storage.manager import MemoryStorageManager, StorageManager
from pybroker.transport.acceptor import Acceptor
from pybroker.transport.connection import ConnectionContext, ProtocolHandler

log = logging.getLogger("pybroker.server")




class Broker:
    """One broker node (primary, backup or standalone)."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        storage_factory: Callable[[Configuration], StorageManager] | None = None,
        node_manager: Any = None,
        etc_dir: Path | None = None,
        stop_file: Path | None = None,
    ) -> None:
        self.configuration = configuration
        self._storage_factory = storage_factory
        self._node_manager = node_manager
        self.etc_dir = etc_dir if etc_dir is not None else _etc_dir_of(configuration)
        self.stop_file = stop_file
        self.server: BrokerServer | None = None
        self.acceptors: list[Acceptor] = []
        self.activation: Any = None
        self._stopped = asyncio.Event()
        self._running = False
        self.handlers: set[Any] = set()
        self._stop_task: asyncio.Task[None] | None = None
        self.exit_code = 0

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_xml(
        cls,
        path: str | os.PathLike[str],
        *,
        properties: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Broker:
        """A broker from an Artemis ``broker.xml`` (raises ConfigError naming file and line)."""
        configuration = load_config(Path(path), properties=properties)
        return cls(configuration, **kwargs)

    @classmethod
    def embedded(
        cls,
        *,
        port: int = 0,
        persistence: bool = False,
        instance_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        **kwargs: Any,
    ) -> Broker:
        """The built-in default configuration on ``host:port`` (port 0: a free port)."""
        configuration = default_config(
            instance_dir=Path(instance_dir) if instance_dir is not None else None,
            port=port,
            persistence_enabled=persistence,
        )
        acceptors = tuple(replace(acceptor, host=host) for acceptor in configuration.acceptors)
        configuration = replace(configuration, acceptors=acceptors)
        return cls(configuration, **kwargs)

    # -- properties --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port of the first acceptor (reads back port 0)."""
        for acceptor in self.acceptors:
            if acceptor.port is not None:
                return acceptor.port
        raise RuntimeError("the broker has no open acceptor (not active yet?)")

    @property
    def ports(self) -> dict[str, int]:
        return {a.name: a.port for a in self.acceptors if a.port is not None}

    @property
    def url(self) -> str:
        return f"amqp://127.0.0.1:{self.port}"

    @property
    def active(self) -> bool:
        return self.server is not None and self.server.active

    @property
    def node_id(self) -> str | None:
        nm = self.activation.node_manager if self.activation is not None else None
        if nm is None:
            return None
        try:
            return nm.node_id
        except Exception:  # noqa: BLE001
            return None

    # -- building blocks used by the activations --------------------------------------------
    def build_storage(
        self, fence: Callable[[], None] | None = None, epoch: int = 0
    ) -> StorageManager:
        configuration = self.configuration
        if self._storage_factory is not None:
            return self._storage_factory(configuration)
        if not configuration.persistence_enabled:
            return MemoryStorageManager()
        try:
            from pybroker.storage.journal_storage import JournalStorageManager
        except ImportError:  # pragma: no cover - storage issue not landed
            log.warning("persistent storage is not available in this build; running in memory")
            return MemoryStorageManager()
        return JournalStorageManager(configuration, fence=fence, epoch=epoch)

    def build_security(self) -> SecurityStore:
        configuration = self.configuration
        if not configuration.security_enabled:
            return SecurityStore(enabled=False, authenticator=None, repository=None)
        from pybroker.config.users import Authenticator

        etc = self.etc_dir
        login = etc / "login.config" if etc is not None else None
        if login is None or not login.exists():
            where = configuration.config_file or "the configuration"
            raise ConfigError(
                "security-enabled is true but there is no login.config next to the broker.xml "
                f"({login if login else 'no etc directory'}); add one (pybroker create writes it) "
                "or set <security-enabled>false</security-enabled>",
                file=str(where),
                element="security-enabled",
            )
        authenticator = Authenticator.from_etc(etc)
        repository = SecurityRepository(
            configuration.security_settings,
            configuration.wildcard_addresses,
            literal_match_markers=configuration.literal_match_markers,
        )
        return SecurityStore(
            enabled=True,
            authenticator=authenticator,
            repository=repository,
            cache_size=configuration.authorization_cache_size,
        )

    def build_server(
        self, fence: Callable[[], None] | None = None, epoch: int = 0
    ) -> BrokerServer:
        from pybroker.protocol.amqp.message import AMQP_CODEC

        try:
            from pybroker.broker.filter import make_filter
        except ImportError:  # pragma: no cover - while the filter module is being written
            make_filter = None

        configuration = self.configuration
        codecs: dict[str, Any] = {"amqp": AMQP_CODEC}
        for name, module in (("mqtt", "pybroker.protocol.mqtt.message"), ("stomp", "pybroker.protocol.stomp.message")):
            with contextlib.suppress(ImportError):
                imported = __import__(module, fromlist=["CODEC"])
                codecs[name] = imported.CODEC
        repository = AddressSettingsRepository(
            configuration.address_settings,
            configuration.wildcard_addresses,
            literal_match_markers=configuration.literal_match_markers,
        )
        server = BrokerServer(
            configuration,
            storage=self.build_storage(fence, epoch),
            codecs=codecs,
            security=self.build_security(),
            address_settings=repository.match,
            filter_factory=make_filter,
        )
        self.server = server
        return server

    def preload(self) -> None:
        """Import everything activation needs, so a backup's takeover does not pay for imports
        (about 100 ms of the failover time otherwise)."""
        import importlib

        for module in (
            "pybroker.storage.journal_storage",
            "pybroker.broker.filter",
            "pybroker.protocol.amqp.handler",
            "pybroker.protocol.mqtt.handler",
            "pybroker.protocol.mqtt.message",
            "pybroker.protocol.stomp.handler",
            "pybroker.protocol.stomp.message",
            "pybroker.protocol.convert",
        ):
            importlib.import_module(module)

    def server_loaded(self, server: BrokerServer) -> None:
        """The journal was replayed: let protocols restore their state (MQTT sessions and
        retained messages start their timers and indexes now, not at the first connection)."""
        from pybroker.protocol.mqtt.handler import registry_for

        registry_for(server)

    def handler_factory(self, protocol: str, context: ConnectionContext) -> ProtocolHandler:
        server = self.server
        if server is None or not server.active:
            raise ConnectionRefusedError("broker is not active")
        handler: Any
        if protocol == AMQP:
            from pybroker.protocol.amqp.handler import AMQPConnectionHandler

            failover = self.activation.failover_server_list if self.activation is not None else None
            handler = AMQPConnectionHandler(server, context, failover_server_list=failover)
        elif protocol == MQTT:
            from pybroker.protocol.mqtt.handler import MQTTConnectionHandler

            handler = MQTTConnectionHandler(server, context)
        elif protocol == STOMP:
            from pybroker.protocol.stomp.handler import StompConnectionHandler

            handler = StompConnectionHandler(server, context)
        else:  # pragma: no cover - detect() only returns the three above
            raise ConnectionRefusedError(f"protocol {protocol} is not supported")
        self.handlers.add(handler)
        return _Tracked(handler, self.handlers)

    def build_acceptors(self) -> list[Acceptor]:
        acceptors = []
        for config in self.configuration.acceptors:
            acceptors.append(Acceptor(config, self.handler_factory))
        self.acceptors = acceptors
        return acceptors

    async def start_acceptors(self) -> None:
        if not self.acceptors:
            self.build_acceptors()
        started: list[Acceptor] = []
        try:
            for acceptor in self.acceptors:
                if acceptor.auto_start:
                    await acceptor.start()
                    started.append(acceptor)
        except BaseException:
            for acceptor in started:
                await acceptor.stop()
            raise

    async def stop_acceptors(self) -> None:
        for handler in list(self.handlers):
            with contextlib.suppress(Exception):
                force_close = getattr(handler, "force_close", None)
                if force_close is not None:
                    force_close()
        for acceptor in self.acceptors:
            with contextlib.suppress(Exception):
                await acceptor.stop()
        self.handlers.clear()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, *, wait_active: bool = True) -> None:
        """Start the node. A primary returns once active; a backup once it waits (or, with
        ``wait_active``, once it became active -- never for a backup whose primary lives)."""
        from pybroker.ha.activation import choose_activation

        if self._running:
            return
        self._running = True
        self._stopped.clear()
        log.info(
            "AMQ221000: %s message broker is starting with configuration Broker Configuration "
            "(name=%s,persistenceEnabled=%s,journalDirectory=%s,bindingsDirectory=%s,"
            "largeMessagesDirectory=%s,pagingDirectory=%s)",
            _role(self.configuration),
            self.configuration.name,
            self.configuration.persistence_enabled,
            self.configuration.journal_directory,
            self.configuration.bindings_directory,
            self.configuration.large_messages_directory,
            self.configuration.paging_directory,
        )
        self.activation = choose_activation(self, node_manager=self._node_manager)
        try:
            await self.activation.start()
        except BaseException:
            self._running = False
            with contextlib.suppress(Exception):
                await self.activation.stop(failover=False)
            raise
        if self.stop_file is not None:
            asyncio.get_running_loop().create_task(self._watch_stop_file(), name="stop-file-watcher")

    async def stop(self, *, failover: bool | None = None, lost_lock: bool = False) -> None:
        """Stop gracefully. ``failover`` overrides ``failover-on-shutdown`` (None = config);
        ``lost_lock`` stops without touching the shared-store locks."""
        if not self._running:
            return
        self._running = False
        try:
            if self.activation is not None:
                await self.activation.stop(failover=failover, lost_lock=lost_lock)
        finally:
            self._stopped.set()

    def request_stop(
        self, *, exit_code: int = 0, failover: bool | None = None, lost_lock: bool = False
    ) -> None:
        """Stop from a callback (signal, lost lock, STOP_ME file)."""
        if self._stop_task is None or self._stop_task.done():
            self.exit_code = exit_code or self.exit_code
            self._stop_task = asyncio.get_running_loop().create_task(
                self.stop(failover=failover, lost_lock=lost_lock)
            )

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
        if self._stop_task is not None:
            with contextlib.suppress(Exception):
                await self._stop_task

    async def wait_active(self, timeout: float | None = None) -> None:
        """Wait until this node serves clients (a backup: until it took over)."""
        if self.activation is None:
            raise RuntimeError("broker not started")
        await asyncio.wait_for(self.activation.wait_active(), timeout)

    async def _watch_stop_file(self) -> None:
        stop_file = self.stop_file
        assert stop_file is not None
        while self._running:
            await asyncio.sleep(0.5)
            if stop_file.exists():
                log.info("AMQ221002: stop requested by %s", stop_file)
                with contextlib.suppress(OSError):
                    stop_file.unlink()
                self.request_stop()
                return

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class _Tracked:
    """Wraps a handler so the node forgets it when its connection closes."""

    __slots__ = ("_handler", "_registry", "data_received", "eof_received", "pause_writing", "resume_writing")

    def __init__(self, handler: Any, registry: set[Any]) -> None:
        self._handler = handler
        self._registry = registry
        self.data_received = handler.data_received
        self.eof_received = handler.eof_received
        self.pause_writing = handler.pause_writing
        self.resume_writing = handler.resume_writing

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self._handler)
        self._handler.connection_lost(exc)


def _role(configuration: Configuration) -> str:
    kind = configuration.ha_policy.kind
    if kind == "shared-store-backup":
        return "Backup"
    return "Primary"


def _etc_dir_of(configuration: Configuration) -> Path | None:
    config_file = configuration.config_file
    if config_file is None:
        return None
    return Path(config_file).parent


def acceptor_for(host: str, port: int, *, name: str = "artemis", protocols: str | None = None) -> AcceptorConfig:
    """An acceptor definition for tests and embedding."""
    params = {"protocols": protocols} if protocols else {}
    return AcceptorConfig(
        name=name,
        url=f"tcp://{host}:{port}",
        host=host,
        port=port,
        params=params,
        protocols=frozenset(protocols.split(",")) if protocols else None,
    )
