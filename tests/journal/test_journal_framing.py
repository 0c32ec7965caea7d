"""Sans-I/O framing: every record kind, any split of the input, every kind of damage."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import msgpack
import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

import pybroker.journal.framing as framing_module
from pybroker.journal.framing import (
    NEED_DATA,
    Damage,
    DamageKind,
    DecodedRecord,
    RecordDecoder,
    RecordKind,
    decode_records,
    encode_record,
    find_next_record,
    frame,
)

FILE_ID, EPOCH = 7, 3
MAX = 1 << 20

SAMPLES = [
    [1, FILE_ID, EPOCH, 10, 31, b"hello"],
    [2, FILE_ID, EPOCH, 10, 32, b""],
    [3, FILE_ID, EPOCH, 10],
    [4, FILE_ID, EPOCH, 11, 31, b"in tx", 900],
    [5, FILE_ID, EPOCH, 11, 32, b"x" * 300, 900],
    [6, FILE_ID, EPOCH, 10, 900],
    [7, FILE_ID, EPOCH, 900, [FILE_ID, 3, 5, 1], b"xid"],
    [8, FILE_ID, EPOCH, 900, [FILE_ID, 3]],
    [9, FILE_ID, EPOCH, 901],
    [1, FILE_ID, EPOCH, (1 << 64) - 1, 255, b"\x00" * 70000],
]


def stream(records=SAMPLES) -> bytes:
    return b"".join(encode_record(fields) for fields in records)


def events(decoder: RecordDecoder) -> list:
    out = []
    while True:
        event = decoder.next_event()
        out.append(event)
        if event is NEED_DATA or isinstance(event, Damage):
            return out


def test_framing_imports_no_io_modules():
    tree = ast.parse(Path(framing_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"os", "asyncio", "socket", "io", "threading", "pathlib"}


def test_frame_layout_is_length_crc_body():
    fields = SAMPLES[0]
    data = encode_record(fields)
    length, checksum = struct.unpack(">II", data[:8])
    body = data[8:]
    assert length == len(body)
    assert checksum == crc32c(body)
    assert msgpack.unpackb(body) == fields
    assert frame(body) == data


def test_every_kind_round_trips():
    decoder = RecordDecoder(FILE_ID, EPOCH, max_length=MAX)
    decoder.receive_data(stream())
    decoder.end_of_input()
    out = events(decoder)
    records, end = out[:-1], out[-1]
    assert [record.kind for record in records] == [RecordKind(f[0]) for f in SAMPLES]
    assert end == Damage(DamageKind.ZEROED, len(stream()), "zero fill")
    add, update, delete, add_tx, update_tx, delete_tx, prepare, commit, rollback, big = records
    assert (add.record_id, add.user_type, add.body, add.tx_id) == (10, 31, b"hello", None)
    assert update.body == b"" and update.kind is RecordKind.UPDATE
    assert delete.record_id == 10 and delete.body is None
    assert (add_tx.record_id, add_tx.tx_id, add_tx.body) == (11, 900, b"in tx")
    assert update_tx.tx_id == 900
    assert (delete_tx.record_id, delete_tx.tx_id) == (10, 900)
    assert prepare.tx_id == 900 and prepare.body == b"xid"
    assert prepare.counts == ((FILE_ID, 3), (5, 1))
    assert commit.counts == ((FILE_ID, 3),)
    assert rollback.tx_id == 901
    assert big.record_id == (1 << 64) - 1 and len(big.body) == 70000
    offset = 0
    for record in records:
        assert record.offset == offset
        offset += record.size
    assert all(record.file_id == FILE_ID and record.epoch == EPOCH for record in records)


def test_byte_by_byte_gives_the_same_records():
    data = stream()
    decoder = RecordDecoder(FILE_ID, EPOCH, max_length=MAX)
    seen: list[DecodedRecord] = []
    for index in range(len(data)):
        decoder.receive_data(data[index:index + 1])
        while True:
            event = decoder.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, DecodedRecord)
            seen.append(event)
    assert [record.kind for record in seen] == [RecordKind(f[0]) for f in SAMPLES]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_splits_give_the_same_records(data):
    raw = stream()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=20)))
    decoder = RecordDecoder(FILE_ID, EPOCH, max_length=MAX)
    seen = []
    previous = 0
    for cut in [*cuts, len(raw)]:
        decoder.receive_data(raw[previous:cut])
        previous = cut
        for event in events(decoder):
            if isinstance(event, DecodedRecord):
                seen.append(event)
    assert [(r.kind, r.offset, r.size) for r in seen] == [
        (r.kind, r.offset, r.size) for r in decode_all(raw)]


def decode_all(raw: bytes) -> list[DecodedRecord]:
    decoder = RecordDecoder(FILE_ID, EPOCH, max_length=MAX)
    decoder.receive_data(raw)
    decoder.end_of_input()
    return [event for event in events(decoder) if isinstance(event, DecodedRecord)]


@pytest.mark.parametrize("fields", SAMPLES[:9], ids=lambda f: RecordKind(f[0]).name)
def test_every_prefix_needs_data_and_is_truncated_at_the_end(fields):
    data = encode_record(fields)
    for cut in range(len(data)):
        decoder = RecordDecoder(FILE_ID, EPOCH, max_length=MAX)
        decoder.receive_data(data[:cut])
        assert decoder.next_event() is NEED_DATA
        decoder.end_of_input()
        event = decoder.next_event()
        assert isinstance(event, Damage)
        # a prefix that is only zeros (the high bytes of the length) reads as zero fill
        zeros = data[:cut].count(0) == cut
        assert event.kind is (DamageKind.ZEROED if zeros else DamageKind.TRUNCATED)
        # the bulk decoder agrees
        _bodies, _sizes, stop, damage = decode_records(data[:cut], 0, cut, FILE_ID, EPOCH,
                                                       max_length=MAX)
        assert stop == 0
        if cut == 0:
            assert damage is None
        else:
            assert damage.kind is event.kind


def classify(raw: bytes, *, file_id: int = FILE_ID, epoch: int = EPOCH) -> tuple:
    decoder = RecordDecoder(file_id, epoch, max_length=MAX)
    decoder.receive_data(raw)
    decoder.end_of_input()
    stream_events = events(decoder)
    stream_damage = stream_events[-1]
    bodies, _sizes, stop, bulk_damage = decode_records(raw, 0, len(raw), file_id, epoch,
                                                       max_length=MAX)
    assert len(bodies) == len(stream_events) - 1
    if bulk_damage is None:
        assert stream_damage.kind is DamageKind.ZEROED and stream_damage.offset == len(raw)
    else:
        assert (bulk_damage.kind, bulk_damage.offset) == (stream_damage.kind, stream_damage.offset)
    assert stop == stream_damage.offset
    return stream_damage.kind, stream_damage.offset, len(bodies)


def test_zero_fill_ends_the_data():
    good = stream(SAMPLES[:3])
    assert classify(good + bytes(100)) == (DamageKind.ZEROED, len(good), 3)


def test_a_record_of_another_file_or_epoch_is_stale():
    good = stream(SAMPLES[:2])
    stale_file = encode_record([1, FILE_ID - 1, EPOCH, 5, 1, b"old life"])
    stale_epoch = encode_record([1, FILE_ID, EPOCH - 1, 5, 1, b"old life"])
    assert classify(good + stale_file) == (DamageKind.STALE, len(good), 2)
    assert classify(good + stale_epoch) == (DamageKind.STALE, len(good), 2)


def test_bit_flip_in_a_body_is_a_bad_crc():
    good = stream(SAMPLES[:3])
    damaged = bytearray(good)
    second = len(encode_record(SAMPLES[0]))
    damaged[second + 12] ^= 0x10
    assert classify(bytes(damaged)) == (DamageKind.BAD_CRC, second, 1)


def test_bad_lengths():
    good = encode_record(SAMPLES[0])
    huge = struct.pack(">II", MAX + 1, 0) + b"x" * 20
    assert classify(good + huge)[:2] == (DamageKind.BAD_LENGTH, len(good))
    zero_with_crc = struct.pack(">II", 0, 1234)
    assert classify(good + zero_with_crc)[:2] == (DamageKind.BAD_LENGTH, len(good))
    tiny = struct.pack(">II", 2, crc32c(b"\x91\x01")) + b"\x91\x01"
    assert classify(good + tiny)[:2] == (DamageKind.BAD_LENGTH, len(good))


@pytest.mark.parametrize("body", [
    msgpack.packb([99, FILE_ID, EPOCH, 1]),  # unknown kind
    msgpack.packb([1, FILE_ID, EPOCH, 1, 2]),  # wrong field count
    msgpack.packb({"not": "a record"}),
    msgpack.packb([1, FILE_ID, EPOCH, 1, 2, "text, not bytes"]),
    b"\xc1\xc1\xc1\xc1\xc1\xc1",  # not msgpack
])
def test_a_checksummed_body_that_is_not_a_record_is_bad(body):
    good = encode_record(SAMPLES[0])
    assert classify(good + frame(body))[:2] == (DamageKind.BAD_BODY, len(good))


def test_a_torn_last_record_is_truncated():
    good = stream(SAMPLES[:2])
    last = encode_record(SAMPLES[4])
    for cut in (3, 7, 8, 9, len(last) - 1):  # (a shorter cut is only zeros)
        assert classify(good + last[:cut])[:2] == (DamageKind.TRUNCATED, len(good))


def test_damage_stops_the_stream_decoder_for_good():
    decoder = RecordDecoder(FILE_ID, EPOCH, max_length=MAX)
    decoder.receive_data(b"\x00" * 8 + encode_record(SAMPLES[0]))
    first = decoder.next_event()
    assert isinstance(first, Damage) and first.kind is DamageKind.ZEROED
    assert decoder.next_event() == first


def test_find_next_record_skips_damage_and_ignores_other_lives():
    records = [encode_record(fields) for fields in SAMPLES[:4]]
    raw = bytearray(b"".join(records))
    raw[12] ^= 0xFF  # damage the first record's body
    assert find_next_record(bytes(raw), 1, FILE_ID, EPOCH) == len(records[0])
    assert find_next_record(bytes(raw), len(records[0]) + 1, FILE_ID, EPOCH) == (
        len(records[0]) + len(records[1]))
    assert find_next_record(bytes(raw), 0, FILE_ID + 1, EPOCH) is None
    old_life = stream([[1, FILE_ID + 5, EPOCH, 1, 1, b"a"], [3, FILE_ID + 5, EPOCH, 1]])
    assert find_next_record(bytes(200) + old_life, 0, FILE_ID, EPOCH) is None
    # a payload that happens to contain the file id/epoch pattern is not a record
    decoy = encode_record([1, FILE_ID + 1, EPOCH, 1, 1, b"\x94\x01\x07\x03" * 50])
    assert find_next_record(decoy, 0, FILE_ID, EPOCH) is None


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_bulk_and_stream_decoders_agree_on_random_damage(data):
    count = data.draw(st.integers(1, 6))
    records = [SAMPLES[data.draw(st.integers(0, 8))] for _ in range(count)]
    raw = bytearray(stream(records) + bytes(data.draw(st.integers(0, 30))))
    mutation = data.draw(st.sampled_from(["flip", "zero", "cut", "none"]))
    if mutation == "flip":
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] ^= 1 << data.draw(st.integers(0, 7))
    elif mutation == "zero":
        start = data.draw(st.integers(0, len(raw) - 1))
        end = data.draw(st.integers(start, len(raw)))
        raw[start:end] = bytes(end - start)
    elif mutation == "cut":
        del raw[data.draw(st.integers(0, len(raw))):]
    kind, _offset, decoded = classify(bytes(raw))
    assert decoded <= count
    if mutation == "none":
        assert decoded == count and kind is DamageKind.ZEROED
