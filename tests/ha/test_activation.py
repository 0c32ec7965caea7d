"""Activations in one process: failover, failback, no-failover stops, lost locks, fencing,
split brain. The file-lock node manager uses OFD locks, which exclude each other within one
process, so real lock files are used; the in-memory node manager drives the fault cases."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from support import receive, send, until

from pybroker.config.parse import parse_config
from pybroker.embedded import Broker
from pybroker.errors import LockTimeoutError
from pybroker.ha.node_manager import InMemoryNodeManager, InMemorySharedStore, NodeState
from pybroker.testing.ha import HAPair, pair_config_xml

pytestmark = pytest.mark.asyncio


async def test_failover_serves_every_durable_message(tmp_path):
    async with HAPair(tmp_path) as pair:
        assert pair.primary.active and not pair.backup.active
        await asyncio.to_thread(send, pair.primary.port, "orders", [f"o{i}" for i in range(200)], durable=True)
        await pair.fail_primary()
        await pair.wait_backup_active()
        bodies = await asyncio.to_thread(receive, pair.backup.port, "orders", 200)
        assert bodies == [f"o{i}" for i in range(200)]


async def test_failback_hands_the_store_back_and_the_backup_waits_again(tmp_path):
    async with HAPair(tmp_path) as pair:
        await asyncio.to_thread(send, pair.primary.port, "q", ["a", "b"], durable=True)
        await pair.fail_primary()
        await pair.wait_backup_active()
        assert await asyncio.to_thread(receive, pair.backup.port, "q", 1) == ["a"]
        await pair.restart_primary()  # returns once the primary is active again
        assert pair.primary.active
        activation = pair.backup.activation
        await until(lambda: activation.passive.is_set())
        assert not pair.backup.active and activation.failbacks == 1
        assert await asyncio.to_thread(receive, pair.primary.port, "q", 1) == ["b"]
        # and the backup takes over again on the next failure
        await asyncio.to_thread(send, pair.primary.port, "q", ["c"], durable=True)
        await pair.fail_primary()
        await pair.wait_backup_active()
        assert await asyncio.to_thread(receive, pair.backup.port, "q", 1) == ["c"]


async def test_stop_without_failover_leaves_the_backup_passive(tmp_path):
    async with HAPair(tmp_path, failover_on_shutdown=False) as pair:
        await asyncio.to_thread(send, pair.primary.port, "kept", ["x"], durable=True)
        await pair.stop_primary()
        backup_nm = pair.backup.activation.node_manager
        assert await backup_nm.state() is NodeState.PAUSED
        with pytest.raises(TimeoutError):
            await pair.wait_backup_active(timeout=1.5)
        # the primary restarts with its messages
        await pair.restart_primary()
        assert await asyncio.to_thread(receive, pair.primary.port, "kept", 1) == ["x"]


def _memory_broker(tmp_path: Path, name: str, store: InMemorySharedStore, *, backup: bool, **kwargs) -> Broker:
    xml = pair_config_xml(name, tmp_path / "shared", 0, backup=backup, **kwargs)
    instance = tmp_path / name
    instance.mkdir(parents=True, exist_ok=True)
    node_manager = InMemoryNodeManager(store, name=name, lock_check_period_ms=50, state_poll_interval_ms=20)
    return Broker(parse_config(xml, file=f"{name}.xml", instance_dir=instance), node_manager=node_manager)


async def test_crash_with_the_in_memory_node_manager(tmp_path):
    store = InMemorySharedStore()
    primary = _memory_broker(tmp_path, "p", store, backup=False)
    backup = _memory_broker(tmp_path, "b", store, backup=True)
    await primary.start()
    await backup.start()
    assert store.state() == "L"
    await asyncio.to_thread(send, primary.port, "mem", ["1"], durable=True)
    # kill -9: the locks go, nothing is written
    await primary.stop_acceptors()
    await primary.server.stop()
    primary.activation.node_manager.simulate_process_death()
    await backup.wait_active(10)
    assert store.state() == "L"
    assert await asyncio.to_thread(receive, backup.port, "mem", 1) == ["1"]
    await backup.stop()


async def test_a_primary_whose_lock_file_is_deleted_stops(tmp_path, caplog):
    store = InMemorySharedStore()
    primary = _memory_broker(tmp_path, "p", store, backup=False)
    await primary.start()
    store.delete_server_lock()
    await asyncio.wait_for(primary.wait_stopped(), 10)
    assert primary.exit_code == 1
    assert "AMQ222010" in caplog.text


async def test_a_primary_whose_epoch_is_overtaken_stops_before_writing_more(tmp_path, caplog):
    store = InMemorySharedStore()
    primary = _memory_broker(tmp_path, "p", store, backup=False)
    await primary.start()
    journal = primary.server.storage.messages
    # another broker activated on the store: its epoch is newer
    store.set_epoch(primary.activation.epoch + 1)
    await asyncio.wait_for(primary.wait_stopped(), 10)
    assert "AMQ222010" in caplog.text
    assert journal is not None


async def test_fenced_journal_refuses_the_next_group_commit(tmp_path):
    store = InMemorySharedStore()
    primary = _memory_broker(tmp_path, "p", store, backup=False)
    await primary.start()
    storage = primary.server.storage
    store.set_epoch(primary.activation.epoch + 1)
    storage.store_message(storage.next_id(), b"late", [1])
    with pytest.raises(Exception) as raised:
        await storage.durable()
    assert "epoch" in str(raised.value).lower() or "lost" in str(raised.value).lower()
    await primary.stop()


async def test_lock_acquisition_timeout(tmp_path):
    store = InMemorySharedStore()
    first = _memory_broker(tmp_path, "p1", store, backup=False)
    await first.start()
    xml = pair_config_xml("p2", tmp_path / "shared", 0, backup=False).replace(
        "<persistence-enabled>", "<journal-lock-acquisition-timeout>300</journal-lock-acquisition-timeout><persistence-enabled>"
    )
    instance = tmp_path / "p2"
    instance.mkdir()
    second = Broker(parse_config(xml, file="p2.xml", instance_dir=instance),
                    node_manager=InMemoryNodeManager(store, name="p2"))
    with pytest.raises(LockTimeoutError):
        await second.start()
    await first.stop()


async def test_restart_backup_false_stops_the_backup_after_failback(tmp_path):
    store = InMemorySharedStore()
    primary = _memory_broker(tmp_path, "p", store, backup=False)
    xml = pair_config_xml("b", tmp_path / "shared", 0, backup=True).replace(
        "<allow-failback>", "<restart-backup>false</restart-backup><allow-failback>"
    )
    (tmp_path / "b").mkdir()
    backup = Broker(parse_config(xml, file="b.xml", instance_dir=tmp_path / "b"),
                    node_manager=InMemoryNodeManager(store, name="b", state_poll_interval_ms=20))
    await primary.start()
    await backup.start()
    await primary.stop(failover=True)
    await backup.wait_active(10)
    primary = _memory_broker(tmp_path, "p", store, backup=False)
    await primary.start()
    await asyncio.wait_for(backup.wait_stopped(), 10)
    assert primary.active
    await primary.stop()


async def _split_brain_round(tmp_path: Path, store: InMemorySharedStore, rng: random.Random, number: int) -> list[int]:
    nodes = [_memory_broker(tmp_path / f"r{number}", f"p{i}", store, backup=False) for i in range(2)]
    nodes += [_memory_broker(tmp_path / f"r{number}", f"b{i}", store, backup=True) for i in range(2)]
    violations: list[int] = []

    def active_count() -> int:
        return sum(1 for node in nodes if node.active)

    async def watch() -> None:
        while True:
            count = active_count()
            if count > 1:
                violations.append(count)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    order = nodes[:]
    rng.shuffle(order)
    pending = []
    for node in order:
        # a primary blocks in start() until it holds the lock: start them as tasks
        pending.append(asyncio.create_task(node.start()))
        await asyncio.sleep(rng.uniform(0, 0.05))
    await until(lambda: active_count() == 1)
    # fail the active one a few times; someone else must take over each time
    for _ in range(3):
        active = next(node for node in nodes if node.active)
        await active.stop(failover=True)
        if not any(n._running for n in nodes):
            break
        await until(lambda: active_count() == 1 or not any(n._running for n in nodes), timeout=15)
    for node in nodes:
        await node.stop()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return violations


async def test_split_brain_never_two_active(tmp_path):
    """Two primaries and two backups on one store, started in random orders and failed over
    repeatedly: at no point are two brokers active."""
    rng = random.Random(20261201)
    store = InMemorySharedStore()
    for number in range(4):
        violations = await _split_brain_round(tmp_path, store, rng, number)
        assert violations == [], f"round {number}: {violations}"
