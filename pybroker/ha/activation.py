"""Activations: who loads the journal and opens acceptors, and when.

Theory of operation
-------------------
The ``ha-policy`` picks one activation (Artemis's Activation classes):

``primary-only`` (no HA)
    Take the primary lock on the journal directory when persistent (so two brokers can never
    open one journal), load, open acceptors, write 'L'. Stop writes 'P'.

``shared-store-primary``
    AMQ221006; open the lock files; write 'F' and wait for ``serverlock.1`` (AMQ221034/35) --
    a backup that took over holds it until it sees the 'F' and fails back; then increment the
    fencing epoch, load the journal, open acceptors, write 'L' (AMQ221007) and run the lock
    monitor. A graceful stop with ``failover-on-shutdown`` releases the lock without writing
    (the backup activates); without it, writes 'P' (the backup stays passive).

``shared-store-backup``
    Wait for ``serverlock.2`` (AMQ221032/33), announce AMQ221109, then wait -- blocking in the
    kernel, not polling -- for ``serverlock.1`` with the state 'L' (a primary died). Then
    increment the epoch, load the whole journal from the shared store, open acceptors
    (AMQ221010) and release ``serverlock.2`` for the next backup. With ``allow-failback`` a
    checker sees a restarting primary's 'F' within a second, logs AMQ221008, stops with
    failover semantics and, with ``restart-backup``, goes back to being a passive backup once
    the primary wrote 'L'.

Every activation fences its journal: the journal writer calls ``check_epoch`` before each group
commit, so an active broker whose epoch was overtaken (a backup activated after this one lost its
NFS lock) writes nothing more. A lost lock (monitor) shuts the broker down with AMQ222010.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pybroker.errors import LockLostError, LockTimeoutError

from .node_manager import NodeState

if TYPE_CHECKING:
    from pybroker.embedded import Broker

log = logging.getLogger("pybroker.server")

FAILBACK_CHECK_PERIOD_S = 1.0
RESTART_BACKUP_POLL_S = 0.25


class ActivationState(enum.Enum):
    CREATED = "created"
    WAITING = "waiting"  # for a lock (primary) or for the primary to fail (backup)
    ACTIVATING = "activating"
    ACTIVE = "active"
    STOPPING = "stopping"
    STOPPED = "stopped"


def _file_node_manager(broker: Broker) -> Any:
    from .file_lock import FileLockNodeManager

    configuration = broker.configuration
    directory = Path(configuration.node_manager_lock_directory or configuration.journal_directory)
    if configuration.create_journal_dir:
        directory.mkdir(parents=True, exist_ok=True)
    return FileLockNodeManager(
        directory,
        lock_acquisition_timeout_ms=configuration.journal.lock_acquisition_timeout_ms,
        lock_check_period_ms=getattr(configuration, "lock_check_period_ms", 2000) or 2000,
    )


def choose_activation(broker: Broker, *, node_manager: Any = None) -> Activation:
    """The activation for ``broker.configuration.ha_policy``."""
    policy = broker.configuration.ha_policy
    if policy.kind == "shared-store-primary":
        return SharedStorePrimaryActivation(broker, node_manager or _file_node_manager(broker))
    if policy.kind == "shared-store-backup":
        return SharedStoreBackupActivation(broker, node_manager or _file_node_manager(broker))
    if node_manager is None and broker.configuration.persistence_enabled:
        node_manager = _file_node_manager(broker)
    return PrimaryOnlyActivation(broker, node_manager)


class Activation:
    """Base: runs the server's phases for the node; subclasses decide when."""

    role = "primary"

    def __init__(self, broker: Broker, node_manager: Any) -> None:
        self.broker = broker
        self.node_manager = node_manager
        self.state = ActivationState.CREATED
        self._active = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.epoch: int | None = None
        self._lost_lock_callback = self._on_lost_lock
        self.activations = 0

    @property
    def timeout_ms(self) -> int:
        return self.broker.configuration.journal.lock_acquisition_timeout_ms

    async def wait_active(self) -> None:
        await self._active.wait()

    def failover_server_list(self) -> list[dict[str, Any]]:
        """Backup servers to announce in the AMQP Open frame (Artemis's failover-server-list)."""
        configuration = self.broker.configuration
        if configuration.ha_policy.kind == "primary-only" or not configuration.cluster_connections:
            return []
        cluster = configuration.cluster_connections[0]
        own = configuration.connectors.get(cluster.connector_ref)
        servers = []
        for name in cluster.static_connectors:
            connector = configuration.connectors.get(name)
            if connector is None or (own is not None and connector.url == own.url):
                continue
            ssl = str(connector.params.get("sslEnabled", "false")).lower() == "true"
            servers.append(
                {
                    "network-host": connector.host,
                    "hostname": connector.host,
                    "port": connector.port or 61616,
                    "scheme": "amqps" if ssl else "amqp",
                }
            )
        return servers

    # -- shared steps ------------------------------------------------------------------------
    def _fence(self) -> Any:
        node_manager = self.node_manager
        epoch = self.epoch
        if node_manager is None or epoch is None:
            return None
        check = node_manager.check_epoch

        def fence() -> None:
            check(epoch)

        return fence

    async def _activate_server(self) -> None:
        """Build and start the broker core, then open the acceptors."""
        broker = self.broker
        self.state = ActivationState.ACTIVATING
        server = broker.build_server(fence=self._fence(), epoch=self.epoch or 0)
        try:
            await server.open_storage()
            recovered = await server.load_state()
            broker.server_loaded(server)
            await server.activate()
            broker.build_acceptors()
            await broker.start_acceptors()
        except BaseException:
            with contextlib.suppress(Exception):
                await broker.stop_acceptors()
            with contextlib.suppress(Exception):
                await server.stop()
            raise
        self.activations += 1
        log.debug("activation loaded %d messages", len(recovered.messages))

    async def _deactivate_server(self) -> None:
        broker = self.broker
        await broker.stop_acceptors()
        if broker.server is not None:
            await broker.server.stop()

    async def _release(self, *, hand_over: bool | None, release_backup: bool = False) -> None:
        """Give the shared store back after the server stopped: without a state write when
        ``hand_over`` (a backup may activate), with 'P' when False (it must not), not at all
        when None (the lock is lost: it is someone else's). Then stop the node manager."""
        nm = self.node_manager
        if nm is None:
            return
        with contextlib.suppress(Exception):
            nm.remove_lost_lock_listener(self._lost_lock_callback)
        if hand_over is not None:
            with contextlib.suppress(Exception):
                if hand_over:
                    await nm.crash_primary()
                else:
                    await nm.pause_primary()
        if release_backup:
            with contextlib.suppress(Exception):
                await nm.release_backup()
        with contextlib.suppress(Exception):
            await nm.stop()
        self.state = ActivationState.STOPPED
        self._active.clear()

    def _banner(self) -> None:
        broker = self.broker
        node_id = None
        if self.node_manager is not None:
            with contextlib.suppress(Exception):
                node_id = self.node_manager.node_id
        ports = ", ".join(f"{name}:{port}" for name, port in broker.ports.items())
        log.info(
            "AMQ221001: pybroker Message Broker version %s [%s, nodeID=%s] started (acceptors %s)",
            _version(),
            broker.configuration.name,
            node_id,
            ports or "none",
        )

    def _on_lost_lock(self, reason: str) -> None:
        log.error(
            "AMQ222010: Critical IO Error, shutting down the server. file=%s, message=Lost NodeManager lock: %s",
            getattr(self.node_manager, "lock_directory", "?"),
            reason,
        )
        # stop without touching the locks (they are someone else's now)
        self.broker.request_stop(exit_code=1, failover=True, lost_lock=True)

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self, *, failover: bool | None = None, lost_lock: bool = False) -> None:
        raise NotImplementedError


