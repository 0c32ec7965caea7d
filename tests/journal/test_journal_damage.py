"""Torn, zeroed and bit-flipped journals: what load truncates, what it refuses, what tools say."""

from __future__ import annotations

import logging

import pytest
from journal_helpers import bounded, options

from pybroker.errors import JournalCorruptError
from pybroker.journal.framing import RecordKind
from pybroker.journal.segment import HEADER_SIZE, scan_segment
from pybroker.journal.tools import iterate_records, recover, verify

BIG = options(file_size=64 * 1024)


async def write_records(store, count: int, *, opts=BIG, body=b"payload-" * 8) -> None:
    journal, _ = await store.open_loaded(opts)
    for record_id in range(1, count + 1):
        journal.append(record_id, 1, body + bytes([record_id % 256]), sync=False)
    await bounded(journal.sync())
    await journal.close()


def newest(store) -> tuple[str, list[int]]:
    """The newest data file and the offsets of its records."""
    _file_id, name = store.data_files()[-1]
    scan = scan_segment(store.read(name), store.header(name))
    offsets = [HEADER_SIZE]
    for size in scan.sizes:
        offsets.append(offsets[-1] + size)
    return name, offsets


@pytest.mark.parametrize("damage", ["torn", "zeroed body", "bit flip", "torn header"])
async def test_a_damaged_last_record_is_truncated_and_logged(store, caplog, damage):
    await write_records(store, 20)
    name, offsets = newest(store)
    last, end = offsets[-2], offsets[-1]
    if damage == "torn":
        store.damage(name, last + 30, bytes(end - last - 30))
    elif damage == "zeroed body":
        store.damage(name, last + 8, bytes(end - last - 8))
    elif damage == "bit flip":
        byte = store.read(name)[last + 40]
        store.damage(name, last + 40, bytes([byte ^ 0x04]))
    else:  # the length field itself is torn: a huge length
        store.damage(name, last, b"\x7f")
    with caplog.at_level(logging.WARNING, logger="pybroker.journal"):
        journal, result = await store.open_loaded(BIG)
    assert [r.id for r in result.records] == list(range(1, 20))
    truncated = result.truncated_tail
    assert truncated is not None
    assert truncated.file.endswith(name) and truncated.offset == last
    assert truncated.bytes_dropped > 0
    assert name in caplog.text and f"offset {last}" in caplog.text
    # the dropped bytes are zeroed: the next record goes where the torn one was
    await bounded(journal.append(100, 1, b"after the repair", sync=True))
    await journal.close()
    content = store.read(name)
    journal, result = await store.open_loaded(BIG)
    assert [r.id for r in result.records] == [*range(1, 20), 100]
    assert result.truncated_tail is None
    await journal.close()
    assert verify(store.directory, BIG, store.files).ok
    assert content[offsets[-1] + 200:].count(0) == len(content) - offsets[-1] - 200


async def test_a_fully_zeroed_last_record_is_just_the_end(store):
    await write_records(store, 10)
    name, offsets = newest(store)
    store.damage(name, offsets[-2], bytes(offsets[-1] - offsets[-2]))
    journal, result = await store.open_loaded(BIG)
    assert [r.id for r in result.records] == list(range(1, 10))
    assert result.truncated_tail is None
    await journal.close()


