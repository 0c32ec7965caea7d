"""LargeMessageStore: bodies written in chunks and read back in slices, on real files and on
the crashable memory file system; crashes mid-write, aborts, orphans, back-pressure, failures."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from pathlib import Path

import pytest
from support import FilePlace, GatedFiles, bounded, wait_thread_event

from pybroker.errors import StorageError
from pybroker.journal import MemoryFileFactory, OSFileFactory
from pybroker.journal.files import FileFactory
from pybroker.storage.large import LargeMessageStore, large_message_file_name

MEMORY_ROOT = Path("/memory/large-messages")


class Place(FilePlace):
    """A large-messages directory on one file factory."""

    async def store(self, *, sync: bool = True, files: FileFactory | None = None
                    ) -> LargeMessageStore:
        store = LargeMessageStore(self.directory, files=files or self.files, sync=sync)
        await bounded(store.start())
        return store

    def make_file(self, name: str, data: bytes = b"x") -> None:
        handle = self.files.open(self.directory / name, create=True)
        handle.pwrite(data, 0)
        handle.close()


@pytest.fixture(params=["os", "memory"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "os":
        return Place("os", OSFileFactory(), tmp_path / "large-messages")
    return Place("memory", MemoryFileFactory(), MEMORY_ROOT)


@pytest.fixture
def memory_place() -> Place:
    return Place("memory", MemoryFileFactory(), MEMORY_ROOT)


# --------------------------------------------------------------------------------------------
# Round trips


async def test_5_mib_in_random_chunks_reads_back_in_random_slices(place):
    rng = random.Random(5)
    body = rng.randbytes(5 << 20)
    store = await place.store()
    writer = store.create(42)
    position = 0
    while position < len(body):
        size = rng.choice([1, 7, 512, 4096, 65536, rng.randint(1, 300_000)])
        chunk = body[position:position + size]
        writer.write(bytearray(chunk) if size % 2 else chunk)  # copies non-bytes
        position += len(chunk)
    assert writer.size == len(body)
    assert await bounded(writer.finish()) == len(body)
    assert writer.state == "finished" and writer.pending_bytes == 0
    assert await store.file_size(42) == len(body)
    assert await store.list_ids() == {42}

    reader = await store.open_reader(42)
    assert reader.size == len(body)
    for _ in range(200):
        offset = rng.randrange(len(body))
        length = rng.randint(0, 200_000)
        assert await bounded(reader.read(offset, length)) == body[offset:offset + length]
    digest = hashlib.sha256()
    offset = 0
    while offset < reader.size:
        chunk = await bounded(reader.read(offset, rng.randint(1, 1 << 20)))
        digest.update(chunk)
        offset += len(chunk)
    assert digest.digest() == hashlib.sha256(body).digest()
    assert await reader.read(len(body), 10) == b"" and await reader.read(len(body) - 3, 10) == \
        body[-3:]
    with pytest.raises(StorageError, match="bad slice"):
        await reader.read(-1, 5)
    await reader.close()
    await reader.close()  # idempotent
    with pytest.raises(StorageError, match="reader is closed"):
        await reader.read(0, 1)
    await bounded(store.close())


async def test_an_empty_body_and_several_bodies_at_once(place):
    store = await place.store()
    empty = store.create(1)
    assert await bounded(empty.finish()) == 0
    assert await store.file_size(1) == 0
    bodies = {number: bytes([number]) * (number * 10_000) for number in range(2, 8)}
    writers = {number: store.create(number) for number in bodies}
    for offset in range(0, 70_000, 3_000):  # interleaved transfers
        for number, writer in writers.items():
            chunk = bodies[number][offset:offset + 3_000]
            if chunk:
                writer.write(chunk)
    sizes = await bounded(asyncio.gather(*(writer.finish() for writer in writers.values())))
    assert sizes == [len(body) for body in bodies.values()]
    for number, body in bodies.items():
        reader = await store.open_reader(number)
        assert await reader.read(0, reader.size) == body
        await reader.close()
    assert await store.list_ids() == {1, *bodies}
    await bounded(store.close())


async def test_file_names_and_list_ids_ignore_other_files(place):
    store = await place.store()
    writer = store.create(1234)
    writer.write(b"body")
    await bounded(writer.finish())
    for name in ("99.msg.tmp", "7.sync", "notes.txt", "abc.msg", "-5.msg"):
        place.make_file(name)
    assert large_message_file_name(1234) == "1234.msg"
    assert "1234.msg" in place.files.list_directory(place.directory)
    assert await store.list_ids() == {1234}
    await bounded(store.close())


async def test_delete_and_file_size(place):
    store = await place.store()
    writer = store.create(5)
    writer.write(b"12345")
    await bounded(writer.finish())
    assert await store.file_size(5) == 5 and await store.file_size(6) is None
    await store.delete(5)
    assert await store.file_size(5) is None and await store.list_ids() == set()
    await store.delete(5)  # nothing left to delete: fine (crash recovery may repeat it)
    with pytest.raises(StorageError, match="no body file"):
        await store.open_reader(5)
    await bounded(store.close())


async def test_misuse_is_refused(place):
    store = LargeMessageStore(place.directory, files=place.files)
    with pytest.raises(StorageError, match="not started"):
        store.create(1)
    await store.start()
    writer = store.create(1)
    with pytest.raises(StorageError, match="already being written"):
        store.create(1)
    with pytest.raises(StorageError, match="abort the writer"):
        await store.delete(1)
    with pytest.raises(StorageError, match="64-bit"):
        store.create(-1)
    writer.write(b"abc")
    await bounded(writer.finish())
    with pytest.raises(StorageError, match="write is not allowed when finished"):
        writer.write(b"more")
    with pytest.raises(StorageError, match="finish is not allowed when finished"):
        await writer.finish()
    again = store.create(1)  # the id is free again, but its file exists
    again.write(b"x")
    with pytest.raises(StorageError, match="create failed"):
        await bounded(again.finish())
    await again.abort()
    await bounded(store.close())


# --------------------------------------------------------------------------------------------
# Abort and crashes


async def test_abort_deletes_the_partial_file(place):
    store = await place.store()
    writer = store.create(9)
    writer.write(b"a" * 100_000)
    await bounded(writer.wait_writable(0))
    assert await store.file_size(9) == 100_000
    await bounded(writer.abort())
    assert writer.state == "aborted"
    assert await store.file_size(9) is None and await store.list_ids() == set()
    with pytest.raises(StorageError, match="when aborted"):
        writer.write(b"more")
    await writer.abort()  # idempotent
    never_written = store.create(10)
    await bounded(never_written.abort())  # no file was ever created
    assert await store.list_ids() == set()
    await bounded(store.close())


async def test_abort_while_the_writer_is_busy(place):
    gated = GatedFiles(place.files)
    store = await place.store(files=gated)
    writer = store.create(3)
    gated.gate.clear()
    writer.write(b"x" * 10_000)
    await wait_thread_event(gated.entered)
    writer.write(b"y" * 10_000)
    aborting = asyncio.ensure_future(writer.abort())
    await asyncio.sleep(0)
    assert not aborting.done()  # it waits for the write in progress
    gated.gate.set()
    await bounded(aborting)
    assert await store.file_size(3) is None
    await bounded(store.close())


async def test_a_crash_mid_write_leaves_a_short_file_that_file_size_reveals(memory_place):
    place = memory_place
    store = await place.store()
    writer = store.create(77)
    for _ in range(8):
        writer.write(b"z" * 50_000)
        await bounded(writer.wait_writable(0))  # one write each: eight pending operations
    assert writer.size == 400_000
    pending = place.files.pending_operations
    assert pending >= 8
    recorded_size = writer.size  # what the message record would say after finish()
    sizes = set()
    for keep in range(pending + 1):
        for torn in (None, 1000):
            files = MemoryFileFactory()
            again = Place("memory", files, MEMORY_ROOT)
            store2 = await again.store()
            writer2 = store2.create(77)
            for _ in range(8):
                writer2.write(b"z" * 50_000)
                await bounded(writer2.wait_writable(0))
            again.crash(keep=keep, torn_bytes=torn)
            await bounded(store2.close())
            store3 = await again.store()
            size = await store3.file_size(77)
            sizes.add(size)
            if size is not None:  # the restart finds the orphan and sees it is incomplete
                assert 77 in await store3.list_ids()
                assert size < recorded_size or keep == pending
                reader = await store3.open_reader(77)
                assert await reader.read(0, size) == b"z" * size
                await reader.close()
                await store3.delete(77)
            assert await store3.list_ids() == set()
            await bounded(store3.close())
    assert None in sizes and len(sizes) > 4  # from no file at all to the whole body
    await bounded(store.close())


async def test_finish_with_sync_survives_a_crash_and_without_sync_may_not(memory_place):
    place = memory_place
    store = await place.store(sync=True)
    writer = store.create(1)
    writer.write(b"durable" * 1000)
    assert await bounded(writer.finish()) == 7000
    place.crash()
    store = await place.store()
    assert await store.file_size(1) == 7000
    await bounded(store.close())

    unsynced = Place("memory", MemoryFileFactory(), MEMORY_ROOT)
    store = await unsynced.store(sync=False)
    writer = store.create(2)
    writer.write(b"lost" * 1000)
    assert await bounded(writer.finish()) == 4000
    assert unsynced.files.statistics.syncs == 0  # large-message-sync=false: no fdatasync
    unsynced.crash()
    store = await unsynced.store()
    assert await store.file_size(2) is None  # neither the data nor the name were durable
    await bounded(store.close())


async def test_a_reader_of_a_short_file_fails_instead_of_returning_less(place):
    store = await place.store()
    writer = store.create(8)
    writer.write(b"q" * 1000)
    await bounded(writer.finish())
    reader = await store.open_reader(8)
    reader.size = 2000  # as if the record said 2000 bytes and the file lost its tail
    with pytest.raises(StorageError, match="before its size 2000"):
        await reader.read(500, 1000)
    await reader.close()
    await bounded(store.close())


# --------------------------------------------------------------------------------------------
# Failures


@pytest.mark.parametrize("kind", ["create", "write", "datasync", "sync_directory"])
async def test_a_failed_write_or_sync_fails_the_writer(memory_place, kind):
    place = memory_place
    store = await place.store()
    writer = store.create(4)
    place.files.inject_fault(kinds={kind})
    writer.write(b"a" * 1000)
    if kind in ("create", "write"):
        with pytest.raises(StorageError, match=f"{kind} failed"):
            await bounded(writer.wait_writable(0))
        with pytest.raises(StorageError, match="failed"):
            writer.write(b"more")
    with pytest.raises(StorageError, match="failed"):
        await bounded(writer.finish())
    assert writer.state == "failed"
    await bounded(writer.abort())  # deletes whatever was written
    assert await store.list_ids() == set()
    fresh = store.create(4)  # the store itself is fine
    fresh.write(b"ok")
    assert await bounded(fresh.finish()) == 2
    await bounded(store.close())


# --------------------------------------------------------------------------------------------
# Back-pressure and the event loop


async def test_wait_writable_releases_once_the_writer_caught_up(place):
    gated = GatedFiles(place.files)
    store = await place.store(files=gated)
    writer = store.create(11)
    gated.gate.clear()
    for _ in range(10):
        writer.write(b"p" * 100_000)
    assert writer.pending_bytes == 1_000_000
    await wait_thread_event(gated.entered)
    waiters = [asyncio.ensure_future(writer.wait_writable(limit))
               for limit in (0, 500_000, 2_000_000)]
    await asyncio.sleep(0)
    assert [waiter.done() for waiter in waiters] == [False, False, True]
    gated.gate.set()
    await bounded(asyncio.gather(*waiters))
    assert writer.pending_bytes == 0
    assert gated.writes < 10  # queued chunks were joined into larger writes
    assert await bounded(writer.finish()) == 1_000_000
    await bounded(store.close())


async def test_writes_never_run_on_the_loop_thread(place):
    gated = GatedFiles(place.files)
    store = await place.store(files=gated)
    writer = store.create(12)
    gated.gate.clear()
    writer.write(b"w" * 10_000)  # returns although the disk is "stuck"
    await wait_thread_event(gated.entered)
    ticks = 0
    for _ in range(100):  # the loop keeps running meanwhile
        await asyncio.sleep(0)
        ticks += 1
    writer.write(b"v" * 10_000)
    assert writer.pending_bytes == 20_000 and ticks == 100
    gated.gate.set()
    await bounded(writer.finish())
    assert gated.threads and threading.get_ident() not in gated.threads
    await bounded(store.close())


async def test_close_aborts_open_writers(place):
    store = await place.store()
    writer = store.create(13)
    writer.write(b"unfinished")
    await bounded(store.close())
    assert writer.state == "aborted"
    store = await place.store()
    assert await store.list_ids() == set()
    await bounded(store.close())