def _version() -> str:
    from pybroker.version import VERSION

    return VERSION


class PrimaryOnlyActivation(Activation):
    """No HA: one broker on its journal."""

    async def start(self) -> None:
        nm = self.node_manager
        if nm is not None:
            await nm.start()
            await nm.start_primary(self.timeout_ms)
            self.epoch = await nm.increment_epoch()
        await self._activate_server()
        if nm is not None:
            await nm.activation_successful()
            nm.on_lost_lock(self._lost_lock_callback)
        self.state = ActivationState.ACTIVE
        self._active.set()
        log.info("AMQ221007: Server is now active")
        self._banner()

    async def stop(self, *, failover: bool | None = None, lost_lock: bool = False) -> None:
        if self.state in (ActivationState.STOPPING, ActivationState.STOPPED):
            return
        self.state = ActivationState.STOPPING
        try:
            await self._deactivate_server()
        finally:
            await self._release(hand_over=None if lost_lock else False)
            self.state = ActivationState.STOPPED
        log.info(
            "AMQ221002: pybroker Message Broker version %s [%s] stopped",
            _version(),
            self.broker.configuration.name,
        )


class SharedStorePrimaryActivation(Activation):
    """The primary of a shared-store pair."""

    async def start(self) -> None:
        nm = self.node_manager
        log.info("AMQ221006: Waiting to obtain primary lock")
        await nm.start()
        if nm.is_backup_active():
            log.info(
                "AMQ221109-primary: a backup is active on this shared store (node %s); "
                "this primary asks it to fail back",
                nm.node_id,
            )
        self.state = ActivationState.WAITING
        try:
            await nm.start_primary(self.timeout_ms)
        except LockTimeoutError:
            log.error(
                "AMQ224000: Failure in initialisation: timed out waiting for the primary lock"
            )
            with contextlib.suppress(Exception):
                await nm.stop()
            raise
        self.epoch = await nm.increment_epoch()
        try:
            await self._activate_server()
        except BaseException:
            # a zombie that keeps the lock would block the backup forever (ARTEMIS-2862)
            with contextlib.suppress(Exception):
                await nm.crash_primary()
            with contextlib.suppress(Exception):
                await nm.stop()
            raise
        await nm.activation_successful()
        nm.on_lost_lock(self._lost_lock_callback)
        self.state = ActivationState.ACTIVE
        self._active.set()
        log.info("AMQ221007: Server is now active")
        self._banner()

    async def stop(self, *, failover: bool | None = None, lost_lock: bool = False) -> None:
        if self.state in (ActivationState.STOPPING, ActivationState.STOPPED):
            return
        previous = self.state
        self.state = ActivationState.STOPPING
        if failover is None:
            failover = self.broker.configuration.ha_policy.failover_on_shutdown
        try:
            if previous is not ActivationState.WAITING:
                await self._deactivate_server()
        finally:
            await self._release(hand_over=None if lost_lock else failover)
        log.info(
            "AMQ221002: pybroker Message Broker version %s [%s] stopped%s",
            _version(),
            self.broker.configuration.name,
            " (failover to the backup)" if failover else "",
        )


