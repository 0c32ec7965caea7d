"""Shared-store HA scenarios, written once, run on three stores.

* ``memory``: InMemoryNodeManagers in this event loop (fast failover logic);
* ``ofd`` / ``posix``: FileLockNodeManagers in child processes on a temporary directory, with
  OFD locks or classic lockf locks; "kill" is SIGKILL by pid.

Scenarios follow reference 1.4-1.8: primary then backup, a backup waiting while the state is
'0', kill -9, pause, crash with failover, failback, two backups, timeouts, the lock monitor
and epoch fencing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pybroker.ha.node_manager import LockName

sys.path.insert(0, str(Path(__file__).parent))  # the helper modules beside this file
from ha_node_drivers import Harness, Node, NodeError  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux locks"),
    pytest.mark.timeout(60),
]


@pytest.fixture(params=["memory", "ofd", "posix"])
async def ha(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(request.param, tmp_path)
    try:
        yield harness
    finally:
        await harness.close()


# The scenarios that only exercise node-manager logic need not run on both lock kinds.
@pytest.fixture(params=["memory", "ofd"])
async def ha2(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(request.param, tmp_path)
    try:
        yield harness
    finally:
        await harness.close()


async def eventually(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]], within: float = 5.0
) -> None:
    """Re-check an observable condition until it holds (bounded)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def no_event(node: Node, kind: str, seconds: float) -> bool:
    try:
        await node.wait_event(kind, within=seconds)
    except TimeoutError:
        return True
    return False


async def raises(error_type: str, call: Awaitable[Any]) -> NodeError:
    with pytest.raises(NodeError) as caught:
        await call
    assert caught.value.error_type == error_type, caught.value
    return caught.value


def messages(harness: Harness) -> list[str]:
    return [log["message"] for log in harness.logs()]


# ---------------------------------------------------------------------------------------------


async def test_primary_then_backup(ha: Harness) -> None:
    primary = await ha.node("primary")
    assert ha.store.state() == "0"
    await primary.call("start_primary")
    assert ha.store.state() == "F"  # written before the wait; 'L' only once activated
    assert await primary.call("is_primary_locked") is True
    await primary.call("activation_successful")
    assert ha.store.state() == "L"
    assert await primary.call("phase") == "active"

    backup, waiting = await ha.waiting_backup()
    assert await backup.call("node_id") == await primary.call("node_id") == ha.store.node_id()
    assert await waiting.still_pending_after(0.3)
    assert await backup.call("is_backup_active") is True
    assert await backup.call("is_primary_locked") is False
    assert await backup.call("state") == "L"
    assert ha.store.is_locked(LockName.PRIMARY) and ha.store.is_locked(LockName.BACKUP)
    logged = messages(ha)
    for text in (
        "AMQ221034: Waiting indefinitely to obtain primary lock",
        "AMQ221035: Primary Server Obtained primary lock",
        "AMQ221032: Waiting to become backup node",
        "AMQ221033: ** got backup lock",
    ):
        assert text in logged


async def test_backup_waits_while_no_primary_ever_ran(ha: Harness) -> None:
    backup, waiting = await ha.waiting_backup()
    assert ha.store.state() == "0"
    assert await waiting.still_pending_after(0.3)
    # With state '0' the backup does not even try serverlock.1, free as it is.
    assert not ha.store.is_locked(LockName.PRIMARY)
    primary = await ha.active_primary()
    assert await waiting.still_pending_after(0.2)
    primary.kill()
    await waiting.result()
    assert await backup.call("is_primary_locked") is True


async def test_kill_of_the_primary_fails_over(ha: Harness) -> None:
    primary = await ha.active_primary()
    backup, waiting = await ha.waiting_backup()
    assert await waiting.still_pending_after(0.1)
    mtime_before = ha.store.mtime()
    primary.kill()
    reply = await waiting.reply()
    assert reply["ok"], reply
    assert primary.killed_at_ns is not None
    # Generous bound (the benchmark measures it): the wait blocks in the kernel, no polling.
    assert (reply["t"] - primary.killed_at_ns) / 1e9 < 2.0
    assert ha.store.state() == "L"  # a crash writes nothing
    assert ha.store.mtime() > mtime_before  # the backup touched server.lock (ARTEMIS-4143)
    assert await backup.call("phase") == "taken-over"
    await backup.call("activation_successful")
    await backup.call("release_backup")
    assert await backup.call("phase") == "active"
    assert ha.store.state() == "L"  # a backup never writes 'L'
    assert not ha.store.is_locked(LockName.BACKUP)


