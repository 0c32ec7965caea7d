"""The StorageManager contract, run against the memory and the journal implementations; then
what only the journal promises: everything durable comes back after a restart or a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pybroker.config.parse import parse_config
from pybroker.journal import MemoryFileFactory
from pybroker.storage.journal_storage import JournalStorageManager
from pybroker.storage.manager import AddressRecord, MemoryStorageManager, QueueRecord

pytestmark = pytest.mark.asyncio


def _configuration(root: Path):
    xml = f"""<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <journal-directory>{root}/journal</journal-directory>
      <bindings-directory>{root}/bindings</bindings-directory>
      <journal-file-size>64K</journal-file-size>
      <security-enabled>false</security-enabled></core></configuration>"""
    return parse_config(xml, file="storage.xml", instance_dir=root)


@pytest.fixture(params=["memory", "journal-os", "journal-memory"])
def factory(request, tmp_path):
    """A function making a fresh storage manager over the same (durable) place."""
    files = MemoryFileFactory() if request.param == "journal-memory" else None
    holder = {"files": files}

    def make():
        if request.param == "memory":
            return MemoryStorageManager()
        return JournalStorageManager(_configuration(tmp_path), files=holder["files"])

    make.kind = request.param  # type: ignore[attr-defined]
    make.holder = holder  # type: ignore[attr-defined]
    return make


async def _open(factory):
    storage = factory()
    await storage.start()
    state = await storage.load()
    return storage, state


async def _settle(storage) -> None:
    durable = storage.durable()
    if durable is not None:
        await durable


async def test_ids_are_unique_and_increasing(factory):
    storage, _ = await _open(factory)
    ids = [storage.next_id() for _ in range(25_000)]  # crosses id blocks
    assert ids == sorted(set(ids))
    await storage.stop()


async def test_every_operation_is_accepted_and_durable_resolves(factory):
    storage, _ = await _open(factory)
    queue_id = storage.next_id()
    storage.store_queue(QueueRecord(queue_id=queue_id, name="q", address="a", routing_type="ANYCAST"))
    storage.store_address(AddressRecord(binding_id=storage.next_id(), name="a", routing_types=("ANYCAST",)))
    message_id = storage.next_id()
    storage.store_message(message_id, b"payload", [queue_id])
    storage.update_delivery_count(message_id, queue_id, 1)
    record = storage.store_duplicate_id("a", b"dup-1")
    storage.store_key_value("ns", "k", b"v")
    await _settle(storage)
    storage.delete_message(message_id)
    storage.delete_duplicate_id(record)
    storage.delete_key_value("ns", "k")
    await _settle(storage)
    await storage.stop()


async def test_what_was_stored_comes_back(factory):
    if factory.kind == "memory":
        pytest.skip("the memory storage keeps nothing by design (persistence-enabled=false)")
    storage, _ = await _open(factory)
    q1, q2 = storage.next_id(), storage.next_id()
    for queue_id, name in ((q1, "q1"), (q2, "q2")):
        storage.store_queue(QueueRecord(queue_id=queue_id, name=name, address="addr", routing_type="MULTICAST",
                                        filter="colour = 'red'" if name == "q2" else None))
    binding = storage.next_id()
    storage.store_address(AddressRecord(binding_id=binding, name="addr", routing_types=("MULTICAST",)))
    messages = [storage.next_id() for _ in range(5)]
    for message_id in messages:
        storage.store_message(message_id, f"m{message_id}".encode(), [q1, q2])
    storage.store_ack(messages[0], q1)
    storage.delete_message(messages[1])
    storage.update_delivery_count(messages[2], q2, 3)
    storage.store_duplicate_id("addr", b"abc")
    storage.store_key_value("mqtt-session", "client-1", b"state-1")
    storage.store_key_value("mqtt-session", "client-1", b"state-2")
    await _settle(storage)
    last_id = storage.next_id()
    await storage.stop()

    storage, state = await _open(factory)
    assert {queue.name for queue in state.queues} == {"q1", "q2"}
    assert next(q for q in state.queues if q.name == "q2").filter == "colour = 'red'"
    assert [a.name for a in state.addresses] == ["addr"]
    recovered = {m.message_id: m for m in state.messages}
    assert sorted(recovered) == [messages[0], *messages[2:]]
    assert recovered[messages[0]].refs == [(q2, 0)]
    assert recovered[messages[2]].refs == [(q1, 0), (q2, 3)]
    assert recovered[messages[3]].data == f"m{messages[3]}".encode()
    assert [dup for _, dup in state.duplicate_ids["addr"]] == [b"abc"]
    assert state.key_values[("mqtt-session", "client-1")][1] == b"state-2"
    assert storage.next_id() > last_id
    await storage.stop()


async def test_a_crash_keeps_what_durable_confirmed_and_nothing_half_written(factory):
    if factory.kind != "journal-memory":
        pytest.skip("needs the crashable in-memory file system")
    storage, _ = await _open(factory)
    queue_id = storage.next_id()
    storage.store_queue(QueueRecord(queue_id=queue_id, name="q", address="q", routing_type="ANYCAST"))
    confirmed = []
    for _ in range(20):
        message_id = storage.next_id()
        storage.store_message(message_id, b"x" * 100, [queue_id])
        confirmed.append(message_id)
    await _settle(storage)
    # these are written but never synced: a crash may drop them, never corrupt the rest
    for _ in range(20):
        storage.store_message(storage.next_id(), b"y" * 100, [queue_id])
    files = factory.holder["files"]
    factory.holder["files"] = files.crash(torn_bytes=37)
    storage, state = await _open(factory)
    recovered = [m.message_id for m in state.messages]
    assert recovered[: len(confirmed)] == confirmed
    assert all(m.refs == [(queue_id, 0)] for m in state.messages)
    await storage.stop()


async def test_durable_covers_the_bindings_journal_too(factory):
    """Queues, addresses and key-value records made on the fly go to the bindings journal:
    what durable() confirmed of them survives a crash as well."""
    if factory.kind != "journal-memory":
        pytest.skip("needs the crashable in-memory file system")
    storage, _ = await _open(factory)
    await _settle(storage)
    storage.store_message(storage.next_id(), b"before", [1])
    await _settle(storage)
    queue_id = storage.next_id()
    storage.store_queue(QueueRecord(queue_id=queue_id, name="late", address="late", routing_type="ANYCAST"))
    storage.store_key_value("mqtt-session", "client-1", b"session")
    durable = storage.durable()
    assert durable is not None and not durable.done()  # the message journal alone has nothing pending
    await durable
    assert storage.durable() is None or storage.durable().done()
    files = factory.holder["files"]
    factory.holder["files"] = files.crash()
    storage, state = await _open(factory)
    assert [queue.name for queue in state.queues] == ["late"]
    assert state.key_values[("mqtt-session", "client-1")][1] == b"session"
    await storage.stop()


async def test_durable_fails_when_the_disk_fails(factory):
    if factory.kind != "journal-memory":
        pytest.skip("needs fault injection")
    storage, _ = await _open(factory)
    queue_id = storage.next_id()
    factory.holder["files"].inject_fault(0, kinds={"datasync", "fullsync"}, permanent=True)
    storage.store_message(storage.next_id(), b"z", [queue_id])
    from pybroker.errors import JournalError

    with pytest.raises(JournalError):
        await asyncio.wait_for(storage.durable(), 10)
    await storage.stop()


@pytest.mark.parametrize(("kind", "configured", "expected"), [
    ("ASYNCIO", None, 3_333_333),  # no libaio: the NIO journal and its default, as Artemis
    ("ASYNCIO", 500_000, 500_000),  # a configured value is honoured
    ("ASYNCIO", 0, 0),
    ("NIO", None, 3_333_333),
    ("NIO", 8000, 8000),
    ("MAPPED", None, 3_333_333),
])
async def test_the_writer_takes_the_nio_buffer_timeout_unless_one_is_configured(
        tmp_path, caplog, kind, configured, expected):
    from pybroker.storage.journal_storage import journal_options

    timeout = "" if configured is None else f"<journal-buffer-timeout>{configured}</journal-buffer-timeout>"
    xml = f"""<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
      <journal-directory>{tmp_path}/journal</journal-directory>
      <bindings-directory>{tmp_path}/bindings</bindings-directory>
      <journal-type>{kind}</journal-type>{timeout}
      <security-enabled>false</security-enabled></core></configuration>"""
    configuration = parse_config(xml, file="storage.xml", instance_dir=tmp_path)
    assert journal_options(configuration).buffer_timeout_ns == expected
    assert journal_options(configuration, bindings=True).buffer_timeout_ns == 0  # unbuffered
    storage = JournalStorageManager(configuration)
    with caplog.at_level("INFO", logger="pybroker.storage"):
        await storage.start()
    try:
        assert storage.messages is not None and storage.messages._timeout_ns == expected
        assert storage.bindings is not None and storage.bindings._timeout_ns == 0
        switched = [r.getMessage() for r in caplog.records if "AMQ221045" in r.getMessage()]
        assert switched == ([f"AMQ221045: libaio is not available, switching the configuration "
                             f"into NIO (journal-buffer-timeout {expected} ns"
                             f"{', the NIO default' if configured is None else ''})"]
                            if kind == "ASYNCIO" else [])
    finally:
        await storage.load()
        await storage.stop()
