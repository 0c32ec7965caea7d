"""Who is active on a shared store: the node manager of shared-store HA.

Theory of operation
-------------------
A primary and its backups share one directory (reference 1.2). The *state byte* at offset 0
of ``server.lock`` tells a waiting backup what the last active broker did (reference 1.3):

====  =================  ==================================================================
Byte  NodeState          Written when
====  =================  ==================================================================
'0'   FIRST_TIME_START   file creation: no primary has run yet, a backup keeps waiting
'N'   NOT_STARTED        never written; an empty file reads as 'N'
'F'   FAILING_BACK       by a primary at the start of ``start_primary``, before it waits
'L'   ACTIVE             by a primary once activated (a backup never writes it)
'P'   PAUSED             by the active broker on a graceful stop without failover
====  =================  ==================================================================

``serverlock.1`` is held by the active broker, ``serverlock.2`` by the one backup in line. A
crash writes nothing, so the state stays 'L' and the OS drops the crashed process's locks:
a backup that obtains ``serverlock.1`` and reads 'L' knows the primary died and activates;
'P' (paused) or 'F' (a primary restarting) make it release the lock and keep waiting.

While active, a *lock monitor* re-checks every ``lock_check_period_ms`` that this broker
still holds ``serverlock.1`` (reference 1.8): the OS still reports the lock, ``server.lock``
exists, the state can be read, ``server.lock`` was not modified by someone else while the
state is 'L' (a backup touches its mtime when it takes over: ARTEMIS-4143), and the fencing
epoch on the store is still ours (DESIGN.md §4). Any failure notifies the lost-lock listeners
once; the broker then shuts down.

This module holds the algorithm (:class:`SharedStoreNodeManager`), written once against a small
store backend, and the in-memory store; ``file_lock.py`` holds the shared-directory backend.
The local lifecycle of one manager is the table ``_TRANSITIONS`` below.

Where pybroker differs from Artemis (on purpose)
-------------------------------------------------
* Lock waits block in the kernel instead of polling every 500 ms (failover within ms).
* The sleeps while the state is '0'/'N'/'P'/'F' default to 500 ms, not 2 s
  (``state_poll_interval_ms``): they are not on the crash-failover path, but they bound how
  soon a backup notices a primary that restarted after a pause and then crashed.
* A backup that activated also runs the lock monitor (Artemis runs it on the primary only).
* The monitor also counts as lost a deleted or replaced ``serverlock.1``, a check that does
  not finish within ``lock_check_timeout_ms`` (a hung NFS mount), and a changed epoch.
* ``pause_primary`` writes 'P' only while holding ``serverlock.1``: a broker that never
  became active must not tell the backups that the active broker paused.
* The node id is created under the state lock, so a primary and a backup starting together
  on an empty directory agree on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from pybroker.errors import HAError, LockLostError, LockTimeoutError

logger = logging.getLogger("pybroker.ha")

_T = TypeVar("_T")


class NodeState(enum.Enum):
    """The state byte at offset 0 of ``server.lock``."""

    FIRST_TIME_START = "0"
    NOT_STARTED = "N"
    FAILING_BACK = "F"
    ACTIVE = "L"
    PAUSED = "P"

    @classmethod
    def from_byte(cls, value: int | None, where: str) -> NodeState:
        """The state for a byte read from the store (None = empty file = NOT_STARTED)."""
        if value is None:
            return cls.NOT_STARTED
        try:
            return cls(chr(value))
        except ValueError:
            raise HAError(f"{where} offset 0: unknown state byte 0x{value:02x}") from None


class LockName(enum.Enum):
    """The two long-held locks, by file name."""

    PRIMARY = "serverlock.1"
    BACKUP = "serverlock.2"


LostLockCallback = Callable[[str], None]


@runtime_checkable
class NodeManager(Protocol):
    """The seam between activations and the shared store (DESIGN.md §2)."""

    @property
    def node_id(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def start_primary(self, timeout_ms: int = -1) -> None: ...

    async def activation_successful(self) -> None: ...

    async def start_backup(self, timeout_ms: int = -1) -> None: ...

    async def await_primary(self, timeout_ms: int = -1) -> None: ...

    async def pause_primary(self) -> None: ...

    async def crash_primary(self) -> None: ...

    async def release_backup(self) -> None: ...

    def is_backup_active(self) -> bool: ...

    def is_primary_locked(self) -> bool: ...

    async def state(self) -> NodeState: ...

    async def is_awaiting_failback(self) -> bool: ...

    async def wait_active_state(self, timeout_ms: int = -1) -> None: ...

    def on_lost_lock(self, callback: LostLockCallback) -> None: ...

    def remove_lost_lock_listener(self, callback: LostLockCallback) -> None: ...

    async def increment_epoch(self) -> int: ...

    def read_epoch(self) -> int: ...

    def check_epoch(self, my_epoch: int) -> None: ...


class StoreBackend(Protocol):
    """What :class:`SharedStoreNodeManager` needs from a store (file or memory).

    One backend instance is one broker's view of the store (its descriptors and locks). When
    ``blocking`` is true the synchronous methods do disk I/O and are called from threads.
    """

    blocking: bool

    @property
    def description(self) -> str: ...

    def open(self) -> str: ...

    def close(self) -> None: ...

    def read_state(self) -> int | None: ...

    def write_state(self, value: int) -> int: ...

    def read_node_id(self) -> str: ...

    def try_lock(self, name: LockName) -> bool: ...

    async def lock(self, name: LockName, timeout_s: float | None) -> None: ...

    def unlock(self, name: LockName) -> None: ...

    def holds(self, name: LockName) -> bool: ...

    def check_held(self, name: LockName) -> str | None: ...

    def is_locked(self, name: LockName) -> bool: ...

    def server_lock_mtime(self) -> int | None: ...

    def touch_server_lock(self) -> int: ...

    def read_epoch(self) -> int: ...

    def write_epoch(self, epoch: int) -> None: ...


# --------------------------------------------------------------------------------------------
# The local lifecycle of one node manager


class _Phase(enum.Enum):
    STOPPED = "stopped"
    IDLE = "idle"  # started, holds no lock
    PRIMARY_WAITING = "primary-waiting"  # 'F' written, waiting for serverlock.1
    PRIMARY_LOCKED = "primary-locked"  # holds serverlock.1, activation running
    ACTIVE = "active"  # holds serverlock.1, activated, monitor running
    BACKUP_WAITING = "backup-waiting"  # waiting for serverlock.2
    BACKUP = "backup"  # holds serverlock.2: the passive backup in line
    BACKUP_AWAITING = "backup-awaiting"  # holds serverlock.2, await_primary running
    TAKEN_OVER = "taken-over"  # holds serverlock.2 and serverlock.1, activation running
    TAKEN_OVER_ACTIVE = "taken-over-active"  # same, activated, monitor running
    TAKEN_OVER_RELEASED = "taken-over-released"  # holds serverlock.1 only, activation running


_P = _Phase
# (phase, event) -> next phase. Anything missing is an illegal call. "locked" and
# "wait_failed" end a wait; "stop" is legal everywhere (added below).
_TRANSITIONS: dict[tuple[_Phase, str], _Phase] = {
    (_P.STOPPED, "start"): _P.IDLE,
    # primary path
    (_P.IDLE, "start_primary"): _P.PRIMARY_WAITING,
    (_P.PRIMARY_WAITING, "locked"): _P.PRIMARY_LOCKED,
    (_P.PRIMARY_WAITING, "wait_failed"): _P.IDLE,
    (_P.PRIMARY_LOCKED, "activation_successful"): _P.ACTIVE,
    (_P.PRIMARY_LOCKED, "pause_primary"): _P.IDLE,
    (_P.PRIMARY_LOCKED, "crash_primary"): _P.IDLE,
    (_P.ACTIVE, "pause_primary"): _P.IDLE,
    (_P.ACTIVE, "crash_primary"): _P.IDLE,
    (_P.IDLE, "pause_primary"): _P.IDLE,  # holds nothing: writes nothing
    (_P.IDLE, "crash_primary"): _P.IDLE,
    # backup path
    (_P.IDLE, "start_backup"): _P.BACKUP_WAITING,
    (_P.BACKUP_WAITING, "locked"): _P.BACKUP,
    (_P.BACKUP_WAITING, "wait_failed"): _P.IDLE,
    (_P.BACKUP, "await_primary"): _P.BACKUP_AWAITING,
    (_P.BACKUP_AWAITING, "locked"): _P.TAKEN_OVER,
    (_P.BACKUP_AWAITING, "wait_failed"): _P.BACKUP,
    (_P.BACKUP, "release_backup"): _P.IDLE,
    (_P.TAKEN_OVER, "activation_successful"): _P.TAKEN_OVER_ACTIVE,
    (_P.TAKEN_OVER, "release_backup"): _P.TAKEN_OVER_RELEASED,
    (_P.TAKEN_OVER_ACTIVE, "release_backup"): _P.ACTIVE,
    (_P.TAKEN_OVER_RELEASED, "activation_successful"): _P.ACTIVE,
    (_P.TAKEN_OVER_RELEASED, "pause_primary"): _P.IDLE,
    (_P.TAKEN_OVER_RELEASED, "crash_primary"): _P.IDLE,
    (_P.TAKEN_OVER_RELEASED, "release_backup"): _P.TAKEN_OVER_RELEASED,
    (_P.TAKEN_OVER, "pause_primary"): _P.BACKUP,
    (_P.TAKEN_OVER, "crash_primary"): _P.BACKUP,
    (_P.TAKEN_OVER_ACTIVE, "pause_primary"): _P.BACKUP,
    (_P.TAKEN_OVER_ACTIVE, "crash_primary"): _P.BACKUP,
    (_P.IDLE, "release_backup"): _P.IDLE,  # nothing to release
    (_P.PRIMARY_LOCKED, "release_backup"): _P.PRIMARY_LOCKED,
    (_P.ACTIVE, "release_backup"): _P.ACTIVE,
}
_TRANSITIONS.update({(phase, "stop"): _P.STOPPED for phase in _Phase})

_HOLDS_PRIMARY = frozenset(
    {_P.PRIMARY_LOCKED, _P.ACTIVE, _P.TAKEN_OVER, _P.TAKEN_OVER_ACTIVE, _P.TAKEN_OVER_RELEASED}
)


def _seconds(milliseconds: int) -> float | None:
    """Milliseconds from config to seconds; -1 (any negative) means forever (None)."""
    return None if milliseconds < 0 else milliseconds / 1000


def _timeout_text(timeout_ms: int) -> str:
    return "indefinitely" if timeout_ms < 0 else f"{timeout_ms} milliseconds"


class SharedStoreNodeManager:
    """The node-manager algorithm (Artemis's FileLockNodeManager) over a store backend.

    ``lock_check_period_ms`` (default 2000) is the lock monitor's period (first check after
    one period). ``lock_check_timeout_ms`` (default 10000) bounds one check: a store that
    does not answer counts as a lost lock. ``state_poll_interval_ms`` (default 500) is the
    pause of a backup while the state is '0'/'N' and after it saw 'P'/'F' (Artemis: 2000).
    Long lock waits take ``timeout_ms`` per call (``journal-lock-acquisition-timeout``,
    -1 = forever). All methods must be called from one event loop.
    """

    def __init__(
        self,
        backend: StoreBackend,
        *,
        lock_check_period_ms: int = 2000,
        lock_check_timeout_ms: int = 10_000,
        state_poll_interval_ms: int = 500,
    ) -> None:
        if lock_check_period_ms <= 0:
            raise ValueError(f"lock_check_period_ms must be > 0, not {lock_check_period_ms}")
        self._backend = backend
        self._lock_check_period = lock_check_period_ms / 1000
        self._lock_check_timeout = max(lock_check_timeout_ms, 1) / 1000
        self._state_poll_interval = max(state_poll_interval_ms, 0) / 1000
        self._phase = _Phase.STOPPED
        self._node_id: str | None = None
        self._last_mtime = 0  # server.lock mtime after this broker's last write or touch
        self._epoch: int | None = None
        self._listeners: list[LostLockCallback] = []
        self._monitor_task: asyncio.Task[None] | None = None
        self._waits: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def _transition(self, event: str) -> None:
        """Move the local phase along ``_TRANSITIONS``; an illegal event raises HAError."""
        following = _TRANSITIONS.get((self._phase, event))
        if following is None:
            raise HAError(
                f"node manager on {self._backend.description}: {event} is not allowed "
                f"in phase {self._phase.value}"
            )
        logger.debug("node manager %s: %s -> %s", event, self._phase.value, following.value)
        self._phase = following

    def _leave_wait(self, waiting: _Phase, error: BaseException) -> None:
        """End a failed wait; if stop() ended it, say so whatever the step that noticed."""
        if self._phase is waiting:
            self._transition("wait_failed")
        elif isinstance(error, Exception) and self._stopped.is_set():
            raise HAError(f"node manager on {self._backend.description}: stopped") from error

    @property
    def node_id(self) -> str:
        """The node id (UUID string) shared by the primary/backup pair; set by :meth:`start`."""
        if self._node_id is None:
            raise HAError(f"node manager on {self._backend.description}: not started")
        return self._node_id

    @property
    def epoch(self) -> int | None:
        """The epoch this broker activated with (set by :meth:`increment_epoch`)."""
        return self._epoch

    @property
    def phase(self) -> str:
        """The local phase (for logs and tests): stopped, idle, active, backup, ..."""
        return self._phase.value

    async def start(self) -> None:
        """Open (creating if needed) the lock files and read or create the node id."""
        if self._phase is not _Phase.STOPPED:
            return
        self._node_id = await self._io(self._backend.open)
        self._stopped = asyncio.Event()
        self._transition("start")

    async def stop(self) -> None:
        """Stop the monitor, end any wait, and close the files: the locks go, no state write."""
        if self._phase is _Phase.STOPPED:
            return
        self._transition("stop")
        self._stopped.set()
        for task in list(self._waits):
            task.cancel()
        await self._stop_monitor()
        await self._io(self._backend.close)

    # -- primary ---------------------------------------------------------------------------

    async def start_primary(self, timeout_ms: int = -1) -> None:
        """Write 'F' and wait for ``serverlock.1`` (AMQ221034, then AMQ221035).

        Raises :class:`LockTimeoutError` after ``timeout_ms`` (-1 = forever).
        """
        self._transition("start_primary")
        try:
            self._last_mtime = await self._state_io(self._backend.write_state, ord("F"))
            logger.info("AMQ221034: Waiting %s to obtain primary lock", _timeout_text(timeout_ms))
            await self._wait_for_lock(LockName.PRIMARY, timeout_ms)
        except BaseException as error:
            self._leave_wait(_Phase.PRIMARY_WAITING, error)
            raise
        self._transition("locked")
        logger.info("AMQ221035: Primary Server Obtained primary lock")

    async def activation_successful(self) -> None:
        """The activation completed: write 'L' (primary path only) and start the lock monitor.

        On the backup path the state is already 'L' and is not rewritten: a restarting
        primary may have written 'F' meanwhile, which the failback checker must see.
        """
        if (self._phase, "activation_successful") not in _TRANSITIONS:
            self._transition("activation_successful")  # raises, naming the phase
        if self._phase is _Phase.PRIMARY_LOCKED:
            self._last_mtime = await self._state_io(self._backend.write_state, ord("L"))
        self._transition("activation_successful")
        self._start_monitor()

    async def pause_primary(self) -> None:
        """Graceful stop without failover: stop the monitor, write 'P', release serverlock.1."""
        holding = self._phase in _HOLDS_PRIMARY
        self._transition("pause_primary")
        await self._stop_monitor()
        if not holding:
            return
        try:
            await self._state_io(self._backend.write_state, ord("P"))
        finally:  # even if the write failed: never keep a lock nobody uses (Artemis #5)
            await self._unlock(LockName.PRIMARY)

    async def crash_primary(self) -> None:
        """Stop with failover: stop the monitor and release serverlock.1, writing nothing."""
        self._transition("crash_primary")
        await self._stop_monitor()
        await self._unlock(LockName.PRIMARY)

    # -- backup ----------------------------------------------------------------------------

    async def start_backup(self, timeout_ms: int = -1) -> None:
        """Wait for ``serverlock.2`` (AMQ221032, then AMQ221033) and read the node id."""
        self._transition("start_backup")
        logger.info("AMQ221032: Waiting to become backup node")
        try:
            await self._wait_for_lock(LockName.BACKUP, timeout_ms)
        except BaseException as error:
            self._leave_wait(_Phase.BACKUP_WAITING, error)
            raise
        self._transition("locked")
        logger.info("AMQ221033: ** got backup lock")
        try:
            self._node_id = await self._state_io(self._backend.read_node_id)
        except BaseException:
            if self._phase is _Phase.BACKUP:
                self._transition("release_backup")
                await self._unlock(LockName.BACKUP)
            raise

    async def await_primary(self, timeout_ms: int = -1) -> None:
        """Wait until the active broker is gone, then hold ``serverlock.1`` (reference 1.5).

        Sleeps while the state is '0'/'N'; then blocks on ``serverlock.1`` (each wait bounded
        by ``timeout_ms``, -1 = forever) and re-reads the state under the state lock: 'P' or
        'F' release it and wait again, 'L' touches ``server.lock``'s mtime and returns.
        """
        self._transition("await_primary")
        try:
            await self._await_primary_loop(timeout_ms)
        except BaseException as error:
            self._leave_wait(_Phase.BACKUP_AWAITING, error)
            raise
        self._transition("locked")

    async def _await_primary_loop(self, timeout_ms: int) -> None:
        startup = (NodeState.FIRST_TIME_START, NodeState.NOT_STARTED)
        while True:
            self._raise_if_stopped()
            state = await self.state()
            while state in startup:
                logger.debug("awaiting primary node startup state = '%s'", state.value)
                await self._pause()
                state = await self.state()
            await self._wait_for_lock(LockName.PRIMARY, timeout_ms)
            try:
                self._raise_if_stopped()
                state = await self.state()
                if state is NodeState.ACTIVE:
                    # The primary died. Touch server.lock so a primary that silently lost its
                    # lock (NFS) sees a newer mtime with state 'L' and stops (ARTEMIS-4143).
                    self._last_mtime = await self._state_io(self._backend.touch_server_lock)
                    logger.debug("acquired primary node lock state = 'L'; touched server.lock")
                    return
            except BaseException:
                self._backend.unlock(LockName.PRIMARY)  # may be cancelled: no await here
                raise
            await self._unlock(LockName.PRIMARY)
            if state is NodeState.PAUSED:
                logger.debug("awaiting primary node restarting")
            elif state is NodeState.FAILING_BACK:
                logger.debug("awaiting primary node failing back")
            await self._pause()

    async def release_backup(self) -> None:
        """Release ``serverlock.2`` so the next backup can queue (no-op if not held)."""
        self._transition("release_backup")
        await self._unlock(LockName.BACKUP)

    # -- queries ---------------------------------------------------------------------------

    def is_backup_active(self) -> bool:
        """Whether some broker (this one included) holds ``serverlock.1``. Takes no lock."""
        self._require_started()
        return self._backend.is_locked(LockName.PRIMARY)

    def is_primary_locked(self) -> bool:
        """Whether this manager holds ``serverlock.1``."""
        return self._phase in _HOLDS_PRIMARY

    async def state(self) -> NodeState:
        """The state byte, read under the state lock."""
        self._require_started()
        value = await self._state_io(self._backend.read_state)
        return NodeState.from_byte(value, f"{self._backend.description}/server.lock")

    async def is_awaiting_failback(self) -> bool:
        """Whether the state is 'F': a primary restarted and waits for serverlock.1."""
        return await self.state() is NodeState.FAILING_BACK

    async def wait_active_state(self, timeout_ms: int = -1) -> None:
        """Wait until the state is 'L' (a backup that failed back waits for the primary).

        Polls every ``state_poll_interval_ms`` (Artemis: 2 s); HAError after ``timeout_ms``.
        """
        try:
            async with asyncio.timeout(_seconds(timeout_ms)):
                while await self.state() is not NodeState.ACTIVE:
                    await self._pause()
        except TimeoutError:
            raise HAError(
                f"{self._backend.description}/server.lock: state not 'L' within {timeout_ms} ms"
            ) from None

    # -- lost lock -------------------------------------------------------------------------

    def on_lost_lock(self, callback: LostLockCallback) -> None:
        """Call ``callback(reason)`` on the event loop when the monitor finds the lock lost."""
        self._listeners.append(callback)

    def remove_lost_lock_listener(self, callback: LostLockCallback) -> None:
        """Stop calling ``callback`` (no-op if it was not registered)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def _notify_lost_lock(self, reason: str) -> None:
        if self._phase not in _HOLDS_PRIMARY:
            return  # as Artemis: only a broker holding serverlock.1 can lose it
        for callback in list(self._listeners):
            try:
                callback(reason)
            except Exception:
                logger.warning("On notify lost lock", exc_info=True)

    def _start_monitor(self) -> None:
        if self._monitor_task is None:
            logger.debug("Starting the lock monitor")
            self._monitor_task = asyncio.get_running_loop().create_task(
                self._monitor_loop(), name=f"pybroker-lock-monitor:{self._backend.description}"
            )

    async def _stop_monitor(self) -> None:
        task, self._monitor_task = self._monitor_task, None
        if task is None or task is asyncio.current_task():
            return
        logger.debug("Stopping the lock monitor")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lock_check_period)
            try:
                async with asyncio.timeout(self._lock_check_timeout):
                    reason = await self._io(self._check_lock)
            except TimeoutError:
                reason = (
                    f"the lock check on {self._backend.description} did not finish within "
                    f"{round(self._lock_check_timeout * 1000)} ms (shared store not responding)"
                )
            except Exception as error:  # task boundary: any failure means the lock is in doubt
                logger.error("lock check failed: %s", error, exc_info=True)
                reason = f"lock check failed: {error}"
            if reason is not None:
                logger.warning("Lost the lock according to the monitor, notifying listeners")
                logger.debug("lost lock: %s", reason)
                self._monitor_task = None
                self._notify_lost_lock(reason)
                return

    def _check_lock(self) -> str | None:
        """One monitor check (runs in a worker thread for the file store): None if all is well."""
        backend = self._backend
        where = f"{backend.description}/server.lock"
        reason = backend.check_held(LockName.PRIMARY)
        if reason is not None:
            return reason
        mtime = backend.server_lock_mtime()
        if mtime is None:
            return f"{where} does not exist any more"
        try:
            state = NodeState.from_byte(backend.read_state(), where)
        except (OSError, HAError) as error:
            return f"cannot read the state byte of {where}: {error}"
        if mtime > self._last_mtime and state is NodeState.ACTIVE:
            return (
                f"{where} was modified after this broker's last write and the state is 'L': "
                "another broker has taken over"
            )
        if self._epoch is not None:
            try:
                on_store = backend.read_epoch()
            except (OSError, HAError) as error:
                return f"cannot read the epoch: {error}"
            if on_store != self._epoch:
                return self._epoch_message(on_store, self._epoch)
        return None

    # -- fencing epoch ---------------------------------------------------------------------

    async def increment_epoch(self) -> int:
        """Store epoch+1 crash-atomically and adopt it; call on each activation.

        Must hold ``serverlock.1`` (only the active broker writes the epoch).
        """
        if self._phase not in _HOLDS_PRIMARY:
            raise HAError(
                f"node manager on {self._backend.description}: increment_epoch needs "
                f"serverlock.1 (phase {self._phase.value})"
            )
        current = await self._state_io(self._backend.read_epoch)
        await self._state_io(self._backend.write_epoch, current + 1)
        self._epoch = current + 1
        return current + 1

    def read_epoch(self) -> int:
        """The epoch on the store (0 if none yet). Synchronous and cheap: any thread may call it."""
        return self._backend.read_epoch()

    def check_epoch(self, my_epoch: int) -> None:
        """Raise :class:`LockLostError` if the store's epoch is not ``my_epoch`` (fenced).

        Normally the store's epoch is newer: another broker activated since. Any other value
        (an older one: the file was deleted or rewritten; unreadable) also fences, since this
        broker can no longer prove it is the active one. Synchronous, for the journal writer.
        """
        try:
            on_store = self._backend.read_epoch()
        except (OSError, HAError) as error:
            raise LockLostError(
                f"cannot read the epoch on {self._backend.description}: {error}"
            ) from error
        if on_store != my_epoch:
            raise LockLostError(self._epoch_message(on_store, my_epoch))

    def _epoch_message(self, on_store: int, mine: int) -> str:
        where = self._backend.description
        if on_store > mine:
            return (
                f"{where}: epoch on the store is {on_store}, this broker activated with {mine}: "
                "another broker has activated since (fenced)"
            )
        return (
            f"{where}: epoch on the store is {on_store}, older than this broker's {mine} "
            "(epoch file deleted or rewritten): fenced"
        )

    # -- helpers ---------------------------------------------------------------------------

    def _require_started(self) -> None:
        if self._phase is _Phase.STOPPED:
            raise HAError(f"node manager on {self._backend.description}: not started")

    async def _io(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run a backend call; a blocking one in a daemon thread (a hung NFS call must not
        hang the event loop, nor interpreter exit as an executor thread would)."""
        if not self._backend.blocking:
            return function(*args)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def run() -> None:
            try:
                result, error = function(*args), None
            except BaseException as caught:  # handed to the awaiting coroutine
                result, error = None, caught
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name="pybroker-node-manager-io", daemon=True).start()
        return await future

    async def _state_io(self, function: Callable[..., _T], *args: Any) -> _T:
        """Like :meth:`_io`, with an OSError turned into an HAError naming the store."""
        try:
            return await self._io(function, *args)
        except OSError as error:
            raise HAError(f"{self._backend.description}: {error}") from error

    async def _unlock(self, name: LockName) -> None:
        """Release a lock off the event loop (on NFS an unlock is a round trip)."""
        await self._io(self._backend.unlock, name)

    def _raise_if_stopped(self) -> None:
        if self._stopped.is_set():
            raise HAError(f"node manager on {self._backend.description}: stopped")

    async def _pause(self) -> None:
        """Sleep ``state_poll_interval_ms``; HAError at once if the manager is stopped."""
        stopped = self._stopped
        if not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._state_poll_interval):
                    await stopped.wait()
        self._raise_if_stopped()

    async def _wait_for_lock(self, name: LockName, timeout_ms: int) -> None:
        """Wait for a lock in a task that :meth:`stop` can cancel."""
        self._raise_if_stopped()
        task = asyncio.ensure_future(self._backend.lock(name, _seconds(timeout_ms)))
        task.add_done_callback(_retrieve)
        self._waits.add(task)
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # our caller was cancelled
            if task.done() and not task.cancelled() and task.exception() is None:
                self._backend.unlock(name)  # granted just now: nobody wants it
            task.cancel()  # the wait abandons itself (and drops a lock granted meanwhile)
            raise
        finally:
            self._waits.discard(task)
        if task.cancelled():
            raise HAError(
                f"{self._backend.description}/{name.value}: the node manager was stopped "
                "while waiting for the lock"
            )
        task.result()


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # mark retrieved; the waiter reports it


# --------------------------------------------------------------------------------------------
# The in-memory store


class _MemoryFile:
    """One file of the in-memory store: content, mtime (a logical clock), lock owner."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.content = bytearray()
        self.mtime = 0
        self.owner: object | None = None
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


class InMemorySharedStore:
    """A shared directory in memory: several :class:`InMemoryNodeManager` share one.

    Same semantics as the file store (state byte, node id, serverlock.1/.2, mtime, epoch),
    with helpers that play the part of another broker or of a failing file system.
    mtimes are a logical clock, so every write or touch is strictly newer.
    """

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self._files: dict[str, _MemoryFile] = {}
        self._clock = 0
        self._epoch = 0
        #: Fault injection: when true, reading or writing the state or the epoch raises EIO.
        self.fail_io = False

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _open(self, name: str) -> _MemoryFile:
        with self._mutex:
            file = self._files.get(name)
            if file is None:
                file = self._files[name] = _MemoryFile(name)
                file.mtime = self._tick()
            return file

    def _check_io(self) -> None:
        if self.fail_io:
            raise OSError(errno.EIO, "Input/output error (injected by InMemorySharedStore)")

    # -- inspection and fault injection (tests) --------------------------------------------

    def state(self) -> str | None:
        """The state byte as a character (None: no server.lock or an empty one)."""
        with self._mutex:
            file = self._files.get("server.lock")
            return chr(file.content[0]) if file is not None and file.content else None

    def node_id(self) -> str | None:
        """The node id stored in server.lock, if any."""
        with self._mutex:
            file = self._files.get("server.lock")
            if file is None or len(file.content) < 19:
                return None
            return str(uuid.UUID(bytes=bytes(file.content[3:19])))

    def server_lock_mtime(self) -> int | None:
        """server.lock's mtime on the logical clock (None: no server.lock)."""
        with self._mutex:
            file = self._files.get("server.lock")
            return None if file is None else file.mtime

    def is_locked(self, name: LockName) -> bool:
        """Whether anybody holds the lock."""
        with self._mutex:
            file = self._files.get(name.value)
            return file is not None and file.owner is not None

    @property
    def epoch(self) -> int:
        """The stored epoch."""
        with self._mutex:
            return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Overwrite the epoch (as another broker's activation would)."""
        with self._mutex:
            self._epoch = epoch

    def write_state(self, state: str) -> None:
        """Write the state byte as another broker would."""
        with self._mutex:
            file = self._open("server.lock")
            file.content[0:1] = state.encode("ascii")
            file.mtime = self._tick()

    def touch_server_lock(self) -> None:
        """Set server.lock's mtime to now, as a backup taking over does."""
        with self._mutex:
            self._open("server.lock").mtime = self._tick()

    def delete_server_lock(self) -> None:
        """Unlink server.lock (managers that opened it keep their now-nameless file)."""
        with self._mutex:
            self._files.pop("server.lock", None)

    def steal_lock(self, name: LockName) -> None:
        """The holder loses the lock without noticing, as with an NFS lock lost by a client."""
        with self._mutex:
            file = self._files.get(name.value)
            if file is not None:
                file.owner = None
                _wake(file)


def _wake(file: _MemoryFile) -> None:
    waiters, file.waiters = file.waiters, []
    for loop, future in waiters:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_none, future)


def _settle_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _MemoryBackend:
    """One broker's view of an :class:`InMemorySharedStore` (its 'process')."""

    blocking = False

    def __init__(self, store: InMemorySharedStore, name: str) -> None:
        self._store = store
        self._name = name
        self._server_lock: _MemoryFile | None = None
        self._locks: dict[LockName, _MemoryFile] = {}

    @property
    def description(self) -> str:
        return f"memory:{self._name}"

    def open(self) -> str:
        store = self._store
        with store._mutex:
            file = store._open("server.lock")
            if not file.content:
                file.content[0:3] = b"000"
                file.mtime = store._tick()
            if len(file.content) < 19:
                file.content[3:19] = uuid.uuid1().bytes
                file.mtime = store._tick()
            self._server_lock = file
            self._locks = {name: store._open(name.value) for name in LockName}
            return str(uuid.UUID(bytes=bytes(file.content[3:19])))

    def close(self) -> None:
        with self._store._mutex:
            for name in LockName:
                self.unlock(name)
            self._locks = {}
            self._server_lock = None

    def _opened(self) -> _MemoryFile:
        if self._server_lock is None:
            raise HAError(f"{self.description}: not started")
        return self._server_lock

    def read_state(self) -> int | None:
        with self._store._mutex:
            self._store._check_io()
            content = self._opened().content
            return content[0] if content else None

    def write_state(self, value: int) -> int:
        store = self._store
        with store._mutex:
            store._check_io()
            file = self._opened()
            file.content[0:1] = bytes((value,))
            file.mtime = store._tick()
            return file.mtime

    def read_node_id(self) -> str:
        with self._store._mutex:
            content = self._opened().content
            if len(content) < 19:
                raise HAError(
                    f"{self.description}/server.lock: primary server did not write id to file"
                )
            return str(uuid.UUID(bytes=bytes(content[3:19])))

    def _file(self, name: LockName) -> _MemoryFile:
        file = self._locks.get(name)
        if file is None:
            raise HAError(f"{self.description}/{name.value}: not started")
        return file

    def try_lock(self, name: LockName) -> bool:
        with self._store._mutex:
            file = self._file(name)
            if file.owner is None:
                file.owner = self
                return True
            return False

    async def lock(self, name: LockName, timeout_s: float | None) -> None:
        file = self._file(name)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    with self._store._mutex:
                        if self._locks.get(name) is not file:
                            raise HAError(f"{self.description}/{name.value}: closed while waiting")
                        if file.owner is None:
                            file.owner = self
                            return
                        entry = (loop, loop.create_future())
                        file.waiters.append(entry)
                    try:
                        await entry[1]
                    finally:
                        with self._store._mutex, contextlib.suppress(ValueError):
                            file.waiters.remove(entry)
        except TimeoutError:
            raise LockTimeoutError(
                f"{self.description}/{name.value}: lock not obtained within "
                f"{round((timeout_s or 0) * 1000)} ms (journal-lock-acquisition-timeout)"
            ) from None

    def unlock(self, name: LockName) -> None:
        with self._store._mutex:
            file = self._locks.get(name)
            if file is not None and file.owner is self:
                file.owner = None
                _wake(file)

    def holds(self, name: LockName) -> bool:
        file = self._locks.get(name)
        return file is not None and file.owner is self

    def check_held(self, name: LockName) -> str | None:
        with self._store._mutex:
            file = self._file(name)
            if file.owner is None:
                return f"{self.description}/{name.value} is not locked any more"
            if file.owner is not self:
                return f"{self.description}/{name.value} is locked by another holder"
            if self._store._files.get(name.value) is not file:
                return f"{self.description}/{name.value} was deleted or replaced"
            return None

    def is_locked(self, name: LockName) -> bool:
        with self._store._mutex:
            return self._file(name).owner is not None

    def server_lock_mtime(self) -> int | None:
        with self._store._mutex:
            file = self._store._files.get("server.lock")
            return None if file is None else file.mtime

    def touch_server_lock(self) -> int:
        store = self._store
        with store._mutex:
            file = store._open("server.lock")
            file.mtime = store._tick()
            return file.mtime

    def read_epoch(self) -> int:
        with self._store._mutex:
            self._store._check_io()
            return self._store._epoch

    def write_epoch(self, epoch: int) -> None:
        with self._store._mutex:
            self._store._check_io()
            self._store._epoch = epoch


class InMemoryNodeManager(SharedStoreNodeManager):
    """The node manager on an :class:`InMemorySharedStore`, for fast failover-logic tests.

    Same algorithm and semantics as :class:`~pybroker.ha.file_lock.FileLockNodeManager`;
    :meth:`simulate_process_death` plays kill -9.
    """

    def __init__(
        self,
        store: InMemorySharedStore,
        *,
        name: str = "node",
        lock_check_period_ms: int = 2000,
        lock_check_timeout_ms: int = 10_000,
        state_poll_interval_ms: int = 500,
    ) -> None:
        self._memory_backend = _MemoryBackend(store, name)
        self._store = store
        super().__init__(
            self._memory_backend,
            lock_check_period_ms=lock_check_period_ms,
            lock_check_timeout_ms=lock_check_timeout_ms,
            state_poll_interval_ms=state_poll_interval_ms,
        )

    @property
    def store(self) -> InMemorySharedStore:
        """The shared store."""
        return self._store

    def simulate_process_death(self) -> None:
        """kill -9: the locks go at once, nothing is written, no listener is called."""
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            self._monitor_task = None
        for task in list(self._waits):
            task.cancel()
        self._stopped.set()
        self._phase = _Phase.STOPPED
        self._memory_backend.close()


__all__ = [
    "InMemoryNodeManager",
    "InMemorySharedStore",
    "LockName",
    "LostLockCallback",
    "NodeManager",
    "NodeState",
    "SharedStoreNodeManager",
    "StoreBackend",
]