async def test_pause_does_not_fail_over(ha: Harness) -> None:
    primary = await ha.active_primary()
    backup, waiting = await ha.waiting_backup()
    await primary.call("pause_primary")
    assert ha.store.state() == "P"
    assert await primary.call("is_primary_locked") is False
    # The backup obtains serverlock.1, reads 'P', releases it and keeps waiting.
    assert await waiting.still_pending_after(0.4)
    # The primary restarts: it writes 'F' and gets the lock the backup keeps letting go.
    restarted = await ha.node("restarted")
    await restarted.call("start_primary", timeout_ms=5000)
    await restarted.call("activation_successful")
    assert ha.store.state() == "L"
    assert await waiting.still_pending_after(0.2)
    restarted.kill()
    await waiting.result()
    assert await backup.call("is_primary_locked") is True


async def test_crash_primary_fails_over(ha: Harness) -> None:
    primary = await ha.active_primary()
    backup, waiting = await ha.waiting_backup()
    await primary.call("crash_primary")
    assert await primary.call("is_primary_locked") is False
    await waiting.result()
    assert ha.store.state() == "L"
    assert await backup.call("is_primary_locked") is True


async def test_failback(ha: Harness) -> None:
    primary = await ha.active_primary()
    backup, waiting = await ha.waiting_backup()
    primary.kill()
    await waiting.result()
    await backup.call("activation_successful")
    await backup.call("release_backup")

    restarted = await ha.node("restarted")
    assert await restarted.call("is_backup_active") is True  # it announces itself as backup
    starting = restarted.submit("start_primary")
    await eventually(lambda: backup.call("is_awaiting_failback"))
    assert await starting.still_pending_after(0.2)
    # 'F' with a newer mtime is a peer failing back, not a lost lock.
    assert await no_event(backup, "lost_lock", 0.2)

    await backup.call("crash_primary")  # failback: release serverlock.1, leave 'F'
    await starting.result()
    assert ha.store.state() == "F"
    becoming_active = backup.submit("wait_active_state")
    assert await becoming_active.still_pending_after(0.1)
    await restarted.call("activation_successful")
    await becoming_active.result()
    assert ha.store.state() == "L"

    # restart-backup: the old backup queues again behind the restored primary.
    await backup.call("start_backup")
    again = backup.submit("await_primary")
    assert await again.still_pending_after(0.2)
    restarted.kill()
    await again.result()


async def test_second_backup_waits_for_the_backup_lock(ha2: Harness) -> None:
    ha = ha2
    primary = await ha.active_primary()
    first, first_waiting = await ha.waiting_backup("first")
    second = await ha.node("second")
    second_lock = second.submit("start_backup")
    assert await second_lock.still_pending_after(0.3)
    primary.kill()
    await first_waiting.result()
    assert await second_lock.still_pending_after(0.1)  # still held during the activation
    await first.call("activation_successful")
    await first.call("release_backup")
    await second_lock.result()
    second_waiting = second.submit("await_primary")
    assert await second_waiting.still_pending_after(0.2)
    first.kill()
    await second_waiting.result()


async def test_start_primary_times_out(ha: Harness) -> None:
    primary = await ha.active_primary()
    other = await ha.node("other")
    error = await raises("LockTimeoutError", other.call("start_primary", timeout_ms=200))
    assert "200 ms" in error.message and "serverlock.1" in error.message
    assert "AMQ221034: Waiting 200 milliseconds to obtain primary lock" in messages(ha)
    assert await other.call("phase") == "idle"
    # A peer's 'F' is not a lost lock for the active primary.
    assert await no_event(primary, "lost_lock", 0.2)
    await primary.call("crash_primary")
    # The abandoned wait does not keep the lock once it is free...
    await eventually(lambda: not ha.store.is_locked(LockName.PRIMARY))
    # ...and a new attempt gets it.
    await other.call("start_primary", timeout_ms=5000)
    assert await other.call("is_primary_locked") is True