class SharedStoreBackupActivation(Activation):
    """The backup of a shared-store pair (passive until the primary fails)."""

    role = "backup"

    def __init__(self, broker: Broker, node_manager: Any) -> None:
        super().__init__(broker, node_manager)
        self._loop_task: asyncio.Task[None] | None = None
        self._failback_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.passive = asyncio.Event()
        self.failbacks = 0

    async def start(self) -> None:
        self.broker.preload()
        await self._become_backup()
        self._loop_task = asyncio.get_running_loop().create_task(
            self._run(), name="backup-activation"
        )

    async def _become_backup(self) -> None:
        nm = self.node_manager
        await nm.start()
        self.state = ActivationState.WAITING
        await nm.start_backup(self.timeout_ms)  # logs AMQ221032 and AMQ221033
        log.info(
            "AMQ221109: pybroker Backup Server version %s [%s] started; waiting for primary to fail before activating",
            _version(),
            nm.node_id,
        )
        self.passive.set()

    async def _run(self) -> None:
        nm = self.node_manager
        while not self._stopping:
            try:
                await nm.await_primary(self.timeout_ms)
            except LockTimeoutError:
                log.error(
                    "AMQ224000: Failure in initialisation: timed out waiting for the primary to fail"
                )
                self.broker.request_stop(exit_code=3)
                return
            self.passive.clear()
            self.epoch = await nm.increment_epoch()
            try:
                await self._activate_server()
            except Exception:
                log.exception("AMQ224000: Failure in initialisation (backup activation)")
                with contextlib.suppress(Exception):
                    await nm.crash_primary()
                self.broker.request_stop(exit_code=1)
                return
            await nm.release_backup()
            await nm.activation_successful()
            nm.on_lost_lock(self._lost_lock_callback)
            self.state = ActivationState.ACTIVE
            self._active.set()
            log.info("AMQ221010: Backup Server is now active")
            self._banner()
            policy = self.broker.configuration.ha_policy
            if not policy.allow_failback:
                return
            if not await self._wait_failback_request():
                return
            # the primary wants to come back: stop with failover semantics ('F' stays)
            log.info("AMQ221008: primary server wants to restart, restarting server in backup")
            self.failbacks += 1
            self._active.clear()
            nm.remove_lost_lock_listener(self._lost_lock_callback)
            self.state = ActivationState.STOPPING
            await self._deactivate_server()
            await nm.crash_primary()
            if not policy.restart_backup:
                with contextlib.suppress(Exception):
                    await nm.stop()
                self.state = ActivationState.STOPPED
                self.broker.request_stop()
                return
            # wait until the primary is active again, then queue up as a passive backup
            await nm.wait_active_state(-1)
            await nm.stop()
            self.broker.server = None
            await self._become_backup()

    async def _wait_failback_request(self) -> bool:
        """Poll the state byte every second for a restarting primary's 'F'."""
        nm = self.node_manager
        while not self._stopping:
            await asyncio.sleep(FAILBACK_CHECK_PERIOD_S)
            if self._stopping or self.state is not ActivationState.ACTIVE:
                return False
            try:
                if await nm.state() is NodeState.FAILING_BACK:
                    return True
            except Exception as error:  # noqa: BLE001 - the monitor reports real losses
                log.debug("failback check could not read the state: %s", error)
        return False

    async def stop(self, *, failover: bool | None = None, lost_lock: bool = False) -> None:
        if self._stopping:
            return
        self._stopping = True
        was_active = (
            self.state is ActivationState.ACTIVE or self.state is ActivationState.ACTIVATING
        )
        if failover is None:
            failover = self.broker.configuration.ha_policy.failover_on_shutdown
        task = self._loop_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.state = ActivationState.STOPPING
        try:
            if was_active or (self.broker.server is not None and self.broker.server.active):
                await self._deactivate_server()
        finally:
            await self._release(hand_over=failover if was_active and not lost_lock else None, release_backup=True)
        log.info(
            "AMQ221002: pybroker Backup Server version %s [%s] stopped",
            _version(),
            self.broker.configuration.name,
        )


__all__ = [
    "Activation",
    "ActivationState",
    "LockLostError",
    "PrimaryOnlyActivation",
    "SharedStoreBackupActivation",
    "SharedStorePrimaryActivation",
    "choose_activation",
]
