"""Whole-file record locks on the shared store, and the node manager that uses them.

Theory of operation
-------------------
Artemis keeps three files in ``node-manager-lock-directory`` (see reference 1.2):

* ``server.lock``: byte 0 = state byte, bytes 1-2 = ``'0'``, bytes 3-18 = the node id (raw 16
  bytes of a time-based UUID). A whole-file lock on it is the short *state lock*, held only
  while the state byte is read or written.
* ``serverlock.1``: held by whichever broker is active.
* ``serverlock.2``: held by the one backup waiting to take over.

Every lock is an exclusive whole-file POSIX record lock (``l_start=0, l_len=0``), the kind the
JVM's ``FileChannel.tryLock()`` takes on Unix, so a pybroker and an Artemis on one directory
exclude each other. Two implementations sit behind :class:`FileLock`:

* :class:`OFDLock` (Linux default): open-file-description locks (``F_OFD_SETLK``). They conflict
  with classic POSIX locks, they conflict between two descriptors of one process (so a primary
  and a backup embedded in one test process exclude each other for real), and closing some
  other descriptor of the file does not drop them.
* :class:`PosixRecordLock` (portable fallback): classic ``lockf`` through portalocker. Those
  locks belong to the process: two descriptors in one process never conflict, and closing *any*
  descriptor of the file drops them. So the process keeps one descriptor per lock file (a
  registry shared by every lock object on that file) and an in-process guard gives the lock to
  one object at a time.

Blocking waits and how they end
-------------------------------
A blocking acquisition runs in a daemon thread that sits in the kernel's blocking lock call
(``F_OFD_SETLKW`` / ``F_SETLKW``), so takeover starts as soon as the holder's process dies,
not at the next tick of a polling timer. Such a call cannot be interrupted from Python, so a
wait that times out or is cancelled is *abandoned*, not stopped: the thread stays in the kernel,
and when it eventually obtains the lock it drops it at once (OFD: it waited on a descriptor of
its own and closes it; POSIX: it unlocks and leaves the in-process guard). A later acquisition
on the same lock object *revives* an abandoned wait instead of starting a second thread, so
there is at most one waiting thread per lock object, however often a timed wait is retried.
Closing the lock object makes an abandoned wait drop its lock whenever the kernel grants it.

An ``OSError`` from the lock call itself (for instance an NFS mount that went away) is logged
once as WARN "Failure when accessing a lock file" (repeats at DEBUG) and retried after 2 s, as
Artemis does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import struct
import sys
import threading
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pybroker.errors import HAError, LockTimeoutError
from pybroker.ha.node_manager import LockName, SharedStoreNodeManager

try:  # portalocker >= 3: a locker object bound to fcntl.lockf
    from portalocker.constants import LockFlags
    from portalocker.exceptions import AlreadyLocked, LockException
    from portalocker.portalocker import LockfLocker

    _LOCKF_LOCKER: LockfLocker | None = LockfLocker()
except ImportError:  # pragma: no cover - older portalocker: call fcntl.lockf directly
    _LOCKF_LOCKER = None

logger = logging.getLogger("pybroker.ha")

SERVER_LOCK_NAME = "server.lock"
EPOCH_FILE_NAME = "server.epoch"

# struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid, then padding to 32 bytes.
_FLOCK = struct.Struct("@hhqqi4x")
_LINUX_64 = sys.platform.startswith("linux") and struct.calcsize("P") == 8
_OFD_AVAILABLE = _LINUX_64 and hasattr(fcntl, "F_OFD_SETLK")
_LOCK_BUSY = (errno.EAGAIN, errno.EACCES)
_OFD_REFUSED = (errno.EINVAL, errno.ENOTSUP, errno.ENOLCK)


def _whole_file(lock_type: int) -> bytes:
    return _FLOCK.pack(lock_type, os.SEEK_SET, 0, 0, 0)


def _open_lock_file(path: Path) -> int:
    """Open (creating if missing) a lock file for reading and writing."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)


