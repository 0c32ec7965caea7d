"""Journal record framing: records <-> bytes, sans-I/O.

Theory of operation
-------------------
A segment file is a header (see :mod:`pybroker.journal.segment`) followed by records, each::

    u32 length (big-endian) | u32 crc32c(body) | body (msgpack array, ``length`` bytes)

and then zeros (a fresh file) or the stale bytes of the file's previous life (a reused file).
The body is a msgpack array whose first three items are always ``kind, file_id, epoch``:

=============  ===========================================================
ADD, UPDATE    ``[kind, file_id, epoch, record_id, user_type, payload]``
DELETE         ``[kind, file_id, epoch, record_id]``
ADD_TX,        ``[kind, file_id, epoch, record_id, user_type, payload, tx_id]``
UPDATE_TX
DELETE_TX      ``[kind, file_id, epoch, record_id, tx_id]``
PREPARE        ``[kind, file_id, epoch, tx_id, counts, extra]``
COMMIT         ``[kind, file_id, epoch, tx_id, counts]``
ROLLBACK       ``[kind, file_id, epoch, tx_id]``
=============  ===========================================================

``counts`` is a flat list ``[file_id, n, file_id, n, ...]``: how many records of the transaction
each file holds (as Artemis's per-file counts), so a replay can tell a complete transaction from
one whose records were lost, while files whose records were all reclaimed are skipped.

Why each check exists:

* ``length == 0`` with a zero CRC is the zero fill after the last record: the end of the data.
* A record whose length runs past the end of the input is torn (the write was cut short).
* A CRC mismatch is a torn or damaged record; only what follows it tells which (the journal
  looks for a valid record further on, see :func:`find_next_record`).
* ``file_id``/``epoch`` that differ from the segment header mark a record left over from the
  file's previous life (files are reused without zeroing): it is never replayed, and it ends the
  segment's data exactly like the zero fill does.

Nothing here does I/O: :class:`RecordDecoder` is fed bytes and returns records,
:data:`NEED_DATA` or a :class:`Damage`; :func:`decode_records` is the bulk path used to replay
whole segments quickly.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import Final, NamedTuple

import msgpack
from crc32c import crc32c

__all__ = [
    "FRAME_HEADER_SIZE",
    "NEED_DATA",
    "Damage",
    "DamageKind",
    "DecodedRecord",
    "NeedData",
    "RecordDecoder",
    "RecordKind",
    "decode_records",
    "encode_record",
    "find_next_record",
    "frame",
    "parse_record",
]


class RecordKind(enum.IntEnum):
    """What a record does. Values are on disk: never renumber."""

    ADD = 1
    UPDATE = 2
    DELETE = 3
    ADD_TX = 4
    UPDATE_TX = 5
    DELETE_TX = 6
    PREPARE = 7
    COMMIT = 8
    ROLLBACK = 9


ADD: Final = 1
UPDATE: Final = 2
DELETE: Final = 3
ADD_TX: Final = 4
UPDATE_TX: Final = 5
DELETE_TX: Final = 6
PREPARE: Final = 7
COMMIT: Final = 8
ROLLBACK: Final = 9

#: Number of items in the body array, by kind (index = kind value).
FIELD_COUNTS: Final = (0, 6, 6, 4, 7, 7, 5, 6, 5, 4)

_FRAME = struct.Struct(">II")
FRAME_HEADER_SIZE: Final = _FRAME.size
_ZERO_HEADER: Final = bytes(FRAME_HEADER_SIZE)
#: The smallest possible body: a fixarray of 4 positive fixints.
MIN_BODY_SIZE: Final = 5

pack_frame_header = _FRAME.pack
unpack_frame_header = _FRAME.unpack_from


class NeedData:
    """Sentinel type: the decoder needs more bytes before it can say anything."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class DamageKind(enum.Enum):
    """Why decoding stopped at an offset."""

    ZEROED = "zeroed"  #: an all-zero frame header: the end of the written data (or a zeroed hole)
    STALE = "stale"  #: a valid record from the file's previous life (other file id or epoch)
    TRUNCATED = "truncated"  #: the record runs past the end of the input (a torn write)
    BAD_LENGTH = "bad length"  #: a length that cannot be a record
    BAD_CRC = "bad crc"  #: the body does not match its CRC32C
    BAD_BODY = "bad body"  #: the CRC matches but the body is not a journal record

    @property
    def is_end_of_data(self) -> bool:
        """True for the two normal ways a segment's data ends (zero fill, stale bytes)."""
        return self is DamageKind.ZEROED or self is DamageKind.STALE