async def test_start_backup_and_await_primary_time_out(ha2: Harness) -> None:
    ha = ha2
    primary = await ha.active_primary()
    first = await ha.node("first")
    await first.call("start_backup")
    second = await ha.node("second")
    error = await raises("LockTimeoutError", second.call("start_backup", timeout_ms=200))
    assert "serverlock.2" in error.message
    assert await second.call("phase") == "idle"
    await raises("LockTimeoutError", first.call("await_primary", timeout_ms=200))
    assert await first.call("phase") == "backup"  # still the backup in line
    await first.call("release_backup")
    await eventually(lambda: not ha.store.is_locked(LockName.BACKUP))
    await second.call("start_backup", timeout_ms=5000)
    waiting = second.submit("await_primary")
    primary.kill()
    await waiting.result()


async def test_stop_ends_a_wait_and_frees_the_locks(ha2: Harness) -> None:
    ha = ha2
    await ha.active_primary()
    backup, waiting = await ha.waiting_backup()
    await backup.call("stop")
    error = await raises("HAError", waiting.result())
    assert "stopped" in error.message
    assert not ha.store.is_locked(LockName.BACKUP)
    assert await backup.call("phase") == "stopped"
    await raises("HAError", backup.call("state"))


async def test_cancelled_wait_leaves_no_lock(ha2: Harness) -> None:
    ha = ha2
    primary = await ha.active_primary()
    other = await ha.node("other")
    starting = other.submit("start_primary")
    await eventually(lambda: ha.store.state() == "F")
    await starting.cancel()
    assert (await starting.reply())["error"] == "CancelledError"
    assert await other.call("phase") == "idle"
    await primary.call("crash_primary")
    await eventually(lambda: not ha.store.is_locked(LockName.PRIMARY))


async def test_is_backup_active(ha2: Harness) -> None:
    ha = ha2
    probe = await ha.node("probe")
    assert await probe.call("is_backup_active") is False
    primary = await ha.active_primary()
    assert await probe.call("is_backup_active") is True
    assert await primary.call("is_backup_active") is True  # held by itself counts too
    await primary.call("pause_primary")
    assert await probe.call("is_backup_active") is False


async def test_illegal_calls_name_the_phase(ha2: Harness) -> None:
    ha = ha2
    node = await ha.node("node")
    error = await raises("HAError", node.call("activation_successful"))
    assert "activation_successful is not allowed in phase idle" in error.message
    error = await raises("HAError", node.call("await_primary"))
    assert "await_primary is not allowed in phase idle" in error.message
    await raises("HAError", node.call("increment_epoch"))
    await node.call("pause_primary")  # holds nothing: writes nothing
    assert ha.store.state() == "0"
    await node.call("start_backup")
    error = await raises("HAError", node.call("start_primary"))
    assert "phase backup" in error.message


# ---------------------------------------------------------------------------------------------
# The lock monitor


async def test_monitor_deleted_server_lock(ha: Harness) -> None:
    primary = await ha.active_primary()
    assert await no_event(primary, "lost_lock", 0.2)
    ha.store.delete_server_lock()
    event = await primary.wait_event("lost_lock")
    assert "does not exist" in event["reason"]
    assert "Lost the lock according to the monitor, notifying listeners" in messages(ha)
    warnings = [log for log in ha.logs() if log["level"] == "WARNING"]
    assert any(log["message"].startswith("Lost the lock") for log in warnings)


async def test_monitor_touched_mtime_with_state_active(ha: Harness) -> None:
    primary = await ha.active_primary()
    ha.store.touch_server_lock()  # what a backup does when it takes over
    event = await primary.wait_event("lost_lock")
    assert "modified" in event["reason"] and "'L'" in event["reason"]


async def test_monitor_ignores_a_peer_failing_back(ha2: Harness) -> None:
    ha = ha2
    primary = await ha.active_primary()
    ha.store.write_state("F")  # a primary restarting next to us
    ha.store.touch_server_lock()
    assert await no_event(primary, "lost_lock", 0.3)
    ha.store.write_state("L")  # but 'L' written by someone else: another broker is active
    event = await primary.wait_event("lost_lock")
    assert "another broker has taken over" in event["reason"]