def _same_file(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open on ``fd`` (not deleted or replaced)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


# --------------------------------------------------------------------------------------------
# Who holds a lock, found without taking it


@dataclass(frozen=True)
class LockHolder:
    """A process holding a conflicting lock on a file.

    ``kind`` is ``"posix"`` (classic fcntl/lockf record lock: the JVM's, or
    :class:`PosixRecordLock`) or ``"ofd"`` (an open-file-description lock). ``pids`` is empty
    when the holder is not on this host (a network file system) or cannot be seen.
    """

    kind: str
    pids: tuple[int, ...]


def probe_holder(fd: int, path: Path) -> LockHolder | None:
    """Who holds an exclusive-conflicting lock on the file open on ``fd``; ``None`` if nobody.

    Uses ``F_OFD_GETLK`` (which, unlike ``F_GETLK``, also reports this process's own classic
    locks) and never takes a lock. The kernel reports no pid for OFD locks, so their holders
    are looked up in ``/proc/*/fdinfo``. Linux only.
    """
    if not _LINUX_64:
        raise HAError(f"{path}: finding the holder of a lock is supported on 64-bit Linux only")
    command = fcntl.F_OFD_GETLK if _OFD_AVAILABLE else fcntl.F_GETLK
    lock_type, _, _, _, pid = _FLOCK.unpack(fcntl.fcntl(fd, command, _whole_file(fcntl.F_WRLCK)))
    if lock_type == fcntl.F_UNLCK:
        return None
    if pid > 0:
        return LockHolder("posix", (pid,))
    return LockHolder("ofd", _ofd_holder_pids(fd))


def _lock_key(fd: int) -> str:
    """The ``major:minor:inode`` string /proc/locks and fdinfo use for a file."""
    stat = os.fstat(fd)
    return f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"


def _ofd_holder_pids(fd: int) -> tuple[int, ...]:
    """Processes with a descriptor whose fdinfo lists an OFD write lock on this file."""
    key = _lock_key(fd)
    target = os.fstat(fd)
    pids: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fd_dir = f"/proc/{entry.name}/fd"
        try:
            descriptors = os.listdir(fd_dir)
        except OSError:
            continue
        for name in descriptors:
            try:
                stat = os.stat(f"{fd_dir}/{name}")
                if (stat.st_dev, stat.st_ino) != (target.st_dev, target.st_ino):
                    continue
                with open(f"/proc/{entry.name}/fdinfo/{name}") as info:
                    text = info.read()
            except OSError:
                continue
            for line in text.splitlines():
                if (
                    line.startswith("lock:")
                    and "OFDLCK" in line
                    and "WRITE" in line
                    and key in line
                ):
                    pids.add(int(entry.name))
    return tuple(sorted(pids))


def _posix_lock_held_by(pid: int, fd: int) -> bool | None:
    """Whether /proc/locks lists a classic write lock of ``pid`` on this file (None: no /proc)."""
    key = _lock_key(fd)
    try:
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 fe:00:2148246 0 EOF" (blocked waiters start "->")
        if len(fields) >= 6 and fields[1] == "POSIX" and fields[3] == "WRITE":
            if fields[4] == str(pid) and fields[5] == key:
                return True
    return False


# --------------------------------------------------------------------------------------------
# The lock interface and the blocking-wait machinery


class _Acquisition:
    """One blocking wait for a lock, running in its own daemon thread.

    Status: WAITING -> ACQUIRED | DROPPED | FAILED; WAITING <-> ABANDONED (abandon / revive).
    An ABANDONED wait that obtains the lock drops it (nobody wants it any more).
    """

    WAITING = "waiting"
    ABANDONED = "abandoned"
    ACQUIRED = "acquired"
    DROPPED = "dropped"
    FAILED = "failed"

    def __init__(self, lock: FileLock, on_done: Callable[[], None]) -> None:
        self.lock = lock
        self.mutex = threading.Lock()
        self.status = self.WAITING
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._on_done: Callable[[], None] | None = on_done
        self.thread = threading.Thread(
            target=self._run, name=f"pybroker-lock-wait:{lock.path.name}", daemon=True
        )

    def abandon(self) -> bool:
        """Stop wanting the lock. True if it was already obtained: the caller owns it then."""
        with self.mutex:
            if self.status == self.WAITING:
                self.status = self.ABANDONED
                self._on_done = None
                return False
            return self.status == self.ACQUIRED

    def revive(self, on_done: Callable[[], None]) -> bool:
        """Want the lock again (reusing this thread). False if the wait is already over."""
        with self.mutex:
            if self.status in (self.WAITING, self.ABANDONED):
                self.status = self.WAITING
                self._on_done = on_done
                return True
            return False

    def raise_if_failed(self) -> None:
        if self.status == self.ACQUIRED:
            return
        if self.error is not None:
            raise self.error
        raise HAError(f"{self.lock.path}: the lock was closed while waiting for it")

    def _run(self) -> None:
        lock = self.lock
        handle: object | None = None
        recurring = False
        while not lock.closing.is_set():
            try:
                handle = lock._wait_os_lock()
                break
            except OSError as error:
                if lock.closing.is_set():
                    break  # e.g. EBADF: the descriptor was closed under the waiting call
                # An I/O error (NFS gone, ENOLCK, ...) may be temporary: log and retry.
                log = logger.debug if recurring else logger.warning
                log("Failure when accessing a lock file %s: %s", lock.path, error)
                recurring = True
                if lock.closing.wait(lock.failure_retry_interval):
                    break
            except BaseException as error:  # pragma: no cover - defensive: never lose a waiter
                self.error = error
                break
        with self.mutex:
            if handle is None:
                self.status = self.FAILED
            elif self.status == self.ABANDONED or lock.closing.is_set():
                lock._discard(handle)
                self.status = self.DROPPED
            else:
                lock._adopt(handle)
                self.status = self.ACQUIRED
            on_done, self._on_done = self._on_done, None
        with lock._mutex:
            if lock._pending is self:
                lock._pending = None
        self.done.set()
        if on_done is not None:
            on_done()


class FileLock(ABC):
    """An exclusive whole-file record lock on one file, held at most once by this object.

    Thread-safe for one acquisition at a time; ``try_acquire`` / ``acquire`` /
    ``acquire_async`` / ``release`` may be called from any thread.
    """

    #: Seconds between retries after an OSError from the lock call (Artemis: 2 s).
    failure_retry_interval: ClassVar[float] = 2.0

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._mutex = threading.Lock()
        self._pending: _Acquisition | None = None
        self.closing = threading.Event()

    # -- implementation hooks --------------------------------------------------------------

    @abstractmethod
    def _try_os_lock(self) -> object | None:
        """Non-blocking attempt; a handle on success, None when someone else holds it."""

    @abstractmethod
    def _wait_os_lock(self) -> object | None:
        """Blocking wait (in a worker thread); a handle, or None when the lock object closed."""

    @abstractmethod
    def _adopt(self, handle: object) -> None:
        """Record ``handle`` as the held lock."""

    @abstractmethod
    def _discard(self, handle: object) -> None:
        """Drop a lock obtained by an abandoned wait."""

    @abstractmethod
    def _release_held(self) -> None:
        """Release the held lock."""

    @property
    @abstractmethod
    def held(self) -> bool:
        """Whether this object holds the lock (bookkeeping, no system call)."""

    @abstractmethod
    def fileno(self) -> int:
        """A descriptor of the file for I/O; valid until :meth:`close`."""

    @abstractmethod
    def check(self) -> str | None:
        """Ask the OS whether this object still holds the lock: None if so, else why not."""

    @abstractmethod
    def is_locked(self) -> bool:
        """Whether anybody (this object included) holds the lock; takes no lock."""

    @abstractmethod
    def _close_files(self) -> None:
        """Close the descriptors (after the lock was released)."""

    # -- public API ------------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take the lock if it is free. False if anybody holds it, this object included."""
        with self._mutex:
            self._check_open()
            if self.held:
                return False
            handle = self._try_os_lock()
            if handle is None:
                return False
            self._adopt(handle)
            return True

    def start_acquire(self, on_done: Callable[[], None]) -> _Acquisition:
        """Begin a blocking wait in a daemon thread; ``on_done()`` runs when it ends.

        An abandoned wait still in the kernel is revived rather than doubled.
        """
        with self._mutex:
            self._check_open()
            if self.held:
                raise HAError(f"{self.path}: this lock object already holds the lock")
            pending = self._pending
            if pending is not None and pending.revive(on_done):
                return pending
            acquisition = _Acquisition(self, on_done)
            self._pending = acquisition
        acquisition.thread.start()
        return acquisition

    def acquire(self, timeout_s: float | None = None) -> None:
        """Block the calling thread until the lock is held.

        Raises :class:`LockTimeoutError` after ``timeout_s`` seconds (None = forever).
        """
        if self._try_first():
            return
        finished = threading.Event()
        acquisition = self.start_acquire(finished.set)
        if not finished.wait(timeout_s):
            if acquisition.abandon():
                return  # granted at the deadline: keep it
            raise LockTimeoutError(self._timeout_message(timeout_s))
        acquisition.raise_if_failed()

    async def acquire_async(self, timeout_s: float | None = None) -> None:
        """Await the lock without blocking the event loop (the wait runs in a thread).

        Raises :class:`LockTimeoutError` after ``timeout_s`` seconds (None = forever). On
        cancellation the wait is abandoned, and a lock granted meanwhile is released.
        """
        import asyncio

        # No fast path on the event loop: even a non-blocking lock is an RPC on NFS. A free
        # lock is granted at once by the waiting thread's blocking call.
        loop = asyncio.get_running_loop()
        signal: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, signal)

        acquisition = self.start_acquire(wake)
        try:
            async with asyncio.timeout(timeout_s):
                await signal
        except TimeoutError:
            if acquisition.abandon():
                return  # granted at the deadline: keep it
            raise LockTimeoutError(self._timeout_message(timeout_s)) from None
        except asyncio.CancelledError:
            if acquisition.abandon():
                self.release()
            raise
        acquisition.raise_if_failed()

    def release(self) -> None:
        """Release the lock if this object holds it (no-op otherwise)."""
        with self._mutex:
            if self.held:
                self._release_held()

    def verify(self) -> bool:
        """Whether this object still holds the lock, according to the OS."""
        return self.check() is None

    def close(self) -> None:
        """Release the lock and close the descriptors; an abandoned wait drops its lock later."""
        self.closing.set()
        with self._mutex:
            if self.held:
                with contextlib.suppress(OSError):
                    self._release_held()
            self._close_files()

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _try_first(self) -> bool:
        """The fast path of a blocking acquisition: an OSError is left to the retrying wait."""
        try:
            return self.try_acquire()
        except OSError:
            return False

    def _check_open(self) -> None:
        if self.closing.is_set():
            raise HAError(f"{self.path}: the lock object is closed")

    def _timeout_message(self, timeout: float | None) -> str:
        return (
            f"{self.path}: lock not obtained within {round((timeout or 0) * 1000)} ms "
            "(journal-lock-acquisition-timeout)"
        )