class Damage(NamedTuple):
    """Decoding stopped at ``offset`` (relative to the start of the input) for ``kind``."""

    kind: DamageKind
    offset: int
    detail: str


class DecodedRecord(NamedTuple):
    """One record, decoded.

    ``body`` is the payload for ADD/UPDATE(+_TX) and the ``extra`` bytes for PREPARE; ``counts``
    is the per-file record count list of PREPARE/COMMIT as ``((file_id, n), ...)``.
    """

    kind: RecordKind
    file_id: int
    epoch: int
    record_id: int | None
    user_type: int | None
    tx_id: int | None
    body: bytes | None
    counts: tuple[tuple[int, int], ...] | None
    offset: int
    size: int


_packer = msgpack.Packer(autoreset=True, use_bin_type=True)


def encode_record(fields: Sequence[object]) -> bytes:
    """Return the framed bytes of the record whose body items are ``fields``."""
    body = _packer.pack(fields)
    return pack_frame_header(len(body), crc32c(body)) + body


def frame(body: bytes) -> bytes:
    """Frame an already packed body."""
    return pack_frame_header(len(body), crc32c(body)) + body


def _pairs(flat: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2))


def parse_record(fields: tuple, offset: int, size: int) -> DecodedRecord:
    """Turn a body array (already checked by :func:`check_fields`) into a :class:`DecodedRecord`."""
    kind = fields[0]
    file_id, epoch = fields[1], fields[2]
    if kind in (ADD, UPDATE):
        return DecodedRecord(RecordKind(kind), file_id, epoch, fields[3], fields[4], None,
                             fields[5], None, offset, size)
    if kind == DELETE:
        return DecodedRecord(RecordKind(kind), file_id, epoch, fields[3], None, None, None, None,
                             offset, size)
    if kind in (ADD_TX, UPDATE_TX):
        return DecodedRecord(RecordKind(kind), file_id, epoch, fields[3], fields[4], fields[6],
                             fields[5], None, offset, size)
    if kind == DELETE_TX:
        return DecodedRecord(RecordKind(kind), file_id, epoch, fields[3], None, fields[4], None,
                             None, offset, size)
    if kind == PREPARE:
        return DecodedRecord(RecordKind(kind), file_id, epoch, None, None, fields[3], fields[5],
                             _pairs(fields[4]), offset, size)
    if kind == COMMIT:
        return DecodedRecord(RecordKind(kind), file_id, epoch, None, None, fields[3], None,
                             _pairs(fields[4]), offset, size)
    return DecodedRecord(RecordKind(kind), file_id, epoch, None, None, fields[3], None, None,
                         offset, size)


def _unsigned(value: object) -> bool:
    return type(value) is int and value >= 0


def check_fields(fields: object) -> str | None:
    """Return why ``fields`` is not a well-formed record body, or None if it is one."""
    if type(fields) is not tuple or not fields:
        return "body is not an array"
    kind = fields[0]
    if type(kind) is not int or not ADD <= kind <= ROLLBACK:
        return f"unknown record kind {kind!r}"
    if len(fields) != FIELD_COUNTS[kind]:
        return f"kind {kind} record with {len(fields)} fields"
    if not (_unsigned(fields[1]) and _unsigned(fields[2])):
        return "bad file id or epoch"
    if kind in (ADD, UPDATE, ADD_TX, UPDATE_TX):
        if not (_unsigned(fields[3]) and _unsigned(fields[4]) and type(fields[5]) is bytes):
            return "bad id, user type or payload"
        if kind >= ADD_TX and not _unsigned(fields[6]):
            return "bad transaction id"
    elif kind == DELETE:
        if not _unsigned(fields[3]):
            return "bad id"
    elif kind == DELETE_TX:
        if not (_unsigned(fields[3]) and _unsigned(fields[4])):
            return "bad id or transaction id"
    else:
        if not _unsigned(fields[3]):
            return "bad transaction id"
        if kind in (PREPARE, COMMIT):
            counts = fields[4]
            if type(counts) is not tuple or len(counts) % 2 or not all(map(_unsigned, counts)):
                return "bad per-file counts"
            if kind == PREPARE and type(fields[5]) is not bytes:
                return "bad prepare extra"
    return None


def _try_record(data: bytes | bytearray | memoryview, pos: int, end: int, file_id: int,
                epoch: int) -> int:
    """Size of a valid current record at ``pos`` (matching file id and epoch), or 0."""
    if pos < 0 or pos + FRAME_HEADER_SIZE > end:
        return 0
    length, crc = unpack_frame_header(data, pos)
    start = pos + FRAME_HEADER_SIZE
    if length < MIN_BODY_SIZE or start + length > end:
        return 0
    body = memoryview(data)[start:start + length]
    if crc32c(body) != crc:
        return 0
    try:
        fields = msgpack.unpackb(body, use_list=False)
    except Exception:  # msgpack raises several unrelated types on garbage
        return 0
    if check_fields(fields) is not None or fields[1] != file_id or fields[2] != epoch:
        return 0
    return FRAME_HEADER_SIZE + length


