"""What a crash keeps, on the memory file system: each rule of the writer, and I/O failures."""

from __future__ import annotations

import asyncio
import logging

import pytest
from journal_helpers import bounded, options, quiesce, state_of

from pybroker.errors import JournalClosedError, JournalError
from pybroker.journal import RecordInfo

OPTS = options(file_size=4096, min_files=2)


async def test_an_awaited_durable_append_survives_and_unsynced_ones_do_not(memory_store):
    journal, _ = await memory_store.open_loaded(OPTS)
    await bounded(journal.append(1, 1, b"durable", sync=True))
    await bounded(journal.append(2, 1, b"written, not synced", sync=False))
    memory_store.crash()
    await journal.close()
    journal, result = await memory_store.open_loaded(OPTS)
    assert result.records == [RecordInfo(1, 1, b"durable", False)]
    await journal.close()


async def test_a_commit_is_durable_with_its_records(memory_store):
    journal, _ = await memory_store.open_loaded(OPTS)
    journal.append_tx(1, 10, 1, b"a")
    journal.append_tx(1, 11, 1, b"b")
    await bounded(journal.commit(1, sync=True))
    journal.append_tx(2, 12, 1, b"c")
    await bounded(journal.commit(2, sync=False))
    memory_store.crash()
    await journal.close()
    journal, result = await memory_store.open_loaded(OPTS)
    assert [r.id for r in result.records] == [10, 11]
    await journal.close()


async def test_a_file_is_freed_only_after_the_records_that_killed_it_are_durable(memory_store):
    journal, _ = await memory_store.open_loaded(OPTS)
    ids = list(range(1, 81))  # about two files
    for record_id in ids:
        journal.append(record_id, 1, b"f" * 80, sync=False)
    await bounded(journal.sync())
    first_file = memory_store.data_files()[0][1]
    # one batch: an add, then deletes that leave the oldest file dead (so it gets freed)
    futures = [journal.append(100, 1, b"added before the deletes", sync=False)]
    futures += [journal.delete(record_id, sync=False) for record_id in ids[:50]]
    await bounded(asyncio.gather(*futures))
    await bounded(journal._barrier())  # the freeing runs after the batch is written
    assert journal.statistics().reclaimed_files == 1
    assert memory_store.header(first_file).state.name == "FREE"
    memory_store.crash()  # whatever was not synced is lost
    await journal.close()
    journal, result = await memory_store.open_loaded(OPTS)
    # freeing the file forced the deletes (and the add before them) to disk first
    assert [r.id for r in result.records] == [*ids[50:], 100]
    await journal.close()


async def test_the_previous_file_is_complete_before_the_next_one_gets_records(memory_store):
    journal, _ = await memory_store.open_loaded(OPTS)
    for record_id in range(1, 31):
        journal.append(record_id, 1, b"g" * 100, sync=False)
    await bounded(journal.sync())
    assert journal.statistics().data_files == 1
    # one batch that ends the current file and starts the next
    futures = [journal.append(record_id, 1, b"h" * 100, sync=False)
               for record_id in range(31, 70)]
    await bounded(asyncio.gather(*futures))
    assert journal.statistics().data_files >= 2
    # the crash tears the first write still pending: it must be in the newest file
    memory_store.crash(torn_bytes=50)
    await journal.close()
    journal, result = await memory_store.open_loaded(OPTS)  # a torn tail, never corruption
    ids = [r.id for r in result.records]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) > 30
    await journal.close()