def _resolve(future: object) -> None:
    import asyncio

    assert isinstance(future, asyncio.Future)
    if not future.done():
        future.set_result(None)


# --------------------------------------------------------------------------------------------
# Open-file-description locks (Linux)


class OFDLock(FileLock):
    """An exclusive whole-file open-file-description lock (Linux ``F_OFD_SETLK``).

    Every acquisition uses a descriptor of its own, so an abandoned wait can close its
    descriptor (dropping only its own lock), and two lock objects in one process conflict.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        if not _OFD_AVAILABLE:
            raise HAError(f"{path}: open-file-description locks need 64-bit Linux")
        self._probe_fd = _open_lock_file(self.path)
        self._held_fd: int | None = None
        try:  # some file systems (FUSE, old NFS) refuse OFD requests: fail here, not later
            fcntl.fcntl(self._probe_fd, fcntl.F_OFD_GETLK, _whole_file(fcntl.F_WRLCK))
        except OSError:
            os.close(self._probe_fd)
            raise

    def _try_os_lock(self) -> int | None:
        fd = _open_lock_file(self.path)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _whole_file(fcntl.F_WRLCK))
        except OSError as error:
            os.close(fd)
            if error.errno in _LOCK_BUSY:
                return None
            raise
        return fd

    def _wait_os_lock(self) -> int:
        fd = _open_lock_file(self.path)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _whole_file(fcntl.F_WRLCK))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _adopt(self, handle: object) -> None:
        assert isinstance(handle, int)
        self._held_fd = handle

    def _discard(self, handle: object) -> None:
        assert isinstance(handle, int)
        os.close(handle)  # closing the description drops its lock

    def _release_held(self) -> None:
        fd, self._held_fd = self._held_fd, None
        assert fd is not None
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _whole_file(fcntl.F_UNLCK))
        except OSError as error:
            logger.debug(
                "unlocking %s failed (%s); closing the descriptor drops it", self.path, error
            )
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._held_fd is not None

    def fileno(self) -> int:
        fd = self._held_fd
        return self._probe_fd if fd is None else fd

    def check(self) -> str | None:
        fd = self._held_fd
        if fd is None:
            return f"{self.path} is not locked by this broker"
        if not _same_file(fd, self.path):
            return f"{self.path} was deleted or replaced while this broker held its lock"
        # From the holding description nothing may conflict (nobody else holds it) and from
        # another description something must (our own lock is still there).
        own = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _whole_file(fcntl.F_WRLCK)))
        other = _FLOCK.unpack(
            fcntl.fcntl(self._probe_fd, fcntl.F_OFD_GETLK, _whole_file(fcntl.F_WRLCK))
        )
        if own[0] != fcntl.F_UNLCK:
            return f"{self.path} is locked by another holder (pid {own[4]})"
        if other[0] == fcntl.F_UNLCK:
            return f"{self.path} is not locked any more"
        return None

    def is_locked(self) -> bool:
        if self._held_fd is not None:
            return True
        result = _FLOCK.unpack(
            fcntl.fcntl(self._probe_fd, fcntl.F_OFD_GETLK, _whole_file(fcntl.F_WRLCK))
        )
        return result[0] != fcntl.F_UNLCK

    def _close_files(self) -> None:
        if self._probe_fd >= 0:
            os.close(self._probe_fd)
            self._probe_fd = -1


# --------------------------------------------------------------------------------------------
# Classic POSIX record locks (portable fallback)


class _SharedDescriptor:
    """The process's one descriptor of a lock file, and the in-process owner guard.

    Classic POSIX locks belong to the process and vanish when *any* descriptor of the file is
    closed, so every user of the file in this process goes through this one descriptor.
    ``guard`` is held by whichever lock object in this process holds, or waits in the kernel
    for, the lock.
    """

    _registry: ClassVar[dict[str, _SharedDescriptor]] = {}
    _registry_mutex: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, key: str, fd: int) -> None:
        self.key = key
        self.fd = fd
        self.users = 0
        self.guard = threading.Lock()

    @classmethod
    def attach(cls, path: Path) -> _SharedDescriptor:
        key = os.path.realpath(path)
        with cls._registry_mutex:
            shared = cls._registry.get(key)
            if shared is None:
                shared = cls(key, _open_lock_file(Path(key)))
                cls._registry[key] = shared
            shared.users += 1
            return shared

    def detach(self) -> None:
        with self._registry_mutex:
            self.users -= 1
            if self.users == 0:
                del self._registry[self.key]
                os.close(self.fd)

    @classmethod
    @contextlib.contextmanager
    def borrow(cls, path: Path) -> Iterator[int]:
        """A read-only descriptor of ``path`` whose closing cannot drop this process's locks."""
        key = os.path.realpath(path)
        with cls._registry_mutex:
            shared = cls._registry.get(key)
            if shared is not None:
                shared.users += 1
        if shared is not None:
            try:
                yield shared.fd
            finally:
                shared.detach()
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)


