"""The journal's contract, on real files and on memory files (one parametrised suite)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from journal_helpers import SMALL, bounded, options, state_of
from support import GatedFiles, until, wait_thread_event

from pybroker.errors import ConfigError, JournalClosedError, JournalError, LockLostError
from pybroker.journal import Journal, JournalOptions, RecordInfo
from pybroker.journal.segment import HEADER_SIZE, SegmentState, scan_segment


async def test_a_new_journal_is_empty_and_has_min_files(store):
    journal, result = await store.open_loaded(options(min_files=3))
    assert result.records == [] and result.prepared == []
    assert result.truncated_tail is None and result.files == 0
    assert len(store.names()) == 3
    assert all(store.header(name).state is SegmentState.FREE for name in store.names())
    await journal.close()


async def test_records_survive_a_reopen_in_journal_order(store):
    journal, _ = await store.open_loaded()
    journal.append(1, 10, b"one", sync=False)
    journal.append(2, 10, b"two", sync=False)
    journal.update(1, 11, b"one, updated", sync=False)
    journal.append(3, 12, b"three", sync=False)
    journal.delete(2, sync=False)
    await bounded(journal.update(3, 13, b"three, updated", sync=True))
    await journal.close()
    journal, result = await store.open_loaded()
    assert result.records == [
        RecordInfo(1, 10, b"one", False),
        RecordInfo(1, 11, b"one, updated", True),
        RecordInfo(3, 12, b"three", False),
        RecordInfo(3, 13, b"three, updated", True),
    ]
    assert result.records_read == 6 and result.files == 1
    statistics = journal.statistics()
    assert statistics.live_records == 2
    await journal.close()


async def test_appends_continue_after_a_reopen(store):
    journal, _ = await store.open_loaded()
    await bounded(journal.append(1, 1, b"a", sync=True))
    await journal.close()
    journal, _ = await store.open_loaded()
    journal.update(1, 1, b"b", sync=False)
    await bounded(journal.append(2, 1, b"c", sync=True))
    with pytest.raises(JournalError, match="record 2 already exists"):
        journal.append(2, 1, b"again", sync=False)
    await journal.close()
    journal, result = await store.open_loaded()
    assert [(r.id, r.body) for r in result.records] == [(1, b"a"), (1, b"b"), (2, b"c")]
    assert result.files == 1
    await journal.close()


async def test_transactions_apply_at_commit_and_vanish_at_rollback(store):
    journal, _ = await store.open_loaded()
    journal.append(1, 1, b"keep", sync=False)
    journal.append(2, 1, b"deleted in tx", sync=False)
    journal.append_tx(100, 10, 2, b"tx add")
    journal.update_tx(100, 10, 3, b"tx update of own add")
    journal.update_tx(100, 1, 3, b"tx update")
    journal.delete_tx(100, 2)
    journal.append(3, 1, b"after the tx records", sync=False)
    journal.append_tx(200, 20, 2, b"rolled back")
    journal.delete_tx(200, 1)
    await bounded(journal.rollback(200, sync=True))
    await bounded(journal.commit(100, sync=True))
    await journal.close()
    journal, result = await store.open_loaded()
    assert [(r.id, r.body, r.is_update) for r in result.records] == [
        (1, b"keep", False),
        (3, b"after the tx records", False),
        (10, b"tx add", False),
        (10, b"tx update of own add", True),
        (1, b"tx update", True),
    ]
    assert result.incomplete_transactions == 0 and result.discarded_transactions == 0
    journal.update(10, 1, b"ok", sync=False)
    with pytest.raises(JournalError, match="record 2"):
        journal.update(2, 1, b"gone", sync=False)
    with pytest.raises(JournalError, match="record 20"):
        journal.delete(20, sync=False)
    await journal.close()


async def test_an_incomplete_transaction_is_discarded_and_rolled_back(store, caplog):
    journal, _ = await store.open_loaded()
    journal.append(1, 1, b"a", sync=False)
    journal.append_tx(77, 2, 1, b"never committed")
    journal.delete_tx(77, 1)
    await bounded(journal.sync())
    await journal.close()
    with caplog.at_level(logging.WARNING, logger="pybroker.journal"):
        journal, result = await store.open_loaded()
    assert "AMQ142015: Uncommitted transaction with id 77 found and discarded" in caplog.text
    assert result.incomplete_transactions == 1
    assert [r.id for r in result.records] == [1]
    await journal.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pybroker.journal"):
        journal, result = await store.open_loaded()  # the appended rollback settled it
    assert "AMQ142015" not in caplog.text
    assert result.incomplete_transactions == 0 and [r.id for r in result.records] == [1]
    await journal.close()


async def test_a_prepared_transaction_stays_prepared_until_committed(store):
    journal, _ = await store.open_loaded()
    journal.append(1, 1, b"a", sync=False)
    journal.append_tx(5, 2, 7, b"prepared add")
    journal.update_tx(5, 1, 8, b"prepared update")
    journal.delete_tx(5, 1)
    await bounded(journal.prepare(5, b"the xid", sync=True))
    with pytest.raises(JournalError, match="transaction 5 is prepared"):
        journal.append_tx(5, 3, 1, b"too late")
    with pytest.raises(JournalError, match="already prepared"):
        journal.prepare(5, b"again", sync=False)
    await journal.close()
    journal, result = await store.open_loaded()
    assert [r.id for r in result.records] == [1]
    (prepared,) = result.prepared
    assert prepared.tx_id == 5 and prepared.extra == b"the xid"
    assert prepared.records == [RecordInfo(2, 7, b"prepared add", False),
                                RecordInfo(1, 8, b"prepared update", True)]
    assert prepared.deletes == [1]
    assert journal.statistics().pending_transactions == 1
    await bounded(journal.commit(5, sync=True))
    await journal.close()
    journal, result = await store.open_loaded()
    assert result.prepared == []
    assert [(r.id, r.body) for r in result.records] == [(2, b"prepared add")]
    await journal.close()


async def test_validation_errors_name_the_record(store):
    journal = await store.open()
    with pytest.raises(JournalError, match="load"):
        journal.append(1, 1, b"x", sync=False)
    await journal.load()
    with pytest.raises(JournalError, match="load"):
        await journal.load()
    with pytest.raises(JournalError, match="cannot update record 42"):
        journal.update(42, 1, b"x", sync=False)
    with pytest.raises(JournalError, match="cannot delete record 42"):
        journal.delete(42, sync=False)
    with pytest.raises(JournalError, match="64-bit"):
        journal.append(-1, 1, b"x", sync=False)
    with pytest.raises(JournalError, match="64-bit"):
        journal.append(1 << 64, 1, b"x", sync=False)
    with pytest.raises(JournalError, match="user type"):
        journal.append(1, 256, b"x", sync=False)
    with pytest.raises(JournalError, match="bytes"):
        journal.append(1, 1, "text", sync=False)
    with pytest.raises(JournalError, match="does not fit"):
        journal.append(1, 1, b"x" * SMALL.file_size, sync=False)
    with pytest.raises(JournalError, match="no open transaction 9"):
        journal.commit(9, sync=False)
    with pytest.raises(JournalError, match="no open transaction 9"):
        journal.rollback(9, sync=False)
    with pytest.raises(JournalError, match="cannot update record 3"):
        journal.update_tx(9, 3, 1, b"x")
    journal.append_tx(9, 3, 1, b"x")
    with pytest.raises(JournalError, match="record 3 already exists"):
        journal.append(3, 1, b"x", sync=False)  # being added by transaction 9
    journal.delete_tx(9, 3)
    with pytest.raises(JournalError, match="cannot delete record 3"):
        journal.delete_tx(9, 3)
    journal.append((1 << 64) - 1, 255, memoryview(b"largest id"), sync=False)
    await bounded(journal.commit(9, sync=True))
    await journal.close()
    with pytest.raises(JournalClosedError):
        journal.append(5, 1, b"x", sync=False)
    with pytest.raises(JournalClosedError):
        await journal.sync()
    await journal.close()  # idempotent
    journal, result = await store.open_loaded()
    assert result.records == [RecordInfo((1 << 64) - 1, 255, b"largest id", False)]
    await journal.close()


def test_options_are_checked():
    with pytest.raises(ConfigError, match="journal-file-size"):
        JournalOptions(file_size=100)
    with pytest.raises(ConfigError, match="journal-compact-percentage"):
        JournalOptions(compact_percentage=101)
    with pytest.raises(ConfigError, match="journal-type"):
        JournalOptions(journal_type="FAST")
    with pytest.raises(ConfigError, match="journal name"):
        JournalOptions(name="a-b")
    assert JournalOptions().file_size == 10485760 and JournalOptions().buffer_size == 490 * 1024


async def test_futures_resolve_in_append_order(store):
    journal, _ = await store.open_loaded()
    order: list[int] = []
    futures = []
    for index in range(200):
        future = journal.append(index + 1, 1, b"x" * (index % 50), sync=index % 3 == 0)
        future.add_done_callback(lambda _f, index=index: order.append(index))
        futures.append(future)
    await bounded(asyncio.gather(*futures))
    assert order == list(range(200))
    await journal.close()


async def test_a_group_commit_shares_one_future_that_a_waiter_cannot_cancel(store):
    gated = GatedFiles(store.files)
    journal = await Journal.open(store.directory, options(), gated)
    await bounded(journal.load())
    await bounded(journal.sync())
    await until(lambda: journal._writer_idle)
    gated.gate.clear()
    gated.entered.clear()
    first = journal.append(1, 1, b"a", sync=True)  # the idle writer takes it at once
    await wait_thread_event(gated.entered)
    # these gather in the next batch while the first is held at the gate
    written = [journal.append(2, 1, b"b", sync=False), journal.append(3, 1, b"c", sync=False)]
    synced = [journal.append(4, 1, b"d", sync=True), journal.delete(2, sync=False),
              journal.append(5, 1, b"e", sync=True)]
    assert written[0] is written[1] and synced[0] is synced[1] is synced[2]
    assert written[0] is not synced[0] and first is not synced[0]
    async def wait() -> None:
        await synced[0]

    waiter = asyncio.create_task(wait())
    await asyncio.sleep(0)
    waiter.cancel()  # one waiter gives up: the records of the others are still written
    assert not synced[0].cancel()
    await asyncio.sleep(0.05)
    assert not waiter.done() and not synced[0].cancelled()
    gated.gate.set()
    await bounded(asyncio.gather(first, *written, *synced))
    await until(waiter.done)
    assert waiter.cancelled()  # its cancellation takes effect once the batch completed
    await journal.close()
    journal, result = await store.open_loaded()
    assert [(info.id, info.body) for info in result.records] == [
        (1, b"a"), (3, b"c"), (4, b"d"), (5, b"e")]
    await journal.close()


async def test_sync_false_resolves_without_fsync_and_sync_does_fsync(store):
    journal, _ = await store.open_loaded()
    await bounded(journal.append(100, 1, b"claims the first file", sync=True))
    before = journal.statistics().fsyncs
    await bounded(journal.append(1, 1, b"x", sync=False))
    assert journal.statistics().fsyncs == before
    await bounded(journal.sync())
    assert journal.statistics().fsyncs == before + 1
    await bounded(journal.sync())  # nothing new written: nothing to sync
    assert journal.statistics().fsyncs == before + 1
    await bounded(journal.append(2, 1, b"x", sync=True))
    assert journal.statistics().fsyncs == before + 2
    await journal.close()


@pytest.mark.parametrize("changes,durable_fsyncs,tx_fsyncs", [
    ({}, 1, 1),
    ({"sync_non_transactional": False}, 0, 1),
    ({"sync_transactional": False}, 1, 0),
    ({"datasync": False}, 0, 0),
])
async def test_sync_options(store, changes, durable_fsyncs, tx_fsyncs):
    journal, _ = await store.open_loaded(options(**changes))
    journal.append(100, 1, b"claims the first file", sync=False)
    await bounded(journal.sync())
    start = journal.statistics().fsyncs
    await bounded(journal.append(1, 1, b"x", sync=True))
    middle = journal.statistics().fsyncs
    journal.append_tx(5, 2, 1, b"y")
    await bounded(journal.commit(5, sync=True))
    end = journal.statistics().fsyncs
    assert (middle - start, end - middle) == (durable_fsyncs, tx_fsyncs)
    await bounded(journal.sync())
    assert journal.statistics().fsyncs - end == (0 if changes.get("datasync") is False else
                                                 1 - tx_fsyncs)
    await journal.close()


async def test_group_commit_gathers_concurrent_writers(store):
    journal, _ = await store.open_loaded(options(file_size=1 << 20))
    counter = iter(range(1, 10**6))

    async def writer():
        for _ in range(20):
            await journal.append(next(counter), 1, b"x" * 100, sync=True)

    await bounded(asyncio.gather(*(writer() for _ in range(20))))
    statistics = journal.statistics()
    assert statistics.records_written == 400
    assert statistics.fsyncs < 400  # some fdatasyncs covered several records
    assert statistics.largest_batch > 1
    await journal.close()


async def test_buffer_timeout_gathers_and_sync_does_not_wait_for_it(store):
    journal, _ = await store.open_loaded(options(buffer_timeout_ns=3600 * 10**9))
    await bounded(journal.sync())  # urgent: does not wait an hour
    batches = journal.statistics().batches
    futures = [journal.append(index, 1, b"x", sync=True) for index in range(1, 11)]
    await bounded(journal.sync())
    assert all(future.done() for future in futures)
    assert journal.statistics().batches == batches + 1  # the ten records went together
    await journal.close()


async def test_a_record_that_finds_the_writer_idle_does_not_wait_for_the_timeout(store):
    journal, _ = await store.open_loaded(options(buffer_timeout_ns=3600 * 10**9))
    await bounded(journal.sync())
    await until(lambda: journal._writer_idle)
    for record_id in (1, 2, 3):  # a lone synchronous writer: each append waits for the last
        await bounded(journal.append(record_id, 1, b"x", sync=True))
        await until(lambda: journal._writer_idle)
    await journal.close()


async def test_records_arriving_during_a_write_wait_for_the_timeout(store):
    gated = GatedFiles(store.files)
    journal = await Journal.open(store.directory, options(buffer_timeout_ns=3600 * 10**9), gated)
    await bounded(journal.load())
    await bounded(journal.sync())
    await until(lambda: journal._writer_idle)
    batches = journal.statistics().batches
    gated.gate.clear()
    gated.entered.clear()
    first = journal.append(1, 1, b"a", sync=True)  # the idle writer takes it at once
    await wait_thread_event(gated.entered)
    later = [journal.append(record_id, 1, b"b", sync=True) for record_id in range(2, 7)]
    gated.gate.set()
    await bounded(first)
    await asyncio.sleep(0.2)
    assert not any(future.done() for future in later)  # gathering: the timeout is an hour
    await bounded(journal.sync())  # urgent
    assert all(future.done() for future in later)
    assert journal.statistics().batches == batches + 2
    await journal.close()


async def test_after_a_big_batch_a_record_at_the_idle_writer_waits_for_the_timeout(store):
    journal, _ = await store.open_loaded(options(buffer_timeout_ns=3600 * 10**9))
    for record_id in range(1, 11):
        journal.append(record_id, 1, b"x", sync=True)
    await bounded(journal.sync())  # one batch of ten: several writers are about
    await until(lambda: journal._writer_idle)
    batches = journal.statistics().batches
    waiting = journal.append(11, 1, b"y", sync=True)
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await bounded(journal.sync())
    assert waiting.done() and journal.statistics().batches == batches + 1
    await journal.close()


async def test_buffer_size_caps_a_batch(store):
    journal, _ = await store.open_loaded(options(buffer_size=1, buffer_timeout_ns=3600 * 10**9))
    await bounded(journal.sync())
    batches = journal.statistics().batches
    futures = [journal.append(index, 1, b"x", sync=False) for index in range(1, 6)]
    await bounded(asyncio.gather(*futures))  # full batches do not wait for the timeout
    assert journal.statistics().batches - batches == 5
    await journal.close()


async def test_rollover_keeps_each_record_inside_one_file(store):
    journal, _ = await store.open_loaded(options(pool_files=-1))
    for index in range(1, 101):
        journal.append(index, 1, bytes([index]) * (index * 5 % 300 + 1), sync=False)
    await bounded(journal.sync())
    await journal.close()
    data = store.data_files()
    assert len(data) >= 4
    assert [file_id for file_id, _ in data] == list(range(1, len(data) + 1))
    total = 0
    for _file_id, name in data:
        scan = scan_segment(store.read(name), store.header(name))
        assert scan.clean, (name, scan.damage)
        total += len(scan.bodies)
    assert total == 100
    journal, result = await store.open_loaded()
    assert [r.id for r in result.records] == list(range(1, 101))
    assert result.files == len(data)
    await journal.close()


async def test_dead_files_are_reclaimed_and_reused(store):
    journal, _ = await store.open_loaded(options(pool_files=-1))
    next_id = 1
    for _round in range(8):
        ids = list(range(next_id, next_id + 40))
        next_id += 40
        for record_id in ids:
            journal.append(record_id, 1, b"m" * 60, sync=False)
        for record_id in ids:
            journal.delete(record_id, sync=False)
        await bounded(journal.sync())
    journal.append(next_id, 1, b"last", sync=False)
    await bounded(journal.sync())
    statistics = journal.statistics()
    assert statistics.reclaimed_files > 5
    assert statistics.data_files + statistics.free_files <= 6  # files were reused
    await journal.close()
    # reused files keep their names but get new ids: names and ids disagree
    data = store.data_files()
    numbers = [int(name.rsplit("-", 1)[1].split(".")[0]) for _file_id, name in data]
    assert any(file_id != number for (file_id, _name), number in zip(data, numbers,
                                                                       strict=True))
    journal, result = await store.open_loaded()
    assert result.records == [RecordInfo(next_id, 1, b"last", False)]
    await journal.close()


async def test_pool_files_limits_the_free_files(store):
    journal, _ = await store.open_loaded(options(pool_files=0, min_files=1))
    for record_id in range(1, 200):
        journal.append(record_id, 1, b"m" * 60, sync=False)
        if record_id > 1:
            journal.delete(record_id - 1, sync=False)
    await bounded(journal.sync())
    statistics = journal.statistics()
    assert statistics.reclaimed_files > 3
    assert statistics.free_files == 0
    await journal.close()
    assert len(store.names()) == 1
    journal, result = await store.open_loaded(options(pool_files=0, min_files=1))
    assert [r.id for r in result.records] == [199]
    await journal.close()


async def test_replay_orders_files_by_header_id_not_name(store):
    journal, _ = await store.open_loaded(options(min_files=1))
    for index in range(1, 60):
        journal.append(index, 1, b"z" * 100, sync=False)
    await bounded(journal.sync())
    await journal.close()
    (first_id, first), (_, second) = store.data_files()[:2]
    # swap the two names: the content (and the header ids) stay put
    store.files.rename(store.directory / first, store.directory / "swap")
    store.files.rename(store.directory / second, store.directory / first)
    store.files.rename(store.directory / "swap", store.directory / second)
    assert store.header(second).file_id == first_id
    journal, result = await store.open_loaded(options(min_files=1))
    assert [r.id for r in result.records] == list(range(1, 60))
    await journal.close()


async def test_leftovers_are_cleaned_and_wrong_sizes_refused(store):
    journal, _ = await store.open_loaded()
    await bounded(journal.append(1, 1, b"a", sync=True))
    await journal.close()
    files, directory = store.files, store.directory
    for name in ("pybroker-data-99.pbj.tmp", "pybroker-data.pbc.tmp", "unrelated.txt"):
        files.open(directory / name, create=True).close()
    short = files.open(directory / "pybroker-data-50.pbj", create=True)
    short.pwrite(b"short", 0)
    short.close()
    journal, result = await store.open_loaded()
    assert [r.id for r in result.records] == [1]
    await journal.close()
    names = store.all_names()
    assert "unrelated.txt" in names
    assert not any(name.endswith(".tmp") for name in names)
    assert "pybroker-data-50.pbj" not in names
    wrong = files.open(directory / "pybroker-data-60.pbj", create=True)
    wrong.allocate(SMALL.file_size + 1)
    wrong.close()
    with pytest.raises(JournalError, match="is not 4096 bytes long"):
        await store.open()


async def test_two_journals_share_a_directory_by_name(store):
    data, _ = await store.open_loaded()
    bindings, _ = await store.open_loaded(options(name="bindings"))
    data.append(1, 1, b"data", sync=False)
    bindings.append(1, 1, b"binding", sync=False)
    await bounded(data.sync())
    await bounded(bindings.sync())
    await data.close()
    await bindings.close()
    assert store.names("bindings") and store.names("data")
    data, result = await store.open_loaded()
    assert [r.body for r in result.records] == [b"data"]
    await data.close()


async def test_a_new_epoch_starts_a_new_file_and_an_older_epoch_is_refused(store):
    journal, _ = await store.open_loaded(epoch=1)
    await bounded(journal.append(1, 1, b"epoch 1", sync=True))
    await journal.close()
    journal, result = await store.open_loaded(epoch=2)
    await bounded(journal.append(2, 1, b"epoch 2", sync=True))
    await journal.close()
    epochs = [store.header(name).epoch for _file_id, name in store.data_files()]
    assert epochs == [1, 2]
    journal, result = await store.open_loaded(epoch=2)
    assert [r.body for r in result.records] == [b"epoch 1", b"epoch 2"]
    await journal.close()
    journal = await store.open(epoch=1)
    with pytest.raises(JournalError, match="newer than this journal's epoch 1"):
        await journal.load()
    await journal.close()


async def test_close_writes_pending_records(store):
    journal, _ = await store.open_loaded(options(buffer_timeout_ns=3600 * 10**9))
    futures = [journal.append(index, 1, b"p" * 30, sync=index % 2 == 0)
               for index in range(1, 301)]
    await bounded(journal.close())
    assert all(future.done() and future.exception() is None for future in futures)
    journal, result = await store.open_loaded()
    assert len(result.records) == 300
    await journal.close()


async def test_fence_stops_the_journal_with_its_exception(store):
    calls = 0
    armed = asyncio.Event()

    def fence():
        nonlocal calls
        calls += 1
        if armed.is_set():
            raise LockLostError("a newer epoch owns the shared store")

    journal, _ = await store.open_loaded(fence=fence)
    await bounded(journal.append(1, 1, b"before", sync=True))
    assert calls >= 1
    armed.set()
    futures = [journal.append(index, 1, b"after", sync=True) for index in range(2, 5)]
    for future in futures:
        with pytest.raises(LockLostError, match="newer epoch"):
            await bounded(future)
    with pytest.raises(LockLostError):
        journal.append(10, 1, b"later", sync=False)
    with pytest.raises(LockLostError):
        await journal.sync()
    with pytest.raises(LockLostError):
        journal.commit(1, sync=False)
    await bounded(journal.close())
    journal, result = await store.open_loaded()
    assert [r.id for r in result.records] == [1]
    await journal.close()


async def test_unawaited_failures_are_not_logged_one_by_one(store, caplog):
    armed = asyncio.Event()

    def fence():
        if armed.is_set():
            raise LockLostError("fenced")

    journal, _ = await store.open_loaded(fence=fence)
    armed.set()
    for index in range(1, 50):
        journal.append(index, 1, b"x", sync=False)
    with pytest.raises(LockLostError):
        await bounded(journal.sync())
    await journal.close()
    with caplog.at_level(logging.ERROR):
        gc.collect()
    assert "never retrieved" not in caplog.text


async def test_statistics_snapshot(store):
    journal, _ = await store.open_loaded()
    journal.append(1, 1, b"a" * 10, sync=False)
    journal.append(2, 1, b"b" * 10, sync=False)
    journal.delete(1, sync=False)
    journal.append_tx(3, 3, 1, b"t")
    await bounded(journal.sync())
    statistics = journal.statistics()
    assert statistics.records_written == 4
    assert statistics.live_records == 1
    assert statistics.pending_transactions == 1
    assert statistics.bytes_written > 4 * 8
    assert statistics.batches >= 1 and statistics.fsyncs >= 1
    assert statistics.data_files == 1 and statistics.free_files >= 1
    assert statistics.live_bytes > 0
    await journal.close()


async def test_a_reopened_journal_writes_after_the_last_record(store):
    journal, _ = await store.open_loaded()
    await bounded(journal.append(1, 1, b"first", sync=True))
    await journal.close()
    (_, name), = store.data_files()
    end = scan_segment(store.read(name), store.header(name)).stop
    journal, _ = await store.open_loaded()
    await bounded(journal.append(2, 1, b"second", sync=True))
    await journal.close()
    scan = scan_segment(store.read(name), store.header(name))
    assert len(scan.bodies) == 2 and scan.stop > end > HEADER_SIZE
    journal, result = await store.open_loaded()
    assert state_of(result)[0] == [(1, 1, b"first", False), (2, 1, b"second", False)]
    await journal.close()


async def test_open_accepts_every_journal_type(store):
    for journal_type in ("NIO", "ASYNCIO", "MAPPED"):
        journal, _ = await store.open_loaded(options(journal_type=journal_type))
        await journal.close()


async def test_open_creates_the_directory(store):
    journal = await Journal.open(store.directory / "deeper", SMALL, store.files)
    assert store.files.exists(store.directory / "deeper")
    await journal.close()


async def test_a_fenced_broker_cannot_open_the_journal(store):
    def fence():
        raise LockLostError("epoch 7 owns the shared store")

    with pytest.raises(LockLostError, match="epoch 7"):
        await store.open(fence=fence)