async def test_a_failed_fdatasync_stops_the_journal_for_good(memory_store, caplog):
    journal, _ = await memory_store.open_loaded(OPTS)
    await bounded(journal.append(1, 1, b"durable", sync=True))
    await quiesce(journal)
    memory_store.files.inject_fault(kinds={"datasync"})  # one failure only
    futures = [journal.append(2, 1, b"lost", sync=True), journal.append(3, 1, b"lost", sync=False)]
    with caplog.at_level(logging.ERROR, logger="pybroker.journal"):
        with pytest.raises(JournalError, match=r"fdatasync failed on .*pybroker-data-") as caught:
            await bounded(futures[0])
    assert "no retry" in str(caught.value) and "fdatasync" in caplog.text
    with pytest.raises(JournalError):
        await bounded(futures[1])  # resolved with the batch: after the failed sync
    with pytest.raises(JournalError, match="fdatasync failed"):
        journal.append(4, 1, b"refused", sync=False)  # no retry although the disk is fine now
    with pytest.raises(JournalError):
        await journal.sync()
    await bounded(journal.close())
    with pytest.raises(JournalClosedError):
        journal.append(5, 1, b"closed", sync=False)
    memory_store.crash()
    journal, result = await memory_store.open_loaded(OPTS)
    assert [r.id for r in result.records] == [1]
    await journal.close()


async def test_a_failed_write_fails_the_batch_and_everything_after(memory_store):
    journal, _ = await memory_store.open_loaded(OPTS)
    await bounded(journal.append(1, 1, b"durable", sync=True))
    await quiesce(journal)
    memory_store.files.inject_fault(kinds={"write"})
    first = journal.append(2, 1, b"x", sync=False)
    with pytest.raises(JournalError, match=r"write failed on .*pybroker-data-"):
        await bounded(first)
    with pytest.raises(JournalError):
        journal.update(1, 1, b"y", sync=False)
    await bounded(journal.close())
    memory_store.crash()
    journal, result = await memory_store.open_loaded(OPTS)
    assert state_of(result)[0] == [(1, 1, b"durable", False)]
    await journal.close()


async def test_close_after_a_crash_just_stops(memory_store):
    journal, _ = await memory_store.open_loaded(OPTS)
    for record_id in range(1, 100):
        journal.append(record_id, 1, b"z" * 50, sync=record_id % 10 == 0)
    memory_store.crash()
    await bounded(journal.close())
    journal, result = await memory_store.open_loaded(OPTS)
    ids = [r.id for r in result.records]
    assert ids == list(range(1, len(ids) + 1))
    await journal.close()


async def test_lost_unsynced_claims_never_reuse_a_file_id_with_records(memory_store):
    """Records of a file id only exist where a durable header carried that id."""
    journal, _ = await memory_store.open_loaded(OPTS)
    for record_id in range(1, 120):
        journal.append(record_id, 1, b"k" * 90, sync=False)
        if record_id > 3:
            journal.delete(record_id - 3, sync=False)
    await bounded(journal.sync())
    for record_id in range(120, 200):
        journal.append(record_id, 1, b"k" * 90, sync=False)
    await bounded(journal.append(200, 1, b"k", sync=False))
    memory_store.crash(keep=3)
    await journal.close()
    journal, result = await memory_store.open_loaded(OPTS)
    ids = [r.id for r in result.records]
    assert ids == list(range(117, 117 + len(ids))) and len(ids) >= 3
    for record_id in range(1000, 1100):
        journal.append(record_id, 1, b"n" * 90, sync=False)
    await bounded(journal.sync())
    await journal.close()
    journal, result = await memory_store.open_loaded(OPTS)
    assert [r.id for r in result.records][-100:] == list(range(1000, 1100))
    assert [r.id for r in result.records][:len(ids)] == ids
    await journal.close()