def _lockf(fd: int, blocking: bool) -> bool:
    """Exclusive whole-file lockf; False if busy (non-blocking only). Other errors: OSError."""
    if _LOCKF_LOCKER is None:  # pragma: no cover - old portalocker
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as error:
            if error.errno in _LOCK_BUSY and not blocking:
                return False
            raise
        return True
    flags = LockFlags.EXCLUSIVE | (LockFlags(0) if blocking else LockFlags.NON_BLOCKING)
    try:
        _LOCKF_LOCKER.lock(fd, flags)
    except AlreadyLocked:
        return False
    except LockException as error:
        cause = error.__cause__
        if isinstance(cause, OSError):
            raise cause from None
        raise OSError(errno.EIO, str(error)) from error
    return True


def _unlockf(fd: int) -> None:
    if _LOCKF_LOCKER is None:  # pragma: no cover - old portalocker
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return
    try:
        _LOCKF_LOCKER.unlock(fd)
    except LockException as error:
        cause = error.__cause__
        raise (cause if isinstance(cause, OSError) else OSError(errno.EIO, str(error))) from None


class PosixRecordLock(FileLock):
    """An exclusive whole-file classic POSIX record lock (``lockf`` via portalocker).

    Process-scoped: the lock objects of one file in this process share one descriptor, and an
    in-process guard hands the lock to one of them at a time (the second gets "not acquired",
    as a second ``tryLock`` in one JVM does).
    """

    #: Seconds between checks for a closed lock while waiting for the in-process guard.
    guard_poll_interval: ClassVar[float] = 0.05

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._shared = _SharedDescriptor.attach(self.path)
        self._held = False
        self._detached = False

    def _try_os_lock(self) -> bool | None:
        if not self._shared.guard.acquire(blocking=False):
            return None  # another lock object of this process holds or awaits it
        try:
            if _lockf(self._shared.fd, blocking=False):
                return True
        except BaseException:
            self._shared.guard.release()
            raise
        self._shared.guard.release()
        return None

    def _wait_os_lock(self) -> bool | None:
        guard = self._shared.guard
        # In-process hand-over wakes at once; the slice only bounds how late a close is seen.
        while not guard.acquire(timeout=self.guard_poll_interval):
            if self.closing.is_set():
                return None
        try:
            _lockf(self._shared.fd, blocking=True)
        except BaseException:
            guard.release()
            raise
        return True

    def _adopt(self, handle: object) -> None:
        self._held = True

    def _discard(self, handle: object) -> None:
        try:
            _unlockf(self._shared.fd)
        finally:
            self._shared.guard.release()

    def _release_held(self) -> None:
        self._held = False
        try:
            _unlockf(self._shared.fd)
        finally:
            self._shared.guard.release()

    @property
    def held(self) -> bool:
        return self._held

    def fileno(self) -> int:
        return self._shared.fd

    def check(self) -> str | None:
        if not self._held:
            return f"{self.path} is not locked by this broker"
        if not _same_file(self._shared.fd, self.path):
            return f"{self.path} was deleted or replaced while this broker held its lock"
        # A process cannot see its own classic locks through F_GETLK; /proc/locks can.
        if _posix_lock_held_by(os.getpid(), self._shared.fd) is False:
            return f"{self.path} is not locked any more"
        return None

    def is_locked(self) -> bool:
        if self._held or self._shared.guard.locked():
            return True
        if _LINUX_64:
            return probe_holder(self._shared.fd, self.path) is not None
        # Elsewhere: a non-blocking attempt (released at once) is the only portable test.
        handle = self._try_os_lock()
        if handle is None:
            return True
        self._discard(handle)
        return False

    def _close_files(self) -> None:
        if not self._detached:
            self._detached = True
            self._shared.detach()