def find_next_record(data: bytes | bytearray | memoryview, start: int, file_id: int, epoch: int,
                     end: int | None = None) -> int | None:
    """Offset of the first valid record of ``file_id``/``epoch`` at or after ``start``, or None.

    Used after damage to tell a torn tail (nothing valid follows) from corruption in the
    middle, and by ``recover`` to skip over damage. Every current record's body begins with
    ``fixarray(4..7), kind, file_id, epoch``, so the search looks for the packed
    ``file_id, epoch`` bytes with C-speed ``find`` and checks each hit in full.
    """
    if end is None:
        end = len(data)
    if not isinstance(data, bytes | bytearray):
        data = bytes(data)
    pattern = msgpack.packb(file_id) + msgpack.packb(epoch)
    # pattern sits 10 bytes into a record: 8 frame header bytes, array marker, kind.
    lead = FRAME_HEADER_SIZE + 2
    search = start + lead
    while True:
        hit = data.find(pattern, search, end)
        if hit < 0:
            return None
        candidate = hit - lead
        if (0x94 <= data[hit - 2] <= 0x97 and ADD <= data[hit - 1] <= ROLLBACK
                and _try_record(data, candidate, end, file_id, epoch)):
            return candidate
        search = hit + 1


def decode_records(data: bytes | bytearray, start: int, end: int, file_id: int, epoch: int,
                   max_length: int | None = None,
                   ) -> tuple[list[tuple], list[int], int, Damage | None]:
    """Decode every record of ``file_id``/``epoch`` in ``data[start:end]``: the bulk replay path.

    Returns ``(bodies, sizes, stop, damage)``: the decoded body arrays and framed sizes in
    order, the offset where decoding stopped, and why (None when it stopped exactly at
    ``end``). A frame header that does not fit before ``end`` is TRUNCATED unless it is zeros.
    ``max_length`` (default: everything after ``start``) bounds a body, as in
    :class:`RecordDecoder`, so both classify damage the same way.
    """
    if max_length is None:
        max_length = end - start - FRAME_HEADER_SIZE
    bodies: list[tuple] = []
    sizes: list[int] = []
    append_body = bodies.append
    append_size = sizes.append
    view = memoryview(data)
    unpack = unpack_frame_header
    # Tuples, not lists: the garbage collector stops tracking a tuple of plain values the
    # first time it sees it, so replaying a million records does not mean scanning them all.
    # (Called with the keyword directly: a functools.partial costs ~0.14 us more per record.)
    unpackb = msgpack.unpackb
    crc = crc32c
    pos = start
    header_size = FRAME_HEADER_SIZE
    damage: Damage | None = None
    while True:
        if pos + header_size > end:
            if pos < end:
                rest = bytes(view[pos:end])
                if rest.count(0) != len(rest):
                    damage = Damage(DamageKind.TRUNCATED, pos, "frame header cut short")
                else:
                    damage = Damage(DamageKind.ZEROED, pos, "zero fill")
            break
        length, checksum = unpack(data, pos)
        if length == 0:
            if checksum == 0:
                damage = Damage(DamageKind.ZEROED, pos, "zero fill")
            else:
                damage = Damage(DamageKind.BAD_LENGTH, pos, "zero length with a checksum")
            break
        if length > max_length:
            damage = Damage(DamageKind.BAD_LENGTH, pos, f"length {length} beyond the segment")
            break
        if length < MIN_BODY_SIZE:
            damage = Damage(DamageKind.BAD_LENGTH, pos, f"length {length}")
            break
        body_start = pos + header_size
        body_end = body_start + length
        if body_end > end:
            damage = Damage(DamageKind.TRUNCATED, pos,
                            f"record of {length} bytes runs past the end")
            break
        body = view[body_start:body_end]
        if crc(body) != checksum:
            damage = Damage(DamageKind.BAD_CRC, pos, "checksum mismatch")
            break
        try:
            fields = unpackb(body, use_list=False)
            kind = fields[0]
        except Exception:  # msgpack raises several unrelated types on garbage
            fields = None
            kind = None
        # Cheap inline checks for the common kinds; anything unusual gets the full check.
        if (kind == ADD or kind == UPDATE) and len(fields) == 6:
            _kind, _file, _epoch, record_id, user_type, payload = fields
            good = (type(payload) is bytes and type(record_id) is int and record_id >= 0
                    and type(user_type) is int and user_type >= 0)
        elif kind == DELETE:
            good = len(fields) == 4 and type(fields[3]) is int and fields[3] >= 0
        else:
            good = False
        if not good:
            if fields is None:
                problem: str | None = "malformed body"
            else:
                problem = check_fields(fields)
            if problem is not None:
                damage = Damage(DamageKind.BAD_BODY, pos, problem)
                break
        if fields[1] != file_id or fields[2] != epoch:
            if type(fields[1]) is not int or type(fields[2]) is not int or fields[1] < 0 \
                    or fields[2] < 0:
                damage = Damage(DamageKind.BAD_BODY, pos, "bad file id or epoch")
            else:
                damage = Damage(DamageKind.STALE, pos,
                                f"record of file {fields[1]} epoch {fields[2]}")
            break
        append_body(fields)
        append_size(header_size + length)
        pos = body_end
    return bodies, sizes, pos, damage