async def test_monitor_lock_lost_behind_our_back(ha: Harness) -> None:
    primary = await ha.active_primary()
    await primary.call("drop_primary_lock")  # as an NFS server that forgot our lock
    event = await primary.wait_event("lost_lock")
    assert "not locked any more" in event["reason"]


async def test_monitor_runs_on_a_backup_that_took_over(ha2: Harness) -> None:
    ha = ha2
    primary = await ha.active_primary()
    backup, waiting = await ha.waiting_backup()
    primary.kill()
    await waiting.result()
    await backup.call("activation_successful")
    assert await no_event(backup, "lost_lock", 0.2)  # its own touch is its baseline
    ha.store.touch_server_lock()
    event = await backup.wait_event("lost_lock")
    assert "modified" in event["reason"]


async def test_monitor_only_after_activation_and_stops_on_pause(ha2: Harness) -> None:
    ha = ha2
    primary = await ha.node("primary")
    await primary.call("start_primary")
    ha.store.touch_server_lock()
    ha.store.write_state("L")
    assert await no_event(primary, "lost_lock", 0.2)  # no monitor before activation
    await primary.call("activation_successful")
    assert await no_event(primary, "lost_lock", 0.2)  # its own 'L' is its baseline
    await primary.call("pause_primary")
    ha.store.delete_server_lock()
    assert await no_event(primary, "lost_lock", 0.2)


# ---------------------------------------------------------------------------------------------
# Fencing epoch


async def test_epoch_increments_on_each_activation(ha2: Harness) -> None:
    ha = ha2
    primary = await ha.active_primary()
    assert await primary.call("read_epoch") == 0
    assert await primary.call("increment_epoch") == 1
    assert ha.store.epoch() == 1 and await primary.call("epoch") == 1
    await primary.call("check_epoch", my_epoch=1)
    backup, waiting = await ha.waiting_backup()
    primary.kill()
    await waiting.result()
    assert await backup.call("increment_epoch") == 2
    await backup.call("activation_successful")
    await backup.call("release_backup")
    restarted = await ha.node("restarted")
    starting = restarted.submit("start_primary")
    await eventually(lambda: backup.call("is_awaiting_failback"))
    await backup.call("crash_primary")
    await starting.result()
    assert await restarted.call("increment_epoch") == 3
    assert await backup.call("read_epoch") == 3
    await raises("LockLostError", backup.call("check_epoch", my_epoch=2))


async def test_a_newer_epoch_fences_the_active_broker(ha: Harness) -> None:
    primary = await ha.active_primary()
    assert await primary.call("increment_epoch") == 1
    assert await no_event(primary, "lost_lock", 0.2)
    ha.store.set_epoch(2)  # another broker activated (say after our NFS lock vanished)
    error = await raises("LockLostError", primary.call("check_epoch", my_epoch=1))
    assert "epoch on the store is 2" in error.message and "fenced" in error.message
    event = await primary.wait_event("lost_lock")
    assert "epoch on the store is 2" in event["reason"]


async def test_an_older_epoch_also_fences(ha2: Harness) -> None:
    ha = ha2
    primary = await ha.active_primary()
    await primary.call("increment_epoch")
    await primary.call("increment_epoch")
    ha.store.set_epoch(1)
    error = await raises("LockLostError", primary.call("check_epoch", my_epoch=2))
    assert "older" in error.message
    await primary.wait_event("lost_lock")


# ---------------------------------------------------------------------------------------------
# Memory-only fault injection


async def test_memory_unreadable_state_is_a_lost_lock(tmp_path: Path) -> None:
    harness = Harness("memory", tmp_path)
    try:
        primary = await harness.active_primary()
        harness.memory_store.fail_io = True
        event = await primary.wait_event("lost_lock")
        assert "cannot read the state byte" in event["reason"]
        error = await raises("HAError", primary.call("state"))
        assert "Input/output error" in error.message
    finally:
        harness.memory_store.fail_io = False
        await harness.close()