def default_lock_class() -> type[FileLock]:
    """:class:`OFDLock` where the platform has open-file-description locks, else POSIX."""
    return OFDLock if _OFD_AVAILABLE else PosixRecordLock


def borrow_descriptor(path: Path) -> contextlib.AbstractContextManager[int]:
    """A read-only descriptor of ``path`` that is safe to close in a process holding locks.

    Closing a descriptor drops the process's classic POSIX locks on that file; this reuses the
    descriptor a :class:`PosixRecordLock` keeps open, when there is one.
    """
    return _SharedDescriptor.borrow(path)


# --------------------------------------------------------------------------------------------
# The epoch file (fencing; see DESIGN.md §4)

# server.epoch: magic, big-endian epoch, crc32 of the first 12 bytes. Written to a temporary
# file, fsynced, renamed over the old one, directory fsynced: a reader sees old or new, never
# a torn value. Read by path every time, so NFS close-to-open consistency gives a fresh value.
_EPOCH = struct.Struct(">4sQI")
_EPOCH_MAGIC = b"PBEP"


def read_epoch_file(directory: Path) -> int:
    """The epoch stored in ``directory/server.epoch``; 0 if there is none yet.

    Raises :class:`HAError` naming the file when its content is damaged.
    """
    path = Path(directory) / EPOCH_FILE_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        data = os.read(fd, _EPOCH.size + 1)
    finally:
        os.close(fd)
    if len(data) != _EPOCH.size:
        raise HAError(f"{path}: corrupt epoch file ({len(data)} bytes, expected {_EPOCH.size})")
    magic, epoch, checksum = _EPOCH.unpack(data)
    if magic != _EPOCH_MAGIC or zlib.crc32(data[:12]) != checksum:
        raise HAError(f"{path}: corrupt epoch file (bad magic or checksum)")
    return int(epoch)