class RecordDecoder:
    """Incremental decoder for one segment's record area.

    Feed it bytes with :meth:`receive_data` (any split, even one byte at a time) and pull
    events with :meth:`next_event`: a :class:`DecodedRecord`, :data:`NEED_DATA`, or a
    :class:`Damage` after which the decoder stays stopped. Call :meth:`end_of_input` once no
    more bytes will come: an incomplete record then becomes TRUNCATED damage (and incomplete
    zeros ZEROED). ``max_length`` bounds a record body (the segment's record area) so that a
    garbage length is BAD_LENGTH instead of waiting forever. Offsets are relative to the first
    byte fed plus ``base_offset``.
    """

    def __init__(self, file_id: int, epoch: int, *, max_length: int, base_offset: int = 0) -> None:
        self.file_id = file_id
        self.epoch = epoch
        self._max_length = max_length
        self._buffer = bytearray()
        self._offset = base_offset  # offset of _buffer[0]
        self._eof = False
        self._stopped: Damage | None = None

    @property
    def offset(self) -> int:
        """Offset of the next undecoded byte."""
        return self._offset

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes to decode."""
        if self._eof:
            raise RuntimeError("receive_data after end_of_input")
        self._buffer += data

    def end_of_input(self) -> None:
        """No more bytes will be fed."""
        self._eof = True

    def next_event(self) -> DecodedRecord | NeedData | Damage:
        """The next record, NEED_DATA, or the damage that stopped decoding."""
        if self._stopped is not None:
            return self._stopped
        buffer = self._buffer
        if len(buffer) < FRAME_HEADER_SIZE:
            if not self._eof:
                return NEED_DATA
            if not buffer or buffer.count(0) == len(buffer):
                return self._stop(DamageKind.ZEROED, "zero fill")
            return self._stop(DamageKind.TRUNCATED, "frame header cut short")
        length, checksum = unpack_frame_header(buffer, 0)
        if length == 0:
            if checksum == 0:
                return self._stop(DamageKind.ZEROED, "zero fill")
            return self._stop(DamageKind.BAD_LENGTH, "zero length with a checksum")
        if length > self._max_length:
            return self._stop(DamageKind.BAD_LENGTH, f"length {length} beyond the segment")
        if length < MIN_BODY_SIZE:
            return self._stop(DamageKind.BAD_LENGTH, f"length {length}")
        size = FRAME_HEADER_SIZE + length
        if len(buffer) < size:
            if self._eof:
                return self._stop(DamageKind.TRUNCATED,
                                  f"record of {length} bytes runs past the end")
            return NEED_DATA
        body = bytes(buffer[FRAME_HEADER_SIZE:size])
        if crc32c(body) != checksum:
            return self._stop(DamageKind.BAD_CRC, "checksum mismatch")
        try:
            fields = msgpack.unpackb(body, use_list=False)
        except Exception as error:  # msgpack's errors are several unrelated types
            return self._stop(DamageKind.BAD_BODY, f"malformed body ({type(error).__name__})")
        problem = check_fields(fields)
        if problem is not None:
            return self._stop(DamageKind.BAD_BODY, problem)
        if fields[1] != self.file_id or fields[2] != self.epoch:
            return self._stop(DamageKind.STALE, f"record of file {fields[1]} epoch {fields[2]}")
        record = parse_record(fields, self._offset, size)
        del buffer[:size]
        self._offset += size
        return record

    def _stop(self, kind: DamageKind, detail: str) -> Damage:
        self._stopped = Damage(kind, self._offset, detail)
        return self._stopped
