"""PageStore: page files of one address on real files and on the crashable memory file system.

Round trips across rollover, the Artemis layout, scan, torn tails cut and appended after,
damage refused with file and offset, deletion, write/sync failures, a crash at every I/O
operation of a run of appends, and a property test of appends, deletions and crashes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TIMEOUT, FilePlace, GatedFiles, bounded

from pybroker.errors import StorageError
from pybroker.journal import MemoryFileFactory, OSFileFactory
from pybroker.storage.paging import (
    ADDRESS_FILE,
    DELETED_FILE,
    PagedRecord,
    PagePosition,
    PageStore,
    decode_page,
    encode_paged_record,
    page_file_name,
    parse_page_file_name,
)

MEMORY_ROOT = Path("/memory/paging")


class Place(FilePlace):
    """A paging directory on one file factory, with helpers to look at and damage files."""

    def read(self, path: Path) -> bytes:
        handle = self.files.open(path)
        try:
            return handle.pread(handle.size(), 0)
        finally:
            handle.close()

    def damage(self, path: Path, offset: int, data: bytes) -> None:
        """Overwrite bytes of a file, durably."""
        if isinstance(self.files, MemoryFileFactory):
            self.files.write_file_durably(path, offset, data)
        else:
            with open(path, "r+b") as handle:
                handle.seek(offset)
                handle.write(data)

    def names(self, folder: Path) -> list[str]:
        return self.files.list_directory(folder)

    async def create(self, address: str = "orders", *, page_size: int = 1024,
                     sync: bool = True) -> PageStore:
        return await PageStore.create(self.directory, address, page_size_bytes=page_size,
                                      files=self.files, sync=sync)

    async def reopen(self, folder: Path, *, page_size: int = 1024, sync: bool = True):
        store = await PageStore.open(folder, page_size_bytes=page_size, files=self.files,
                                     sync=sync)
        return store, await bounded(store.load())


@pytest.fixture(params=["os", "memory"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "os":
        return Place("os", OSFileFactory(), tmp_path / "paging")
    return Place("memory", MemoryFileFactory(), MEMORY_ROOT)


@pytest.fixture
def memory_place() -> Place:
    return Place("memory", MemoryFileFactory(), MEMORY_ROOT)


def record(number: int, size: int | None = None) -> PagedRecord:
    """A deterministic record; sizes vary from 0 to ~600 bytes."""
    length = (number * 37) % 600 if size is None else size
    return PagedRecord(number, tuple(range(number % 4)), bytes([number % 251]) * length,
                       number if number % 5 == 0 else None)


async def read_all(store: PageStore) -> list[tuple[PagePosition, PagedRecord]]:
    found = []
    for page in store.pages:
        for index, item in enumerate(await bounded(store.read_page(page))):
            found.append((PagePosition(page, index), item))
    return found


# --------------------------------------------------------------------------------------------
# Framing and names (sans-I/O)


def test_page_file_names_have_nine_digits():
    assert page_file_name(1) == "000000001.page"
    assert page_file_name(1234567890) == "1234567890.page"
    assert parse_page_file_name("000000042.page") == 42
    for name in ("42.page", "000000000.page", "000000001.page.tmp", "address.txt", "x.page"):
        assert parse_page_file_name(name) is None


def test_every_prefix_of_a_record_is_a_torn_tail_and_every_bit_flip_is_caught():
    framed = encode_paged_record(PagedRecord(7, (1, 2), b"hello world", 9))
    assert decode_page(framed).records == [PagedRecord(7, (1, 2), b"hello world", 9)]
    for cut in range(1, len(framed)):
        scan = decode_page(framed[:cut])
        assert scan.count == 0 and scan.stop == 0 and scan.next_valid is None
        # a prefix of zeros (the high bytes of the length) reads as the end of the data
        assert scan.damage is not None or framed[:cut].count(0) == cut
    for bit in range(len(framed) * 8):
        damaged = bytearray(framed)
        damaged[bit // 8] ^= 1 << (bit % 8)
        scan = decode_page(bytes(damaged))
        assert scan.count == 0 and scan.damage is not None, f"bit {bit} flip not detected"


def test_zeros_after_the_records_are_the_end_of_data_but_a_zeroed_hole_is_damage():
    first = encode_paged_record(record(1))
    second = encode_paged_record(record(2))
    scan = decode_page(first + second + bytes(100))
    assert scan.count == 2 and scan.damage is None and scan.stop == len(first + second)
    scan = decode_page(first + bytes(len(second)) + second)
    assert scan.count == 1 and scan.damage is not None and scan.stop == len(first)
    assert scan.next_valid == len(first) + len(second)


@pytest.mark.parametrize("bad", [
    PagedRecord(-1, (), b""),
    PagedRecord(1 << 64, (), b""),
    PagedRecord(1, (-3,), b""),
    PagedRecord(1, ("q",), b""),  # type: ignore[arg-type]
    PagedRecord(1, (), "text"),  # type: ignore[arg-type]
    PagedRecord(1, (), b"", -1),
])
def test_bad_records_are_refused(bad):
    with pytest.raises(StorageError):
        encode_paged_record(bad)


# --------------------------------------------------------------------------------------------
# Round trips and layout


async def test_appends_round_trip_across_rollover_in_order(place):
    store = await place.create(page_size=2048)
    records = [record(number) for number in range(1, 121)]
    positions = await bounded(asyncio.gather(*(store.append(item) for item in records)))
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert store.pages == tuple(range(1, store.current_page + 1)) and store.current_page > 3
    # indexes run 0..n-1 within each page; pages respect the page size
    for page in store.pages:
        indexes = [position.index for position in positions if position.page == page]
        assert indexes == list(range(len(indexes)))
        assert store.page_records(page) == len(indexes)
    assert await read_all(store) == list(zip(positions, records, strict=True))
    assert store.record_count == 120
    assert store.size_bytes == sum(len(encode_paged_record(item)) for item in records)
    await bounded(store.close())

    store, loaded = await place.reopen(store.folder, page_size=2048)
    assert loaded.record_count == 120 and loaded.truncated is None
    assert loaded.first_page == 1 and loaded.last_page == len(loaded.pages)
    assert [info.records for info in loaded.pages] == [
        sum(1 for position in positions if position.page == page) for page in store.pages]
    for info in loaded.pages:
        assert info.size_bytes <= 2048
    assert await read_all(store) == list(zip(positions, records, strict=True))
    # appends continue after the last record
    position = await bounded(store.append(record(500)))
    assert position > positions[-1]
    await bounded(store.close())


async def test_a_record_bigger_than_a_page_gets_a_page_of_its_own(place):
    store = await place.create(page_size=512)
    small = await bounded(store.append(record(1, 10)))
    big = await bounded(store.append(record(2, 5000)))
    after = await bounded(store.append(record(3, 10)))
    assert (small, big, after) == (PagePosition(1, 0), PagePosition(2, 0), PagePosition(3, 0))
    assert [item.data for item in await store.read_page(2)] == [record(2, 5000).data]
    await bounded(store.close())


async def test_layout_is_artemis_uuid_folder_address_file_and_numbered_pages(place):
    store = await place.create("jms.queue.Orders", page_size=200)
    assert store.folder.parent == place.directory
    uuid.UUID(store.folder.name)  # a random UUID
    for number in range(8):
        store.append(record(number, 100))
    await bounded(store.close())
    names = place.names(store.folder)
    assert place.read(store.folder / ADDRESS_FILE) == b"jms.queue.Orders\n"
    pages = [name for name in names if name != ADDRESS_FILE]
    assert pages and all(re.fullmatch(r"[0-9]{9}\.page", name) for name in pages)
    assert pages[0] == "000000001.page"


async def test_sync_false_fdatasyncs_only_when_a_page_is_left(place):
    store = await place.create(page_size=1 << 20, sync=False)
    for number in range(50):
        await bounded(store.append(record(number)))
    assert store.statistics().fsyncs == 0
    await bounded(store.close())
    store = await place.create("other", page_size=300, sync=False)
    for number in range(6):
        await bounded(store.append(record(number, 250)))
    assert store.current_page == 6 and store.statistics().fsyncs == 5
    await bounded(store.close())


async def test_a_clean_close_leaves_durable_pages_even_without_sync(memory_place):
    place = memory_place
    store = await place.create(page_size=1 << 20, sync=False)
    positions = [await bounded(store.append(record(number))) for number in range(10)]
    assert store.statistics().fsyncs == 0
    await bounded(store.close())
    place.crash()
    store, _ = await place.reopen(store.folder, sync=False)
    assert [position for position, _ in await read_all(store)] == positions
    await bounded(store.close())


async def test_the_writer_thread_exits_when_idle_and_comes_back(place, monkeypatch):
    import pybroker.storage.paging as paging

    monkeypatch.setattr(paging, "_IDLE_EXIT_SECONDS", 0.05)
    store = await place.create()
    await bounded(store.append(record(1)))
    writer = store._writer
    assert writer is not None and writer.is_alive()
    await asyncio.get_running_loop().run_in_executor(None, writer.join, TIMEOUT)
    assert not writer.is_alive() and store._writer is None
    assert await bounded(store.append(record(2))) == PagePosition(1, 1)
    assert store._writer is not None and store._writer is not writer
    await bounded(store.close())
    store, _ = await place.reopen(store.folder)
    assert [item for _, item in await read_all(store)] == [record(1), record(2)]
    await bounded(store.close())


async def test_group_commit_one_fdatasync_per_batch(place):
    gated = GatedFiles(place.files)
    store = await PageStore.create(place.directory, "a", page_size_bytes=1 << 20, files=gated)
    gated.gate.clear()
    gated.entered.clear()  # (address.txt was written through it too)
    first = store.append(record(0))
    assert await asyncio.get_running_loop().run_in_executor(None, gated.entered.wait, TIMEOUT)
    rest = [store.append(record(number)) for number in range(1, 100)]
    assert store.pending_bytes > 0 and not first.done()
    gated.gate.set()
    await bounded(asyncio.gather(first, *rest))
    statistics = store.statistics()
    assert statistics.batches == 2 and statistics.fsyncs == 2
    assert statistics.largest_batch == 99 and statistics.records_appended == 100
    assert statistics.pending_bytes == 0
    await bounded(store.close())


async def test_the_loop_never_waits_for_the_disk(place):
    gated = GatedFiles(place.files)
    store = await PageStore.create(place.directory, "a", page_size_bytes=4096, files=gated)
    gated.gate.clear()
    gated.entered.clear()  # (address.txt was written through it too)
    futures = [store.append(record(number)) for number in range(20)]
    ticks = 0
    while not gated.entered.is_set() or ticks < 50:  # the loop keeps running meanwhile
        await asyncio.sleep(0)
        ticks += 1
        assert ticks < 100_000
    assert not any(future.done() for future in futures)
    waiting = asyncio.ensure_future(store.wait_writable(0))
    await asyncio.sleep(0)
    assert not waiting.done()
    gated.gate.set()
    await bounded(waiting)
    await bounded(asyncio.gather(*futures))
    assert threading.get_ident() not in gated.threads
    await bounded(store.close())


# --------------------------------------------------------------------------------------------
# Scan


async def test_scan_finds_folders_by_their_address_file(place, caplog):
    assert await PageStore.scan(place.directory, place.files) == {}  # no directory yet
    folders = {}
    for address in ("a", "b.c", "ünïcode/with spaces"):
        store = await place.create(address)
        await bounded(store.append(record(1)))
        await bounded(store.close())
        folders[address] = store.folder
    # folders that are not page folders: empty, junk only, bad address files
    files = place.files
    for name, content in (("empty", None), ("junk", b"nothing"), ("blank", b"\n"),
                          ("binary", b"\xff\xfe\n"), ("two-lines", b"a\nb\n")):
        folder = place.directory / name
        files.make_directory(folder)
        if content is not None:
            target = ADDRESS_FILE if name != "junk" else "junk.bin"
            handle = files.open(folder / target, create=True)
            handle.pwrite(content, 0)
            handle.close()
    with caplog.at_level(logging.WARNING, logger="pybroker.paging"):
        found = await bounded(PageStore.scan(place.directory, files))
    assert found == folders
    for name in ("empty", "junk", "blank", "binary", "two-lines"):
        assert str(place.directory / name) in caplog.text
        assert files.exists(place.directory / name)  # never deleted


async def test_scan_refuses_two_folders_for_one_address(place):
    for _ in range(2):
        await bounded((await place.create("twice")).close())
    with pytest.raises(StorageError, match="'twice' has two page folders"):
        await PageStore.scan(place.directory, place.files)


async def test_open_needs_a_valid_address_file(place):
    folder = place.directory / "no-address"
    place.files.make_directory(folder)
    with pytest.raises(StorageError, match=r"no valid address\.txt"):
        await PageStore.open(folder, page_size_bytes=1024, files=place.files)


async def test_append_before_load_is_refused_naming_the_state(place):
    store = await place.create()
    await bounded(store.close())
    store = await PageStore.open(store.folder, page_size_bytes=1024, files=place.files)
    with pytest.raises(StorageError, match="append is not allowed when opened"):
        store.append(record(1))
    await store.load()
    with pytest.raises(StorageError, match="load is not allowed when ready"):
        await store.load()
    await bounded(store.close())
    with pytest.raises(StorageError, match="when closed"):
        store.append(record(2))


# --------------------------------------------------------------------------------------------
# Torn tails and damage


def expected_layout(count: int, page_size: int = 1024) -> list[tuple[PagePosition, PagedRecord]]:
    """The (position, record) list of write_pages, by the rollover rule."""
    page, index, used = 1, 0, 0
    out = []
    for number in range(1, count + 1):
        item = record(number, 60 + number % 7)
        size = len(encode_paged_record(item))
        if index and used + size > page_size:
            page, index, used = page + 1, 0, 0
        out.append((PagePosition(page, index), item))
        index += 1
        used += size
    return out


async def write_pages(place: Place, count: int = 45, *, page_size: int = 1024) -> PageStore:
    store = await place.create(page_size=page_size)
    positions = await bounded(asyncio.gather(*(store.append(record(number, 60 + number % 7))
                                               for number in range(1, count + 1))))
    assert list(zip(positions, [r for _, r in expected_layout(count, page_size)],
                    strict=True)) == expected_layout(count, page_size)
    assert store.page_records(store.current_page) >= 4  # the tests below need a few
    await bounded(store.close())
    return store


def record_offsets(data: bytes) -> list[int]:
    """Offsets of the records of a page image, and its end."""
    scan = decode_page(data)
    offsets = [0]
    for item in scan.records or []:
        offsets.append(offsets[-1] + len(encode_paged_record(item)))
    return offsets


@pytest.mark.parametrize("damage", ["torn", "zeroed body", "bit flip", "zeroed crc",
                                    "garbage after", "huge length"])
async def test_a_torn_tail_is_cut_and_the_next_record_goes_after_the_last_valid_one(
        place, caplog, damage):
    store = await write_pages(place)
    expected = expected_layout(45)
    last_page = store.current_page
    path = store.folder / page_file_name(last_page)
    data = place.read(path)
    offsets = record_offsets(data)
    last, end = offsets[-2], offsets[-1]
    survivors = len(expected) - 1
    if damage == "torn":  # the end of the last record never reached the disk
        place.damage(path, last + 30, bytes(end - last - 30))
    elif damage == "zeroed body":
        place.damage(path, last + 8, bytes(end - last - 8))
    elif damage == "bit flip":
        place.damage(path, last + 20, bytes([data[last + 20] ^ 0x10]))
    elif damage == "zeroed crc":
        place.damage(path, last + 5, bytes(end - last - 5))
    elif damage == "garbage after":  # a torn write after the last record
        place.damage(path, end, b"\x00\x00\x01\x00\xde\xad\xbe\xef\x94\x01")
        last, survivors = end, len(expected)
    else:
        place.damage(path, last, b"\x7f\xff")
    kept = sum(1 for position, _ in expected[:survivors] if position.page == last_page)
    with caplog.at_level(logging.WARNING, logger="pybroker.paging"):
        store, loaded = await place.reopen(store.folder)
    truncated = loaded.truncated
    assert truncated is not None and truncated.offset == last and truncated.bytes_dropped > 0
    assert truncated.file == str(path)
    assert str(path) in caplog.text and f"offset {last}" in caplog.text
    assert loaded.record_count == survivors and store.page_records(last_page) == kept
    # the cut bytes are zeros now, and the next record goes where the torn one began
    image = place.read(path)
    assert image[:last] == data[:last] and image[last:].count(0) == len(image) - last
    extra = record(1000, 70)
    position = await bounded(store.append(extra))
    fits = last + len(encode_paged_record(extra)) <= 1024
    assert position == (PagePosition(last_page, kept) if fits else PagePosition(last_page + 1, 0))
    await bounded(store.close())
    store, again = await place.reopen(store.folder)
    assert again.truncated is None and again.record_count == survivors + 1
    assert await read_all(store) == [*expected[:survivors], (position, extra)]
    await bounded(store.close())


@pytest.mark.parametrize("where", ["last page, mid", "earlier page, mid", "earlier page, end",
                                   "zeroed hole"])
async def test_damage_that_is_not_a_torn_tail_raises_with_file_and_offset(place, where):
    store = await write_pages(place)
    page = store.current_page if where in ("last page, mid", "zeroed hole") else 1
    path = store.folder / page_file_name(page)
    data = place.read(path)
    offsets = record_offsets(data)
    target = offsets[-2] if where == "earlier page, end" else offsets[1]
    if where == "zeroed hole":
        place.damage(path, target, bytes(offsets[2] - offsets[1]))
    else:
        place.damage(path, target + 15, bytes([data[target + 15] ^ 0x01]))
    damaged = place.read(path)
    store = await PageStore.open(store.folder, page_size_bytes=1024, files=place.files)
    with pytest.raises(StorageError) as caught:
        await bounded(store.load())
    message = str(caught.value)
    assert str(path) in message and f"offset {target}" in message
    assert place.read(path) == damaged  # nothing was "repaired"
    with pytest.raises(StorageError, match="when opened"):
        store.append(record(1))


async def test_read_page_validates_and_names_file_and_offset(place):
    store = await write_pages(place)
    store, _ = await place.reopen(store.folder)
    path = store.folder / page_file_name(1)
    offsets = record_offsets(place.read(path))
    place.damage(path, offsets[2] + 9, b"\x00\x00\x00")
    with pytest.raises(StorageError, match=f"{re.escape(str(path))} at offset {offsets[2]}"):
        await store.read_page(1)
    with pytest.raises(StorageError, match="no page 99"):
        await store.read_page(99)
    await bounded(store.close())


# --------------------------------------------------------------------------------------------
# Deletion


async def test_delete_page_removes_a_page_durably_and_numbers_never_go_back(place):
    store = await write_pages(place)
    store, loaded = await place.reopen(store.folder)
    pages = store.pages
    assert len(pages) >= 3
    first_records = store.page_records(1)
    total = store.record_count
    await bounded(store.delete_page(1))
    assert store.pages == pages[1:] and store.first_page == 2
    assert store.record_count == total - first_records
    assert page_file_name(1) not in place.names(store.folder)
    with pytest.raises(StorageError, match="no page 1"):
        await store.read_page(1)
    with pytest.raises(StorageError, match="no page 1 to delete"):
        await store.delete_page(1)
    # the current page: the next page exists at once, so numbers continue after a restart
    current = store.current_page
    for page in store.pages:
        await bounded(store.delete_page(page))
    assert store.pages == (current + 1,) and store.record_count == 0 and store.size_bytes == 0
    assert place.names(store.folder) == [page_file_name(current + 1), ADDRESS_FILE]
    await bounded(store.close())
    if place.memory:
        place.crash()  # everything above was durable
    store, loaded = await place.reopen(store.folder)
    assert [info.page for info in loaded.pages] == [current + 1] and loaded.record_count == 0
    assert await bounded(store.append(record(1))) == PagePosition(current + 1, 0)
    await bounded(store.close())


async def test_delete_removes_the_folder(place):
    store = await write_pages(place)
    keep = await place.create("stays")
    store, _ = await place.reopen(store.folder)
    await bounded(store.delete())
    assert not place.files.exists(store.folder)
    assert await PageStore.scan(place.directory, place.files) == {"stays": keep.folder}
    with pytest.raises(StorageError, match="when deleted"):
        store.append(record(1))
    await bounded(store.close())  # idempotent after delete
    await bounded(keep.close())


async def test_an_interrupted_delete_is_finished_by_the_next_scan(memory_place, caplog):
    place = memory_place
    store = await write_pages(place)
    store, _ = await place.reopen(store.folder)
    place.files.inject_fault(kinds={"remove"}, after=1)
    with pytest.raises(StorageError, match="delete failed"):
        await bounded(store.delete())
    place.crash(keep=10**6)
    names = place.names(store.folder)
    assert DELETED_FILE in names and ADDRESS_FILE not in names
    with caplog.at_level(logging.INFO, logger="pybroker.paging"):
        assert await PageStore.scan(place.directory, place.files) == {}
    assert "interrupted deletion" in caplog.text
    assert not place.files.exists(store.folder)


# --------------------------------------------------------------------------------------------
# Write and sync failures


@pytest.mark.parametrize("kind", ["write", "datasync", "create", "sync_directory"])
async def test_a_failed_write_or_sync_fails_the_store_and_keeps_what_was_confirmed(
        memory_place, kind):
    place = memory_place
    store = await place.create(page_size=400)
    confirmed = [await bounded(store.append(record(number, 100))) for number in range(3)]
    place.files.inject_fault(kinds={kind})
    futures = [store.append(record(number, 100)) for number in range(3, 12)]
    results = await bounded(asyncio.gather(*futures, return_exceptions=True))
    failures = [result for result in results if isinstance(result, BaseException)]
    assert failures and all(isinstance(failure, StorageError) for failure in failures)
    assert "no retry" in str(failures[0])
    with pytest.raises(StorageError, match="failed"):
        store.append(record(99))
    with pytest.raises(StorageError, match="failed"):
        await store.wait_writable(0)
    ok = [result for result in results if not isinstance(result, BaseException)]
    await bounded(store.close())
    place.crash()
    store, _ = await place.reopen(store.folder, page_size=400)
    found = await read_all(store)
    assert [position for position, _ in found][:len(confirmed) + len(ok)] == confirmed + ok
    await bounded(store.close())


# --------------------------------------------------------------------------------------------
# Crashes


async def crash_round(place: Place, *, fault_at: int | None, keep: int | None,
                      torn: int | None, sync: bool = True, page_size: int = 700,
                      one_by_one: bool = False) -> tuple[int, int, int]:
    """Append two waves of records, fail the device for good at operation ``fault_at``
    (counted from the first append; ``one_by_one``: await each append, one batch each),
    crash keeping ``keep`` pending operations (None: all)
    and a torn prefix of the next write, reload and check; then append once more and reload.

    Returns (operations the run used, records that survived, pending operations at the crash).
    """
    store = await place.create(page_size=page_size, sync=sync)
    files = place.files
    assert isinstance(files, MemoryFileFactory)
    start = files.statistics.operations
    if fault_at is not None:
        files.inject_fault(after=fault_at, permanent=True)
    records = [record(number, 90 + number * 13 % 120) for number in range(1, 16)]
    futures: list[asyncio.Future[PagePosition]] = []
    for wave in (records[:6], records[6:]):  # the second wave goes into later batches
        for item in wave:
            try:
                futures.append(store.append(item))
                if one_by_one:
                    await bounded(asyncio.gather(futures[-1], return_exceptions=True))
            except StorageError:  # the store failed already: the rest is refused at once
                assert files.fault_fired
                break
        await bounded(asyncio.gather(*futures, return_exceptions=True))
    used = files.statistics.operations - start
    confirmed = [(future.result(), item) for future, item in zip(futures, records, strict=False)
                 if future.exception() is None]
    left_behind = sum(1 for position, _ in confirmed if position.page < store.current_page)
    pending = files.pending_operations
    place.crash(keep=pending if keep is None else min(keep, pending), torn_bytes=torn)
    await bounded(store.close())  # its files are gone: it just stops

    store, _ = await place.reopen(store.folder, page_size=page_size, sync=sync)
    found = await read_all(store)
    assert [item for _, item in found] == records[:len(found)], "not a prefix, in order"
    if sync:  # every record whose future resolved is there, where it was told it went
        assert found[:len(confirmed)] == confirmed
    else:  # without sync, the pages that were left were fdatasynced then
        assert found[:left_behind] == confirmed[:left_behind]
    extra = record(777, 50)
    position = await bounded(store.append(extra))
    assert not found or position > found[-1][0]
    await bounded(store.close())
    store, _ = await place.reopen(store.folder, page_size=page_size, sync=sync)
    assert await read_all(store) == [*found, (position, extra)]
    await bounded(store.close())
    return used, len(found), pending


@pytest.fixture
def quiet_paging():
    logger = logging.getLogger("pybroker.paging")
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(logging.NOTSET)


async def test_a_crash_at_every_operation_of_an_append_run_keeps_every_confirmed_record(
        quiet_paging):
    place = Place("memory", MemoryFileFactory(), MEMORY_ROOT)
    total, kept, _ = await crash_round(place, fault_at=None, keep=None, torn=None)
    assert kept == 15 and total > 12
    survivors = set()
    for one_by_one in (False, True):
        for fault_at in range(total):
            for keep, torn in ((0, None), (0, 41), (1, 7), (None, None), (None, 300)):
                place = Place("memory", MemoryFileFactory(), MEMORY_ROOT)
                _, kept, _ = await crash_round(place, fault_at=fault_at, keep=keep, torn=torn,
                                               one_by_one=one_by_one)
                if one_by_one:
                    survivors.add(kept)
    # the rounds really stopped at many different points (one batch per record makes that
    # independent of timing; how the batched rounds split depends on the writer thread)
    assert len(survivors) > 5


async def test_without_sync_a_crash_keeps_a_prefix_and_the_pages_left_behind(quiet_paging):
    place = Place("memory", MemoryFileFactory(), MEMORY_ROOT)
    unsynced = {"sync": False, "page_size": 1400, "one_by_one": True}
    _, kept, pending = await crash_round(place, fault_at=None, keep=None, torn=None, **unsynced)
    assert kept == 15 and pending > 5
    survivors = set()
    for keep in range(pending + 1):
        for torn in (None, 5, 60):
            place = Place("memory", MemoryFileFactory(), MEMORY_ROOT)
            _, kept, _ = await crash_round(place, fault_at=None, keep=keep, torn=torn,
                                           **unsynced)
            survivors.add(kept)
    assert len(survivors) > 3


# --------------------------------------------------------------------------------------------
# Property: appends, page deletions and crashes


STEP = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 8), st.integers(0, 500)),
    st.tuples(st.sampled_from(["await", "delete_first", "delete_current"]), st.just(0),
              st.just(0)),
)
ROUND = st.tuples(
    st.lists(STEP, min_size=1, max_size=12),
    st.sampled_from(["crash", "crash", "close"]),
    st.integers(0, 1000),  # fraction of the pending operations that survive
    st.one_of(st.none(), st.integers(1, 300)),  # torn bytes of the next write
)


async def run_rounds(rounds, sync: bool, page_size: int) -> None:
    place = Place("memory", MemoryFileFactory(), MEMORY_ROOT)
    store = await place.create(page_size=page_size, sync=sync)
    folder = store.folder
    model: list[tuple[PagePosition, PagedRecord]] = []  # on disk at the start of the round
    number = 0
    for steps, ending, keep_fraction, torn in rounds:
        appended: list[tuple[asyncio.Future, PagedRecord]] = []
        for name, count, size in steps:
            if name == "append":
                for _ in range(count):
                    number += 1
                    item = record(number, size)
                    appended.append((store.append(item), item))
            elif name == "await":
                await bounded(asyncio.gather(*(future for future, _ in appended)))
            elif store.pages:
                page = store.first_page if name == "delete_first" else store.current_page
                await bounded(store.delete_page(page))
                # (a page is deleted once its records are consumed; every append queued
                # before the deletion has been written by now)
                model = [(p, r) for p, r in model if p.page != page]
                appended = [(f, r) for f, r in appended if f.result().page != page]
        if ending == "close":
            await bounded(store.close())
            model += [(future.result(), item) for future, item in appended]
        else:
            pending = place.files.pending_operations
            place.crash(keep=pending * keep_fraction // 1000, torn_bytes=torn)
            await bounded(store.close())  # its files are gone: it just stops
            confirmed = sum(1 for future, _ in appended if future.exception() is None)
            store, _ = await place.reopen(folder, page_size=page_size, sync=sync)
            found = await read_all(store)
            assert found[:len(model)] == model  # what was on disk stays, where it was
            assert [item for _, item in found[len(model):]] == [
                item for _, item in appended[:len(found) - len(model)]]
            for (position, _), (future, _) in zip(found[len(model):], appended, strict=False):
                if future.exception() is None:
                    assert future.result() == position
            if sync:
                assert len(found) >= len(model) + confirmed
            await bounded(store.close())
            model = found
        store, _ = await place.reopen(folder, page_size=page_size, sync=sync)
        assert await read_all(store) == model
    await bounded(store.close())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          database=None)
@given(st.lists(ROUND, min_size=1, max_size=4), st.booleans(), st.sampled_from([256, 1024, 4096]))
def test_appends_deletions_and_crashes_keep_what_was_confirmed_in_order(rounds, sync, page_size):
    logger = logging.getLogger("pybroker.paging")
    logger.setLevel(logging.CRITICAL)
    try:
        asyncio.run(run_rounds(rounds, sync, page_size))
    finally:
        logger.setLevel(logging.NOTSET)