def write_epoch_file(directory: Path, epoch: int) -> None:
    """Store ``epoch`` in ``directory/server.epoch`` crash-atomically."""
    directory = Path(directory)
    head = struct.pack(">4sQ", _EPOCH_MAGIC, epoch)
    data = head + struct.pack(">I", zlib.crc32(head))
    temporary = directory / f"{EPOCH_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, directory / EPOCH_FILE_NAME)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# The file-backed store and node manager


class FileStoreBackend:
    """The shared directory seen by one node manager (the backend of :class:`FileLockNodeManager`).

    Every method does blocking I/O; the node manager calls them from worker threads.
    """

    blocking = True

    def __init__(
        self,
        directory: Path,
        lock_class: type[FileLock] | None,
        state_lock_timeout: float | None,
    ) -> None:
        self.directory = Path(directory)
        self.server_lock_path = self.directory / SERVER_LOCK_NAME
        self._lock_class = lock_class
        self._state_lock_timeout = state_lock_timeout
        self._state_mutex = threading.Lock()
        self._state_lock: FileLock | None = None
        self._locks: dict[LockName, FileLock] = {}

    @property
    def description(self) -> str:
        return str(self.directory)

    @property
    def lock_class(self) -> type[FileLock] | None:
        """The lock implementation in use (chosen at :meth:`open` when not given)."""
        return self._lock_class

    def path_of(self, name: LockName) -> Path:
        return self.directory / name.value

    def open(self) -> str:
        """Open (creating if needed) the three lock files; return the node id."""
        self.directory.mkdir(parents=True, exist_ok=True)
        created = not self.server_lock_path.exists()
        if self._lock_class is None:
            self._lock_class = default_lock_class()
        paths = (
            self.server_lock_path,
            self.path_of(LockName.PRIMARY),
            self.path_of(LockName.BACKUP),
        )
        opened: list[FileLock] = []
        try:
            while len(opened) < len(paths):
                path = paths[len(opened)]
                try:
                    opened.append(self._lock_class(path))
                except OSError as error:
                    if self._lock_class is OFDLock and error.errno in _OFD_REFUSED:
                        logger.warning(
                            "%s refuses open-file-description locks (%s); using classic POSIX locks",
                            self.directory,
                            error,
                        )
                        for lock in opened:
                            lock.close()
                        opened.clear()
                        self._lock_class = PosixRecordLock
                        continue
                    logger.warning("AMQ222141: Node Manager can not open file %s: %s", path, error)
                    raise HAError(f"{path}: cannot open the lock file: {error}") from error
        except BaseException:
            for lock in opened:
                lock.close()
            raise
        self._state_lock = opened[0]
        self._locks = {LockName.PRIMARY: opened[1], LockName.BACKUP: opened[2]}
        try:
            node_id = self._initialise_server_lock()
            if created:
                _fsync_directory(self.directory)
        except BaseException:
            self.close()
            raise
        return node_id

    def _initialise_server_lock(self) -> str:
        # Under the state lock (Artemis does this unlocked), so a primary and a backup starting
        # together agree on one node id.
        with self._state_locked() as fd:
            if os.fstat(fd).st_size == 0:
                os.pwrite(fd, b"000", 0)  # state '0' and the two legacy '0' bytes
                os.fsync(fd)
            raw = os.pread(fd, 16, 3)
            if len(raw) != 16:
                raw = uuid.uuid1().bytes
                os.pwrite(fd, raw, 3)
                os.fsync(fd)
        return str(uuid.UUID(bytes=raw))

    @contextlib.contextmanager
    def _state_locked(self) -> Iterator[int]:
        timeout = self._state_lock_timeout
        if not self._state_mutex.acquire(timeout=-1 if timeout is None else timeout):
            raise LockTimeoutError(f"{self.server_lock_path}: state lock busy in this process")
        try:
            lock = self._state_lock
            if lock is None:
                raise HAError(f"{self.server_lock_path}: the node manager is not started")
            if not lock.try_acquire():
                lock.acquire(timeout)
            try:
                yield lock.fileno()
            finally:
                lock.release()
        finally:
            self._state_mutex.release()

    #: Seconds close() waits for a state read or write in flight (a hung NFS call).
    close_wait: ClassVar[float] = 5.0

    def close(self) -> None:
        # Let a state read/write in flight finish first, so it never reaches a descriptor
        # number that close() freed and an unrelated open() reused.
        got_mutex = self._state_mutex.acquire(timeout=self.close_wait)
        try:
            for lock in (*self._locks.values(), self._state_lock):
                if lock is not None:
                    lock.close()
            self._locks = {}
            self._state_lock = None
        finally:
            if got_mutex:
                self._state_mutex.release()

    def read_state(self) -> int | None:
        with self._state_locked() as fd:
            data = os.pread(fd, 1, 0)
        return data[0] if data else None

    def write_state(self, value: int) -> int:
        with self._state_locked() as fd:
            os.pwrite(fd, bytes((value,)), 0)
            os.fsync(fd)
        return os.stat(self.server_lock_path).st_mtime_ns

    def read_node_id(self) -> str:
        with self._state_locked() as fd:
            raw = os.pread(fd, 16, 3)
        if len(raw) != 16:
            raise HAError(f"{self.server_lock_path}: primary server did not write id to file")
        return str(uuid.UUID(bytes=raw))

    def _lock(self, name: LockName) -> FileLock:
        lock = self._locks.get(name)
        if lock is None:
            raise HAError(f"{self.path_of(name)}: the node manager is not started")
        return lock

    def try_lock(self, name: LockName) -> bool:
        try:
            return self._lock(name).try_acquire()
        except OSError as error:
            raise HAError(f"{self.path_of(name)}: cannot lock: {error}") from error

    async def lock(self, name: LockName, timeout_s: float | None) -> None:
        await self._lock(name).acquire_async(timeout_s)

    def unlock(self, name: LockName) -> None:
        lock = self._locks.get(name)
        if lock is not None:
            lock.release()

    def holds(self, name: LockName) -> bool:
        lock = self._locks.get(name)
        return lock is not None and lock.held

    def check_held(self, name: LockName) -> str | None:
        return self._lock(name).check()

    def is_locked(self, name: LockName) -> bool:
        try:
            return self._lock(name).is_locked()
        except OSError as error:
            raise HAError(f"{self.path_of(name)}: cannot test the lock: {error}") from error

    def server_lock_mtime(self) -> int | None:
        try:
            return os.stat(self.server_lock_path).st_mtime_ns
        except FileNotFoundError:
            return None

    def touch_server_lock(self) -> int:
        os.utime(self.server_lock_path)
        return os.stat(self.server_lock_path).st_mtime_ns

    def read_epoch(self) -> int:
        return read_epoch_file(self.directory)

    def write_epoch(self, epoch: int) -> None:
        write_epoch_file(self.directory, epoch)


