"""Compaction: same state after it, appends during it, a crash at every step of it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from journal_helpers import Store, bounded, options, quiesce, state_of

from pybroker.errors import JournalError
from pybroker.journal import Journal

OPTIONS = options(file_size=4096, min_files=2)


def build(journal: Journal) -> None:
    """A journal spread over several files: dead records, updates, every kind of transaction."""
    for record_id in range(1, 151):
        journal.append(record_id, 1, b"r" * 60 + bytes([record_id % 256]), sync=False)
    for record_id in range(1, 151, 3):
        journal.update(record_id, 2, b"u" * 20, sync=False)
    for record_id in range(1, 151):
        if record_id % 5:
            journal.delete(record_id, sync=False)
    journal.append_tx(1000, 500, 3, b"committed tx add")
    journal.delete_tx(1000, 5)
    journal.commit(1000, sync=False)
    journal.append_tx(2000, 600, 3, b"prepared tx add")
    journal.update_tx(2000, 10, 3, b"prepared tx update")
    journal.prepare(2000, b"xid-2000", sync=False)
    journal.append_tx(3000, 700, 3, b"open tx add")
    journal.delete_tx(3000, 15)


async def built(store: Store, opts=OPTIONS) -> Journal:
    journal, _ = await store.open_loaded(opts)
    build(journal)
    await quiesce(journal)
    return journal


async def reopened_state(store: Store, opts=OPTIONS) -> tuple:
    journal, result = await store.open_loaded(opts)
    await journal.close()
    return state_of(result)


async def test_compaction_keeps_the_state_and_frees_files(store):
    journal = await built(store)
    before = journal.statistics()
    assert before.data_files >= 4
    await bounded(journal.compact())
    after = journal.statistics()
    assert after.compactions == 1
    assert after.data_files < before.data_files
    assert after.free_files > before.free_files
    assert after.live_records == before.live_records
    assert after.pending_transactions == 2
    # transactions opened before the compaction finish after it
    journal.append_tx(3000, 701, 3, b"open tx, after compaction")
    await bounded(journal.commit(3000, sync=True))
    await bounded(journal.commit(2000, sync=True))
    journal.update(20, 4, b"update after compaction", sync=False)
    await bounded(journal.sync())
    await journal.close()
    compacted = await reopened_state(store)

    # the same operations without compaction give the same state
    other = Store(store.kind, *fresh(store))
    journal = await built(other)
    journal.append_tx(3000, 701, 3, b"open tx, after compaction")
    journal.commit(3000, sync=False)
    journal.commit(2000, sync=False)
    journal.update(20, 4, b"update after compaction", sync=False)
    await bounded(journal.sync())
    await journal.close()
    assert compacted == await reopened_state(other)
    records = compacted[0]
    assert (700, 3, b"open tx add", False) in records
    assert (15, 1, b"r" * 60 + bytes([15]), False) not in records


def fresh(store: Store):
    from pathlib import Path

    from pybroker.journal import MemoryFileFactory, OSFileFactory

    if store.memory:
        files = MemoryFileFactory()
        files.make_directory(Path("/memory/other"))
        return files, Path("/memory/other")
    return OSFileFactory(), store.directory.parent / "other"


async def test_reopen_after_compaction_gives_the_same_state(store):
    journal = await built(store)
    await journal.close()
    expected = await reopened_state(store)
    journal, _ = await store.open_loaded(OPTIONS)
    await bounded(journal.compact())
    await bounded(journal.compact())  # compacting compacted data changes nothing
    await journal.close()
    assert await reopened_state(store) == expected


async def started(journal: Journal, task: asyncio.Future) -> None:
    """Yield to the loop until the compaction has made its cut (no timed sleep)."""
    for _ in range(1000):
        if journal._compaction is not None or task.done():
            break
        await asyncio.sleep(0)
    assert journal._compaction is not None, "the compaction did not start"


async def test_appends_go_on_during_compaction(store):
    journal = await built(store)
    task = asyncio.ensure_future(journal.compact())
    await started(journal, task)
    # every kind of change to records and transactions that the compaction is rewriting,
    # including emptying the oldest file (which must not be freed under the compaction)
    for record_id in range(10, 61, 5):
        journal.delete(record_id, sync=False)
    journal.update(70, 9, b"during", sync=False)
    journal.append(900, 9, b"new during", sync=False)
    journal.append_tx(3000, 701, 3, b"open tx grows")
    journal.commit(3000, sync=False)
    journal.rollback(2000, sync=False)
    journal.append_tx(4000, 901, 1, b"new tx")
    assert not task.done()
    await bounded(task)
    # the operations made during the compaction are known after the swap
    journal.commit(4000, sync=False)
    journal.update(900, 9, b"after", sync=False)
    journal.delete(65, sync=False)
    await bounded(journal.sync())
    assert journal.statistics().compactions == 1
    assert journal.statistics().live_records == len(journal._tracker.live)
    await journal.close()
    state = await reopened_state(store)

    other = Store(store.kind, *fresh(store))
    journal = await built(other)
    for record_id in range(10, 61, 5):
        journal.delete(record_id, sync=False)
    journal.update(70, 9, b"during", sync=False)
    journal.append(900, 9, b"new during", sync=False)
    journal.append_tx(3000, 701, 3, b"open tx grows")
    journal.commit(3000, sync=False)
    journal.rollback(2000, sync=False)
    journal.append_tx(4000, 901, 1, b"new tx")
    journal.commit(4000, sync=False)
    journal.update(900, 9, b"after", sync=False)
    journal.delete(65, sync=False)
    await bounded(journal.sync())
    await journal.close()
    assert state == await reopened_state(other)


async def test_automatic_compaction(store):
    opts = options(file_size=4096, compact_min_files=3, compact_percentage=40)
    journal, _ = await store.open_loaded(opts)
    journal.append(1, 1, b"pins the first file", sync=False)
    for record_id in range(2, 400):
        journal.append(record_id, 1, b"c" * 80, sync=False)
        journal.delete(record_id, sync=False)
        task = journal._compaction_task
        if task is not None:
            break
    assert task is not None, "no compaction started"
    await bounded(asyncio.shield(task))
    statistics = journal.statistics()
    assert statistics.compactions == 1
    assert statistics.data_files <= 2
    await journal.close()
    journal, result = await store.open_loaded(opts)
    assert [r.id for r in result.records] == [1]
    await journal.close()


async def test_compact_min_files_zero_disables_automatic_compaction(store):
    journal, _ = await store.open_loaded(options(compact_min_files=0))
    journal.append(1, 1, b"pins the first file", sync=False)
    for record_id in range(2, 400):
        journal.append(record_id, 1, b"c" * 80, sync=False)
        journal.delete(record_id, sync=False)
    await bounded(journal.sync())
    assert journal._compaction_task is None
    assert journal.statistics().data_files > 5
    await journal.close()


# ------------------------------------------------------------------------------ crash at every op


async def expected_after_crash(memory_store: Store) -> tuple:
    journal = await built(memory_store)
    memory_store.crash()
    await journal.close()
    state = await reopened_state(memory_store)
    memory_store.crash()
    return state


@pytest.mark.parametrize("permanent", [True, False], ids=["device-gone", "one-fault"])
async def test_a_crash_at_every_step_of_compaction_loads_the_same_state(permanent, caplog):
    from journal_helpers import Store as StoreType

    from pybroker.journal import MemoryFileFactory
    from pybroker.journal.segment import control_name

    def new_store() -> StoreType:
        files = MemoryFileFactory()
        from pathlib import Path

        files.make_directory(Path("/m"))
        return StoreType("memory", files, Path("/m"))

    expected = await expected_after_crash(new_store())
    outcomes = []
    for step in range(200):
        store = new_store()
        journal = await built(store)
        files = store.files
        files.inject_fault(after=step, permanent=permanent)
        try:
            await bounded(journal.compact())
            outcome = "compacted"
        except JournalError:
            outcome = "failed"
        fired = files.fault_fired
        if not permanent and outcome == "failed":
            # the journal goes on after a failed compaction (or failed for good on a write)
            try:
                await bounded(journal.append(10**6, 1, b"after", sync=True))
                outcome = "failed, journal fine"
            except JournalError:
                outcome = "failed, journal failed"
        outcomes.append(outcome)
        for keep_pending in (False, True):
            if keep_pending and not store.memory:
                continue
            store.files = files
            crashed = store.files.crash(keep=10**9 if keep_pending else 0)
            store.files = crashed
            with caplog.at_level(logging.WARNING, logger="pybroker.journal"):
                state = await reopened_state(store)
            records = [record for record in state[0] if record[0] != 10**6]
            assert (records, state[1]) == expected, (step, outcome, keep_pending)
            assert not store.files.exists(store.directory / control_name("data"))
            files = store.files
        await journal.close()
        if not fired:
            break
    else:
        pytest.fail("the compaction never completed without a fault")
    assert outcomes[-1] == "compacted"
    assert len(outcomes) > 20
    assert "failed" in outcomes[0]


async def test_a_compaction_error_does_not_stop_the_journal(memory_store):
    journal = await built(memory_store)
    memory_store.files.inject_fault(after=0, kinds={"create"})
    with pytest.raises(JournalError, match=r"compaction|injected"):
        await bounded(journal.compact())
    await bounded(journal.append(10**6, 1, b"still writing", sync=True))
    await bounded(journal.compact())
    assert journal.statistics().compactions == 1
    await journal.close()



class SteppedFence:
    """A fence that starts raising after ``allowed`` calls once armed, and notes how many
    I/O operations the memory file system had seen at that moment."""

    def __init__(self, files) -> None:
        self.files = files
        self.allowed: int | None = None
        self.calls = 0
        self.fired_at: int | None = None

    def __call__(self) -> None:
        from pybroker.errors import LockLostError

        if self.allowed is None:
            return
        self.calls += 1
        if self.calls > self.allowed:
            if self.fired_at is None:
                self.fired_at = self.files.statistics.operations
            raise LockLostError("a newer epoch owns the journal")


async def test_a_fence_stops_compaction_at_every_step_and_nothing_is_written_after():
    from pathlib import Path

    from pybroker.errors import LockLostError
    from pybroker.journal import MemoryFileFactory

    expected = None
    for step in range(-1, 100):
        files = MemoryFileFactory()
        files.make_directory(Path("/f"))
        store = Store("memory", files, Path("/f"))
        fence = SteppedFence(files)
        journal = await Journal.open(store.directory, OPTIONS, files, fence=fence)
        await bounded(journal.load())
        build(journal)
        await quiesce(journal)
        if expected is None:  # the state every fenced compaction must leave
            await journal.close()
            expected = await reopened_state(store)
            continue
        fence.allowed = step
        try:
            await bounded(journal.compact())
            outcome = "compacted"
        except LockLostError:
            outcome = "fenced"
            with pytest.raises(LockLostError):
                journal.append(10**6, 1, b"refused", sync=False)
        await bounded(journal.close())
        if fence.fired_at is not None:
            assert files.statistics.operations == fence.fired_at, "wrote after the fence"
        fence.allowed = None
        assert await reopened_state(store) == expected, step
        if outcome == "compacted" and fence.fired_at is None:
            break
    else:
        pytest.fail("the compaction never completed")
    assert step > 3