async def test_a_bit_flip_in_the_middle_is_corruption_with_file_and_offset(store):
    await write_records(store, 30)
    name, offsets = newest(store)
    victim = offsets[10]
    byte = store.read(name)[victim + 20]
    store.damage(name, victim + 20, bytes([byte ^ 0x80]))
    journal = await store.open(BIG)
    with pytest.raises(JournalCorruptError) as caught:
        await journal.load()
    await journal.close()
    error = caught.value
    assert error.file.endswith(name) and error.offset == victim
    assert "pybroker data recover" in str(error)
    assert f"offset {victim}" in str(error)

    report = verify(store.directory, BIG, store.files)
    assert not report.ok and not report.loadable
    (region,) = report.damage
    assert region.file.endswith(name) and region.offset == victim
    assert region.length == offsets[11] - victim and not region.torn_tail
    assert report.records == 29

    views = list(iterate_records(store.directory, BIG, store.files))
    assert len(views) == 29
    assert all(view.kind is RecordKind.ADD for view in views)
    assert victim not in [view.offset for view in views]

    destination = store.directory.parent / "recovered"
    recovered = recover(store.directory, destination, BIG, store.files)
    assert recovered.records_salvaged == 29
    assert recovered.bytes_lost == offsets[11] - victim
    assert [(r.file, r.offset) for r in recovered.damaged_regions] == [(region.file, victim)]
    journal = await store.open(BIG)  # the damaged source is untouched
    with pytest.raises(JournalCorruptError):
        await journal.load()
    await journal.close()
    from pybroker.journal import Journal

    fixed = await Journal.open(destination, BIG, store.files)
    result = await bounded(fixed.load())
    assert [r.id for r in result.records] == [i for i in range(1, 31) if i != 11]
    await fixed.close()


async def test_damage_in_an_older_segment_is_corruption(store):
    await write_records(store, 80, opts=options(file_size=4096))
    (_first_id, first), *_ = store.data_files()
    scan = scan_segment(store.read(first), store.header(first))
    last_offset = scan.stop - scan.sizes[-1]
    byte = store.read(first)[last_offset + 15]
    store.damage(first, last_offset + 15, bytes([byte ^ 1]))
    journal = await store.open(options(file_size=4096))
    with pytest.raises(JournalCorruptError, match="not the newest") as caught:
        await journal.load()
    await journal.close()
    assert caught.value.offset == last_offset and caught.value.file.endswith(first)


async def test_a_damaged_header_is_corruption_at_offset_zero(store):
    await write_records(store, 5)
    name, _ = newest(store)
    store.damage(name, 20, b"\xff")
    with pytest.raises(JournalCorruptError, match="header") as caught:
        await store.open(BIG)
    assert caught.value.offset == 0 and caught.value.file.endswith(name)


async def test_recover_drops_a_transaction_that_lost_records(store):
    journal, _ = await store.open_loaded(BIG)
    journal.append(1, 1, b"plain", sync=False)
    journal.append_tx(9, 2, 1, b"tx record one")
    journal.append_tx(9, 3, 1, b"tx record two")
    journal.commit(9, sync=False)
    journal.append(4, 1, b"plain after", sync=False)
    await bounded(journal.sync())
    await journal.close()
    views = list(iterate_records(store.directory, BIG, store.files))
    assert [view.kind for view in views] == [RecordKind.ADD, RecordKind.ADD_TX,
                                             RecordKind.ADD_TX, RecordKind.COMMIT,
                                             RecordKind.ADD]
    assert views[3].counts == ((views[0].file_id, 2),)
    second_tx_record = views[2]
    store.damage(second_tx_record.file.rsplit("/", 1)[1], second_tx_record.offset + 12, b"\x00")
    destination = store.directory.parent / "recovered"
    report = recover(store.directory, destination, BIG, store.files)
    assert report.transactions_dropped == 1
    assert report.records_salvaged == 3  # the commit is not copied
    from pybroker.journal import Journal

    fixed = await Journal.open(destination, BIG, store.files)
    result = await bounded(fixed.load())
    assert [r.id for r in result.records] == [1, 4]
    assert result.incomplete_transactions == 1
    await fixed.close()


async def test_verify_reports_a_torn_tail_as_loadable(store):
    await write_records(store, 5)
    name, offsets = newest(store)
    store.damage(name, offsets[-2] + 10, bytes(5))
    report = verify(store.directory, BIG, store.files)
    assert not report.ok and report.loadable
    (region,) = report.damage
    assert region.torn_tail and region.offset == offsets[-2]