async def test_a_record_from_a_reused_files_past_is_never_replayed(memory_store):
    """A torn write that stops exactly at a record boundary of a reused file leaves the
    file's old records right behind the new one: their file id must stop the replay."""
    opts = options(file_size=4096, min_files=1, pool_files=-1)
    journal, _ = await memory_store.open_loaded(opts)
    # ids 1000..9999 and small file ids: every record has the same size; a record spans two
    # sectors, so its write can tear (a write inside one sector cannot)
    body = b"s" * 600
    next_id = 1000
    while journal._current_id in (None, 1):
        journal.append(next_id, 1, body, sync=False)
        next_id += 1
    await bounded(journal.sync())
    (_, old_file), *_ = memory_store.data_files()
    tracker = journal._tracker
    old_ids = sorted(rid for rid in tracker.live if tracker.locations(rid)[0][0] == 1)
    for record_id in old_ids:
        journal.delete(record_id, sync=False)
    await bounded(journal.sync())
    await bounded(journal._barrier())
    assert memory_store.header(old_file).state.name == "FREE"
    size = journal._tracker.locations(next_id - 1)[0][1]
    while True:  # durable appends until the next record starts a file: the pool's old file
        if journal._offset + size > opts.file_size:
            await bounded(journal.append(next_id, 1, body, sync=False))  # written, not synced
            next_id += 1
            if memory_store.header(old_file).state.name == "DATA":
                break
            await bounded(journal.sync())
            continue
        await bounded(journal.append(next_id, 1, body, sync=True))
        next_id += 1
    reused_id = memory_store.header(old_file).file_id
    assert 1 < reused_id < 128
    first_new = journal._tracker.locations(next_id - 1)
    assert first_new == [(reused_id, size)]  # the record that made the claim is in the old file
    # the claim synced; the write of the first new record is still pending: keep exactly it
    memory_store.crash(torn_bytes=size)
    await journal.close()
    journal, result = await memory_store.open_loaded(opts)
    ids = {r.id for r in result.records}
    assert not ids & set(old_ids), "a record of the file's previous life came back"
    assert next_id - 1 in ids
    await journal.close()


async def test_freeing_a_file_waits_for_the_sync_even_when_the_sync_fails(memory_store):
    journal, _ = await memory_store.open_loaded(OPTS)
    ids = list(range(1, 61))  # one full file and a half-full one (room for the deletes)
    for record_id in ids:
        journal.append(record_id, 1, b"f" * 80, sync=False)
    await bounded(journal.sync())
    current_file = journal._current_id
    await quiesce(journal)
    # the states a crash may leave: the program cut after any of its operations
    allowed = [sorted(ids), sorted([*ids, 100])]
    allowed += [sorted([*ids[count:], 100]) for count in range(1, 46)]
    # the second fdatasync from now fails for good: a file may only be freed after the
    # records that killed it are synced, so the crash must still leave one of those states
    memory_store.files.inject_fault(after=1, kinds={"datasync"}, permanent=True)
    journal.append(100, 1, b"added before the deletes", sync=False)
    for record_id in ids[:45]:
        journal.delete(record_id, sync=False)
    with pytest.raises(JournalError):
        await bounded(journal.sync())
    assert journal._current_id == current_file  # no rollover in the way
    memory_store.crash()
    await journal.close()
    journal, result = await memory_store.open_loaded(OPTS)
    assert sorted(r.id for r in result.records) in allowed
    await journal.close()


async def test_a_commit_whose_records_are_missing_is_dropped(memory_store, caplog):
    from pybroker.journal.framing import COMMIT, PREPARE

    journal, _ = await memory_store.open_loaded(OPTS)
    journal.append(1, 1, b"plain", sync=False)
    journal.append_tx(7, 2, 1, b"one")
    journal.append_tx(7, 3, 1, b"two")
    file_id = journal._current_id
    # a COMMIT that claims three records in this file: one is missing
    journal._write([COMMIT, 0, 0, 7, [file_id, 3]], False)
    journal.append_tx(8, 4, 1, b"prepared")
    journal._write([PREPARE, 0, 0, 8, [file_id, 2], b"xid"], False)
    await bounded(journal.sync())
    await journal.close()
    with caplog.at_level(logging.WARNING, logger="pybroker.journal"):
        journal, result = await memory_store.open_loaded(OPTS)
    assert "AMQ142014: Transaction 7 is missing elements" in caplog.text
    assert "AMQ142013: Prepared transaction 8 was not considered completed" in caplog.text
    assert result.discarded_transactions == 2
    assert [r.id for r in result.records] == [1] and result.prepared == []
    await journal.close()
