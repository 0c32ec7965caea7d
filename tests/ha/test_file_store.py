"""The shared directory itself: server.lock's byte layout, files Artemis wrote, `pybroker status`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pybroker.cli.status import status
from pybroker.errors import HAError
from pybroker.ha.file_lock import FileLockNodeManager, OFDLock, PosixRecordLock, write_epoch_file
from pybroker.ha.node_manager import NodeManager, NodeState
from pybroker.ha.status import read_status

sys.path.insert(0, str(Path(__file__).parent))  # the helper modules beside this file
from ha_node_drivers import Harness  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux locks"),
    pytest.mark.timeout(60),
]


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[FileLockNodeManager]:
    node = FileLockNodeManager(tmp_path / "shared", lock_check_period_ms=50)
    try:
        yield node
    finally:
        await node.stop()


async def test_server_lock_layout(manager: FileLockNodeManager) -> None:
    await manager.start()
    assert isinstance(manager, NodeManager)
    directory = manager.lock_directory
    assert sorted(p.name for p in directory.iterdir()) == [
        "server.lock",
        "serverlock.1",
        "serverlock.2",
    ]
    raw = (directory / "server.lock").read_bytes()
    assert len(raw) == 19
    assert raw[:3] == b"000"  # state '0' and the two legacy bytes
    node_id = uuid.UUID(bytes=raw[3:19])
    assert node_id.version == 1  # time-based, as Artemis's UUIDGenerator
    assert manager.node_id == str(node_id)
    assert manager.lock_class is OFDLock
    await manager.start_primary()
    assert (directory / "server.lock").read_bytes()[0:1] == b"F"
    await manager.activation_successful()
    assert (directory / "server.lock").read_bytes() == b"L00" + node_id.bytes
    await manager.pause_primary()
    assert (directory / "server.lock").read_bytes()[0:1] == b"P"
    await manager.stop()
    await manager.start()  # a restart keeps the node id
    assert manager.node_id == str(node_id)


async def test_reads_a_server_lock_written_by_artemis(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    artemis_id = uuid.uuid1()
    (directory / "server.lock").write_bytes(b"L00" + artemis_id.bytes)
    node = FileLockNodeManager(directory, lock_class=PosixRecordLock)
    try:
        await node.start()
        assert node.node_id == str(artemis_id)
        assert await node.state() is NodeState.ACTIVE
        assert (directory / "serverlock.1").exists() and (directory / "serverlock.2").exists()
    finally:
        await node.stop()


async def test_short_node_id_is_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    (directory / "server.lock").write_bytes(b"P00" + b"\x01" * 5)
    node = FileLockNodeManager(directory)
    try:
        await node.start()
        raw = (directory / "server.lock").read_bytes()
        assert raw[:3] == b"P00" and len(raw) == 19
        assert node.node_id == str(uuid.UUID(bytes=raw[3:19]))
    finally:
        await node.stop()


async def test_unknown_state_byte_is_an_error_naming_the_file(
    manager: FileLockNodeManager,
) -> None:
    await manager.start()
    path = manager.lock_directory / "server.lock"
    raw = bytearray(path.read_bytes())
    raw[0] = ord("X")
    path.write_bytes(bytes(raw))
    with pytest.raises(HAError, match=r"server\.lock offset 0: unknown state byte 0x58"):
        await manager.state()


async def test_unwritable_directory_logs_amq222141(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() == 0:
        # root ignores permissions: make server.lock a directory instead
        directory = tmp_path / "shared"
        (directory / "serverlock.1").mkdir(parents=True)
    else:
        directory = tmp_path / "shared"
        directory.mkdir()
        directory.chmod(0o500)
    node = FileLockNodeManager(directory)
    with pytest.raises(HAError, match="cannot open the lock file"):
        await node.start()
    assert any(
        r.getMessage().startswith("AMQ222141: Node Manager can not open file")
        for r in caplog.records
    )
    assert node.phase == "stopped"


async def test_two_managers_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    """OFD locks: an embedded primary/backup pair in one process behaves like two processes."""
    primary = FileLockNodeManager(tmp_path / "shared", state_poll_interval_ms=10)
    backup = FileLockNodeManager(tmp_path / "shared", state_poll_interval_ms=10)
    try:
        await primary.start()
        await backup.start()
        await primary.start_primary()
        await primary.activation_successful()
        await backup.start_backup()
        assert backup.is_backup_active()
        waiting = asyncio.ensure_future(backup.await_primary())
        await primary.crash_primary()
        await asyncio.wait_for(waiting, 5)
        assert backup.is_primary_locked()
    finally:
        await primary.stop()
        await backup.stop()


# ---------------------------------------------------------------------------------------------
# status


@pytest.mark.parametrize("kind", ["ofd", "posix"])
async def test_status_shows_the_holders(tmp_path: Path, kind: str) -> None:
    harness = Harness(kind, tmp_path)
    try:
        primary = await harness.active_primary()
        await primary.call("increment_epoch")
        backup, waiting = await harness.waiting_backup()
        store = read_status(harness.directory)
        for _ in range(50):  # nobody keeps server.lock: a hold seen is a state-byte access
            if not store.lock("server.lock").held:
                break
            await asyncio.sleep(0.01)
            store = read_status(harness.directory)
        assert store.state == "L" and store.state_name == "ACTIVE"
        assert store.node_id == await primary.call("node_id")
        assert store.epoch == 1 and store.epoch_error is None
        assert store.lock("serverlock.1").held is True
        assert store.lock("serverlock.1").pids == (primary.pid,)
        assert store.lock("serverlock.1").kind == kind
        assert store.lock("serverlock.2").pids == (backup.pid,)
        assert store.lock("server.lock").held is False

        result = CliRunner().invoke(status, ["--dir", str(harness.directory), "--json"])
        assert result.exit_code == 0, result.output

        def steady(data: dict) -> dict:
            # server.lock is locked for a moment whenever a node reads or writes the state
            # byte (the waiting backup polls it), so its holder is a snapshot of that instant
            data["locks"] = [lock if lock["name"] != "server.lock"
                             else {"name": lock["name"], "exists": lock["exists"]}
                             for lock in data["locks"]]
            return data

        assert steady(json.loads(result.output)) == steady(json.loads(json.dumps(store.to_dict())))
        result = CliRunner().invoke(status, ["--dir", str(harness.directory)])
        assert result.exit_code == 0, result.output
        assert str(primary.pid) in result.output and str(backup.pid) in result.output
        assert "'L' ACTIVE" in result.output

        primary.kill()
        await waiting.result()
        store = read_status(harness.directory)
        assert store.lock("serverlock.1").pids == (backup.pid,)
    finally:
        await harness.close()


def test_status_of_an_empty_and_a_missing_directory(tmp_path: Path) -> None:
    store = read_status(tmp_path)
    assert store.node_id is None and store.state is None and store.epoch == 0
    assert [lock.exists for lock in store.locks] == [False, False, False]
    result = CliRunner().invoke(status, ["--dir", str(tmp_path / "nowhere")])
    assert result.exit_code != 0
    assert "no such directory" in result.output


def test_status_reports_a_damaged_epoch_and_unknown_state(tmp_path: Path) -> None:
    (tmp_path / "server.lock").write_bytes(b"X00" + uuid.uuid1().bytes)
    write_epoch_file(tmp_path, 4)
    (tmp_path / "server.epoch").write_bytes(b"garbage")
    store = read_status(tmp_path)
    assert store.state == "X" and store.state_name == "UNKNOWN"
    assert store.epoch is None and "corrupt" in (store.epoch_error or "")
    result = CliRunner().invoke(status, ["--dir", str(tmp_path)])
    assert result.exit_code == 0 and "corrupt" in result.output