class FileLockNodeManager(SharedStoreNodeManager):
    """The node manager on a shared directory, compatible with Artemis's FileLockNodeManager.

    ``lock_directory`` is ``node-manager-lock-directory`` (default: the journal directory).
    ``lock_acquisition_timeout_ms`` (``journal-lock-acquisition-timeout``, -1 = forever)
    bounds the short state-lock waits; the long waits take their timeout per call.
    ``lock_class`` defaults to :class:`OFDLock` on Linux, else :class:`PosixRecordLock`.
    Other keywords: see :class:`~pybroker.ha.node_manager.SharedStoreNodeManager`.
    """

    def __init__(
        self,
        lock_directory: Path,
        *,
        lock_acquisition_timeout_ms: int = -1,
        lock_check_period_ms: int = 2000,
        lock_check_timeout_ms: int = 10_000,
        state_poll_interval_ms: int = 500,
        lock_class: type[FileLock] | None = None,
    ) -> None:
        timeout = None if lock_acquisition_timeout_ms < 0 else lock_acquisition_timeout_ms / 1000
        self._file_backend = FileStoreBackend(Path(lock_directory), lock_class, timeout)
        super().__init__(
            self._file_backend,
            lock_check_period_ms=lock_check_period_ms,
            lock_check_timeout_ms=lock_check_timeout_ms,
            state_poll_interval_ms=state_poll_interval_ms,
        )

    @property
    def lock_directory(self) -> Path:
        """The directory holding server.lock, serverlock.1 and serverlock.2."""
        return self._file_backend.directory

    @property
    def lock_class(self) -> type[FileLock] | None:
        """The lock implementation in use (known once started)."""
        return self._file_backend.lock_class


__all__ = [
    "EPOCH_FILE_NAME",
    "SERVER_LOCK_NAME",
    "FileLock",
    "FileLockNodeManager",
    "FileStoreBackend",
    "LockHolder",
    "OFDLock",
    "PosixRecordLock",
    "borrow_descriptor",
    "default_lock_class",
    "probe_holder",
    "read_epoch_file",
    "write_epoch_file",
]
