"""BrokerServer: the broker core's lifecycle, with named phases.

Theory of operation
-------------------
The server is built from a :class:`~pybroker.config.model.Configuration` with its collaborators
injected (storage manager, message codecs, clock). It owns no socket and no file: the node that
assembles it (``pybroker.embedded.Broker``) opens acceptors, and the HA *activation* decides
when each phase runs:

``open_storage``   the StorageManager starts (journals opened, not read);
``load_state``     configured addresses/queues are deployed and the journal is replayed into them;
``activate``       periodic services start (expiry scan, auto-delete scan); the server accepts
                   sends;
``stop``           services stop, sessions close, storage closes.

A backup runs none of these until it becomes active. The allowed transitions are the table
``_TRANSITIONS``; anything else raises :class:`IllegalStateError` naming state and event.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pybroker.config.model import AddressSettings, Configuration, RoutingType
from pybroker.errors import PyBrokerError
from pybroker.storage.manager import MemoryStorageManager, RecoveredState, StorageManager

from .limits import Limits
from .message import NO_CODEC, IdGenerator, Message, MessageCodec, MessageReference
from .postoffice import PostOffice
from .queue import Filter
from .security import Principal, SecurityStore
from .session import ServerSession

log = logging.getLogger("pybroker.broker")


class ServerState(enum.Enum):
    CREATED = "created"
    STORAGE_OPEN = "storage-open"
    LOADED = "loaded"
    ACTIVE = "active"
    STOPPING = "stopping"
    STOPPED = "stopped"


# (state, event) -> new state
_TRANSITIONS: dict[tuple[ServerState, str], ServerState] = {
    (ServerState.CREATED, "open_storage"): ServerState.STORAGE_OPEN,
    (ServerState.STORAGE_OPEN, "load_state"): ServerState.LOADED,
    (ServerState.LOADED, "activate"): ServerState.ACTIVE,
    (ServerState.CREATED, "stop"): ServerState.STOPPING,
    (ServerState.STORAGE_OPEN, "stop"): ServerState.STOPPING,
    (ServerState.LOADED, "stop"): ServerState.STOPPING,
    (ServerState.ACTIVE, "stop"): ServerState.STOPPING,
    (ServerState.STOPPING, "stopped"): ServerState.STOPPED,
}


class IllegalStateError(PyBrokerError):
    def __init__(self, state: ServerState, event: str) -> None:
        super().__init__(f"broker server: event {event!r} is not allowed in state {state.value!r}")
        self.state = state
        self.event = event


class NotActiveError(PyBrokerError):
    """The server does not accept work (not active yet, or stopping)."""


class BrokerServer:
    """The broker core for one node."""

    #: ``state is ServerState.ACTIVE``, kept by the ``state`` setter
    active: bool

    def __init__(
        self,
        configuration: Configuration,
        *,
        storage: StorageManager | None = None,
        codecs: Mapping[str, MessageCodec] | None = None,
        clock: Callable[[], float] = time.time,
        security: SecurityStore | None = None,
        address_settings: Callable[[str], AddressSettings] | None = None,
        filter_factory: Callable[[str], Filter] | None = None,
    ) -> None:
        self.configuration = configuration
        self.storage: StorageManager = storage or MemoryStorageManager()
        self.codecs: dict[str, MessageCodec] = dict(codecs or {})
        self.clock = clock
        if address_settings is None:
            from .settings import AddressSettingsRepository

            repository = AddressSettingsRepository(
                configuration.address_settings,
                configuration.wildcard_addresses,
                literal_match_markers=configuration.literal_match_markers,
            )
            address_settings = repository.match
        self.address_settings = address_settings
        if security is None:
            security = SecurityStore(enabled=False, authenticator=None, repository=None)
        self.security = security
        self._filter_factory = filter_factory
        self.populate_validated_user = configuration.populate_validated_user
        self.ids = IdGenerator()
        self.post_office = PostOffice(
            storage=self.storage,
            address_settings=address_settings,
            wildcard=configuration.wildcard_addresses,
            ids=None,
            clock=clock,
            id_cache_size=configuration.id_cache_size,
            persist_id_cache=configuration.persist_id_cache,
            filter_factory=filter_factory,
            limits=Limits(
                global_max_size=configuration.global_max_size,
                global_max_messages=configuration.global_max_messages,
                settings=address_settings,
            ),
        )
        self.state = ServerState.CREATED
        self.sessions: dict[int, ServerSession] = {}
        self._services: list[asyncio.Task[None]] = []
        self.started_at: float | None = None
        self.recovered_messages = 0
        self.recovery: RecoveredState | None = None
        self.paging: Any = None
        self.large_messages: Any = None
        # per-server state of the protocol layers (keyed by protocol), e.g. MQTT sessions
        self.protocol_state: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def _transition(self, event: str) -> None:
        new = _TRANSITIONS.get((self.state, event))
        if new is None:
            raise IllegalStateError(self.state, event)
        self.state = new

    @property
    def state(self) -> ServerState:
        return self._state

    @state.setter
    def state(self, value: ServerState) -> None:
        self._state = value
        # a plain attribute, not a property: every send checks it
        self.active = value is ServerState.ACTIVE

    def check_accepting(self) -> None:
        if self.state is not ServerState.ACTIVE:
            raise NotActiveError(f"the broker is {self.state.value}, not active")

    async def open_storage(self) -> None:
        self._transition("open_storage")
        await self.storage.start()
        directory = self.configuration.large_messages_directory
        if directory is not None:
            from pybroker.storage.large import LargeMessageStore

            self.large_messages = LargeMessageStore(
                Path(directory), sync=self.configuration.large_message_sync
            )
            await self.large_messages.start()
            self.post_office.large_messages = self.large_messages

    async def load_state(self) -> RecoveredState:
        """Deploy configured addresses/queues and replay what storage recovered into them."""
        self._transition("load_state")
        recovered = await self.storage.load()
        self.recovery = recovered
        self._restore(recovered)
        self._deploy_configuration()
        if self.storage.persistent and self.configuration.paging_directory is not None:
            from .paging import Paging

            self.paging = Paging(
                self.post_office,
                Path(self.configuration.paging_directory),
                codecs=self.codecs,
                sync=True,
                settings=self.address_settings,
            )
            await self.paging.start(
                recovered.page_acks,
                recovered.page_transactions,
                {message_id for _, message_id in recovered.large_pending},
            )
            self.post_office.paging = self.paging
        await self._clean_large_messages(recovered)
        return recovered

    async def activate(self) -> None:
        self._transition("activate")
        self.started_at = self.clock()
        loop = asyncio.get_running_loop()
        self._services.append(loop.create_task(self._expiry_scanner(), name="expiry-scanner"))
        self._services.append(loop.create_task(self._auto_delete_scanner(), name="auto-delete-scanner"))
        if self.storage.persistent and self.configuration.disk_scan_period > 0:
            self._services.append(loop.create_task(self._disk_scanner(), name="disk-scanner"))
        # queues recovered with messages and no consumers yet: nothing to do until consumers come

    async def stop(self) -> None:
        if self.state in (ServerState.STOPPING, ServerState.STOPPED):
            return
        self._transition("stop")
        for task in self._services:
            task.cancel()
        for task in self._services:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._services.clear()
        for session in list(self.sessions.values()):
            session.close(failed=True)
        if self.paging is not None:
            await self.paging.stop()
        if self.large_messages is not None:
            with contextlib.suppress(Exception):
                await self.large_messages.close()
        with contextlib.suppress(Exception):
            durable = self.storage.durable()
            if durable is not None:
                await durable
        await self.storage.stop()
        self._transition("stopped")

    # -- sessions --------------------------------------------------------------------------
    def create_session(
        self,
        *,
        principal: Principal,
        protocol: str,
        connection_id: str,
        client_id: str | None = None,
        remote_address: str | None = None,
    ) -> ServerSession:
        session = ServerSession(
            self,
            principal=principal,
            protocol=protocol,
            connection_id=connection_id,
            client_id=client_id,
            remote_address=remote_address,
        )
        self.sessions[session.session_id] = session
        return session

    def session_closed(self, session: ServerSession) -> None:
        self.sessions.pop(session.session_id, None)

    def authenticate(self, user: str | None, password: str | None) -> Principal:
        return self.security.authenticate(user, password)

    def make_filter(self, expression: str | None) -> Filter | None:
        if not expression or not expression.strip() or self._filter_factory is None:
            return None
        return self._filter_factory(expression)

    def codec(self, protocol: str) -> MessageCodec:
        return self.codecs.get(protocol, NO_CODEC)

    # -- configuration and recovery --------------------------------------------------------
    def _deploy_configuration(self) -> None:
        post_office = self.post_office
        for address in self.configuration.addresses:
            post_office.create_address(address.name, set(address.routing_types))
            for queue in address.queues:
                self._deploy_queue(queue)
        for queue in getattr(self.configuration, "queues", ()):
            self._deploy_queue(queue)

    def _deploy_queue(self, queue_config: Any) -> None:
        post_office = self.post_office
        with_defaults = getattr(queue_config, "with_defaults_from", None)
        if with_defaults is not None:
            queue_config = with_defaults(self.address_settings(queue_config.address))
        existing = post_office.find_queue(queue_config.name)
        if existing is not None:
            existing.configuration_managed = True
            existing.max_consumers = queue_config.max_consumers
            existing.purge_on_no_consumers = queue_config.purge_on_no_consumers
            existing.exclusive = queue_config.exclusive
            existing.enabled = queue_config.enabled
            return
        post_office.create_queue(
            queue_config.name,
            queue_config.address,
            queue_config.routing_type,
            filter_expression=queue_config.filter,
            durable=queue_config.durable,
            configuration_managed=True,
            max_consumers=queue_config.max_consumers,
            exclusive=queue_config.exclusive,
            purge_on_no_consumers=queue_config.purge_on_no_consumers,
            user=queue_config.user,
            enabled=queue_config.enabled,
        )

    def _restore(self, recovered: RecoveredState) -> None:
        post_office = self.post_office
        for address in recovered.addresses:
            info = post_office.create_address(
                address.name,
                {RoutingType(rt) for rt in address.routing_types},
                auto_created=address.auto_created,
                persist=False,
            )
            info.binding_id = address.binding_id
        by_id: dict[int, Any] = {}
        for record in recovered.queues:
            queue = post_office.create_queue(
                record.name,
                record.address,
                RoutingType(record.routing_type),
                filter_expression=record.filter,
                durable=record.durable,
                auto_created=record.auto_created,
                configuration_managed=record.configuration_managed,
                max_consumers=record.max_consumers,
                exclusive=record.exclusive,
                purge_on_no_consumers=record.purge_on_no_consumers,
                user=record.user,
                queue_id=record.queue_id,
                persist=False,
            )
            by_id[record.queue_id] = queue
        count = 0
        codecs = self.codecs
        delete = self.storage.delete_message
        for recovered_message in recovered.messages:
            live = [
                (queue, delivery_count)
                for queue_id, delivery_count in recovered_message.refs
                if (queue := by_id.get(queue_id)) is not None
            ]
            if not live:
                # every queue it belonged to is gone
                delete(recovered_message.message_id)
                continue
            message = Message.decode(
                recovered_message.message_id, recovered_message.data, codecs, self.large_messages
            )
            message.stored = True
            message.ref_count = len(live)
            post_office.account(message)
            for queue, delivery_count in live:
                queue.restore(MessageReference(message, queue, delivery_count))
            count += 1
        self.recovered_messages = count
        for address, entries in recovered.duplicate_ids.items():
            post_office.restore_duplicate_ids(address, entries)

    async def _clean_large_messages(self, recovered: RecoveredState) -> None:
        """Delete the bodies of large messages whose sending never completed (crash)."""
        store = self.large_messages
        if store is None:
            return
        if not self.storage.persistent:
            for message_id in await store.list_ids():
                await store.delete(message_id)
            return
        journaled = {m.message_id for m in recovered.messages}
        paged = self.paging.paged_large if self.paging is not None else set()
        for record_id, message_id in recovered.large_pending:
            if message_id not in journaled and message_id not in paged:
                log.info("AMQ221018-large: deleting the incomplete large message %s", message_id)
                await store.delete(message_id)
            self.storage.delete_large_pending(record_id)

    # -- periodic services -----------------------------------------------------------------
    async def _expiry_scanner(self) -> None:
        period = max(0.05, self.configuration.message_expiry_scan_period / 1000.0)
        if self.configuration.message_expiry_scan_period < 0:
            return
        while True:
            await asyncio.sleep(period)
            try:
                self.post_office.expire_scan()
            except Exception:  # noqa: BLE001 - a scanner must keep running
                log.exception("expiry scan failed")

    async def _auto_delete_scanner(self) -> None:
        period = max(0.05, self.configuration.address_queue_scan_period / 1000.0)
        if self.configuration.address_queue_scan_period < 0:
            return
        while True:
            await asyncio.sleep(period)
            try:
                self.post_office.auto_delete_scan()
            except Exception:  # noqa: BLE001
                log.exception("auto-delete scan failed")

    async def _disk_scanner(self) -> None:
        """max-disk-usage / min-disk-free: block producers while the store's disk is full."""
        import shutil

        configuration = self.configuration
        directory = str(configuration.journal_directory)
        period = configuration.disk_scan_period / 1000.0
        while True:
            try:
                usage = await asyncio.to_thread(shutil.disk_usage, directory)
                used_percent = 100.0 * (usage.total - usage.free) / usage.total if usage.total else 0.0
                full = (
                    configuration.min_disk_free >= 0 and usage.free < configuration.min_disk_free
                ) or (
                    configuration.min_disk_free < 0
                    and 0 <= configuration.max_disk_usage < 100
                    and used_percent > configuration.max_disk_usage
                )
                self.post_office.limits.disk_changed(full)
            except OSError as error:
                log.warning("disk scan of %s failed: %s", directory, error)
            await asyncio.sleep(period)

    # -- statistics ------------------------------------------------------------------------
    def queue_statistics(self) -> dict[str, dict[str, int]]:
        return {
            name: {
                "messages": queue.message_count,
                "consumers": queue.consumer_count,
                "delivering": queue.delivering_count,
                "added": queue.messages_added,
                "acknowledged": queue.messages_acknowledged,
                "expired": queue.messages_expired,
                "killed": queue.messages_killed,
            }
            for name, queue in self.post_office.queues.items()
        }
