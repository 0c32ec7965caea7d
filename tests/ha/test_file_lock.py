"""One suite for both whole-file lock implementations (OFDLock, PosixRecordLock).

Locks belong to processes (or open file descriptions), so conflicts are checked against
real child processes, including a child taking classic ``fcntl.lockf`` locks as the JVM does.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pybroker.errors import HAError, LockTimeoutError
from pybroker.ha.file_lock import (
    FileLock,
    LockHolder,
    OFDLock,
    PosixRecordLock,
    _unlockf,
    _whole_file,
    borrow_descriptor,
    probe_holder,
    read_epoch_file,
    write_epoch_file,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux locks")

LOCK_CLASSES = [OFDLock, PosixRecordLock]

# A child that takes a lock of the given kind and holds it until killed or stdin closes;
# "try-<kind>" only tries once and prints busy/free.
CHILD = r"""
import fcntl, os, sys
from pathlib import Path
mode, path = sys.argv[1], sys.argv[2]
kind = mode.removeprefix("try-")
blocking = not mode.startswith("try-")
try:
    if kind == "lockf":
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.lockf(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        got = True
    else:
        from pybroker.ha.file_lock import OFDLock, PosixRecordLock
        lock = (OFDLock if kind == "ofd" else PosixRecordLock)(Path(path))
        got = True if blocking and lock.acquire() is None else lock.try_acquire()
except OSError:
    got = False
print("locked" if blocking else ("free" if got else "busy"), flush=True)
if blocking:
    sys.stdin.read()
"""


class Child:
    """A child process holding (or trying) a lock; killed by pid in the fixture's finally."""

    def __init__(self, mode: str, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, mode, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid

    def line(self, timeout: float = 10.0) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"child {self.pid} said nothing within {timeout} s")
        return self.process.stdout.readline().strip()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def children() -> Iterator[Callable[[str, Path], Child]]:
    started: list[Child] = []

    def start(mode: str, path: Path) -> Child:
        child = Child(mode, path)
        started.append(child)
        return child

    try:
        yield start
    finally:
        for child in started:
            child.kill()


def holding(children: Callable[[str, Path], Child], kind: str, path: Path) -> Child:
    child = children(kind, path)
    assert child.line() == "locked"
    return child


def other_process_sees(children: Callable[[str, Path], Child], kind: str, path: Path) -> str:
    return children(f"try-{kind}", path).line()


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def wait_threads() -> int:
    return sum(
        1 for thread in threading.enumerate() if thread.name.startswith("pybroker-lock-wait")
    )


@pytest.fixture(params=LOCK_CLASSES, ids=lambda cls: cls.__name__)
def lock_class(request: pytest.FixtureRequest) -> type[FileLock]:
    return request.param


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "serverlock.1"


# ---------------------------------------------------------------------------------------------


def test_creates_the_file_and_takes_a_free_lock(lock_class: type[FileLock], path: Path) -> None:
    with lock_class(path) as lock:
        assert path.exists()
        assert not lock.held and not lock.is_locked()
        assert lock.try_acquire()
        assert lock.held and lock.is_locked() and lock.verify()
        assert not lock.try_acquire()  # already held by this object: "not acquired"
        with pytest.raises(HAError, match="already holds"):
            lock.acquire(0.1)
        lock.release()
        assert not lock.held and not lock.is_locked()
        lock.release()  # no-op


@pytest.mark.parametrize("holder_kind", ["lockf", "ofd", "posix"])
def test_excluded_by_another_process_then_takes_over_on_kill(
    lock_class: type[FileLock], path: Path, children, holder_kind: str
) -> None:
    holder = holding(children, holder_kind, path)
    with lock_class(path) as lock:
        assert not lock.try_acquire()
        assert lock.is_locked()
        with borrow_descriptor(path) as fd:
            found = probe_holder(fd, path)
        kind = "posix" if holder_kind in ("lockf", "posix") else "ofd"
        assert found == LockHolder(kind, (holder.pid,))
        started = time.monotonic()
        holder.process.kill()
        lock.acquire(timeout_s=10)
        # generous: a blocking wait wakes within milliseconds (measured separately)
        assert time.monotonic() - started < 2.0
        assert lock.held and lock.verify()


@pytest.mark.parametrize("other_kind", ["lockf", "ofd", "posix"])
def test_excludes_other_processes(
    lock_class: type[FileLock], path: Path, children, other_kind: str
) -> None:
    with lock_class(path) as lock:
        lock.acquire(1.0)
        assert other_process_sees(children, other_kind, path) == "busy"
        with borrow_descriptor(path) as fd:
            found = probe_holder(fd, path)
        assert found is not None and found.pids == (os.getpid(),)
        assert found.kind == ("ofd" if lock_class is OFDLock else "posix")
        lock.release()
        assert other_process_sees(children, other_kind, path) == "free"


def test_ofd_and_lockf_locks_conflict_across_processes(path: Path, children) -> None:
    """The experiment behind the design: OFD locks and the JVM's fcntl locks exclude each other."""
    holder = holding(children, "lockf", path)
    assert other_process_sees(children, "ofd", path) == "busy"
    holder.kill()
    holder = holding(children, "ofd", path)
    assert other_process_sees(children, "lockf", path) == "busy"
    holder.kill()
    assert other_process_sees(children, "lockf", path) == "free"
    assert other_process_sees(children, "ofd", path) == "free"


def test_two_objects_in_one_process_exclude_each_other(
    lock_class: type[FileLock], path: Path
) -> None:
    with lock_class(path) as first, lock_class(path) as second:
        assert first.try_acquire()
        assert not second.try_acquire()
        assert second.is_locked()
        with pytest.raises(LockTimeoutError):
            second.acquire(0.1)
        granted = threading.Event()
        waiter = threading.Thread(target=lambda: (second.acquire(10), granted.set()))
        waiter.start()
        assert not granted.wait(0.1)
        first.release()
        assert granted.wait(5)
        waiter.join(5)
        assert second.held and not first.held
        assert not first.try_acquire()


def test_closing_another_descriptor_keeps_the_lock(
    lock_class: type[FileLock], path: Path, children
) -> None:
    with lock_class(path) as lock:
        lock.acquire(1.0)
        with borrow_descriptor(path) as fd:
            os.pread(fd, 1, 0)
        assert other_process_sees(children, "lockf", path) == "busy"
        if lock_class is OFDLock:  # OFD locks survive even a plain open and close
            os.close(os.open(path, os.O_RDONLY))
            assert other_process_sees(children, "lockf", path) == "busy"
        assert lock.verify()


def test_plain_close_drops_classic_locks_which_is_why_descriptors_are_shared(
    path: Path, children
) -> None:
    with PosixRecordLock(path) as lock:
        lock.acquire(1.0)
        os.close(os.open(path, os.O_RDONLY))  # what borrow_descriptor avoids
        assert other_process_sees(children, "lockf", path) == "free"
        assert not lock.verify()  # /proc/locks no longer lists our lock


def test_timed_out_wait_is_abandoned_and_revived(
    lock_class: type[FileLock], path: Path, children
) -> None:
    holder = holding(children, "lockf", path)
    with lock_class(path) as lock:
        threads_before = wait_threads()
        for _ in range(3):
            with pytest.raises(LockTimeoutError, match="within 100 ms"):
                lock.acquire(0.1)
        assert wait_threads() == threads_before + 1  # one thread, revived each time
        holder.kill()
        # Nobody wants the lock now: the abandoned wait takes it and drops it.
        eventually(lambda: other_process_sees(children, "lockf", path) == "free")
        assert not lock.held
        eventually(lambda: wait_threads() == threads_before)
        lock.acquire(1.0)
        assert lock.held


async def test_async_acquire_times_out_and_succeeds(
    lock_class: type[FileLock], path: Path, children
) -> None:
    holder = holding(children, "lockf", path)
    with lock_class(path) as lock:
        with pytest.raises(LockTimeoutError):
            await lock.acquire_async(0.1)
        task = asyncio.create_task(lock.acquire_async(10))
        done, _ = await asyncio.wait({task}, timeout=0.1)
        assert not done
        holder.process.kill()
        await asyncio.wait_for(task, 5)
        assert lock.held and lock.verify()


async def test_cancelled_async_wait_leaves_no_lock(
    lock_class: type[FileLock], path: Path, children
) -> None:
    holder = holding(children, "lockf", path)
    with lock_class(path) as lock:
        task = asyncio.create_task(lock.acquire_async())
        done, _ = await asyncio.wait({task}, timeout=0.1)
        assert not done
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        holder.kill()
        await asyncio.to_thread(
            eventually, lambda: other_process_sees(children, "lockf", path) == "free"
        )
        assert not lock.held


def test_close_while_waiting_drops_the_lock_later(
    lock_class: type[FileLock], path: Path, children
) -> None:
    holder = holding(children, "lockf", path)
    lock = lock_class(path)
    finished = threading.Event()
    acquisition = lock.start_acquire(finished.set)
    lock.close()
    holder.kill()
    assert finished.wait(5)
    with pytest.raises(HAError, match="closed"):
        acquisition.raise_if_failed()
    assert other_process_sees(children, "lockf", path) == "free"
    with pytest.raises(HAError, match="closed"):
        lock.try_acquire()


def test_check_reports_a_deleted_or_replaced_file(lock_class: type[FileLock], path: Path) -> None:
    with lock_class(path) as lock:
        lock.acquire(1.0)
        assert lock.check() is None
        path.unlink()
        assert "deleted or replaced" in (lock.check() or "")
        path.touch()
        assert "deleted or replaced" in (lock.check() or "")


def test_check_reports_a_lock_lost_behind_our_back(lock_class: type[FileLock], path: Path) -> None:
    with lock_class(path) as lock:
        lock.acquire(1.0)
        if isinstance(lock, OFDLock):
            fcntl.fcntl(lock.fileno(), fcntl.F_OFD_SETLK, _whole_file(fcntl.F_UNLCK))
        else:
            _unlockf(lock.fileno())
        assert "not locked any more" in (lock.check() or "")
        assert not lock.verify()


def test_check_reports_another_holder(path: Path, children) -> None:
    with OFDLock(path) as lock:
        lock.acquire(1.0)
        fcntl.fcntl(lock.fileno(), fcntl.F_OFD_SETLK, _whole_file(fcntl.F_UNLCK))
        holder = holding(children, "lockf", path)
        assert f"pid {holder.pid}" in (lock.check() or "")


def test_os_errors_are_logged_once_and_retried(
    lock_class: type[FileLock], path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock = lock_class(path)
    lock.failure_retry_interval = 0.01  # type: ignore[misc]  # Artemis: 2 s
    real_wait = lock._wait_os_lock
    failures = iter([OSError(errno.EIO, "Input/output error")] * 3)

    def flaky_wait() -> object:
        error = next(failures, None)
        if error is not None:
            raise error
        return real_wait()

    def failing_try() -> None:
        raise OSError(errno.EIO, "Input/output error")

    lock._wait_os_lock = flaky_wait  # type: ignore[method-assign]
    lock._try_os_lock = failing_try  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="pybroker.ha")
    with lock:
        lock.acquire(5.0)
        assert lock.held
    records = [r for r in caplog.records if "Failure when accessing a lock file" in r.getMessage()]
    assert [r.levelname for r in records] == ["WARNING", "DEBUG", "DEBUG"]
    assert str(path) in records[0].getMessage()


def test_try_acquire_reports_other_os_errors(lock_class: type[FileLock], path: Path) -> None:
    with lock_class(path) as lock:

        def broken(*args: object) -> None:
            raise OSError(errno.ENOLCK, "No locks available")

        if lock_class is OFDLock:
            lock._try_os_lock = lambda: broken()  # type: ignore[method-assign]
        else:
            lock._try_os_lock = lambda: broken()  # type: ignore[method-assign]
        with pytest.raises(OSError, match="No locks available"):
            lock.try_acquire()


def test_probe_holder_of_a_free_file(path: Path) -> None:
    path.touch()
    with borrow_descriptor(path) as fd:
        assert probe_holder(fd, path) is None


# ---------------------------------------------------------------------------------------------
# The epoch file


def test_epoch_file_round_trip(tmp_path: Path) -> None:
    assert read_epoch_file(tmp_path) == 0
    write_epoch_file(tmp_path, 1)
    write_epoch_file(tmp_path, 7)
    assert read_epoch_file(tmp_path) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.epoch"]  # no temporaries


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1],
        lambda data: data + b"x",
        lambda data: b"XXXX" + data[4:],
        lambda data: data[:10] + bytes([data[10] ^ 1]) + data[11:],
        lambda data: b"",
    ],
    ids=["short", "long", "magic", "bit-flip", "empty"],
)
def test_damaged_epoch_file_is_an_error_naming_it(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    write_epoch_file(tmp_path, 3)
    path = tmp_path / "server.epoch"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(HAError, match=r"server\.epoch: corrupt epoch file"):
        read_epoch_file(tmp_path)
