"""Segment files: header, naming, crash-atomic creation, scanning, and the set of files.

A journal is a directory of equally sized, pre-allocated segment files
``pybroker-<name>-<N>.pbj``. ``N`` only keeps names unique: a reused file keeps its name and
gets a new *file id* in its header, and replay orders files by that id, never by name.

Header (``HEADER_SIZE`` = 64 bytes, big-endian)::

    magic "PYBRKJNL" | u16 format version | u16 state | u32 reserved | u64 file id | u64 epoch
    | u32 crc32c of the previous 32 bytes | zeros

``state`` is DATA (the file holds records of ``file id``) or FREE (a pool file; ``file id`` is
the last id the file carried, so ids are never handed out twice even after a file was freed:
its stale records can then never match a new header). The header is written with one write
inside the first sector, which disks do atomically.

Invariants the journal relies on (and why):

* A new file is created as ``<name>.tmp``, zero-filled to its full size, given its header,
  fsynced, renamed and the directory fsynced: a crash never leaves a half-made file under a
  segment name.
* A pool file is claimed by rewriting its header (DATA, new id) and fdatasyncing it *before*
  any record is written, so records of an id only ever exist in a file whose durable header
  carried that id.
* Data in a file is always followed by a zero frame header (the journal writes one after each
  batch, and a claim writes one where the first record goes), so a reused file's stale bytes
  after its new data are never mistaken for a damaged record.
* A file is freed by rewriting its header to FREE and fdatasyncing it before it can be reused
  or deleted, so a deleted-but-resurrected or reused file never replays old records.
"""

from __future__ import annotations

import collections
import enum
import logging
import re
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from crc32c import crc32c

from ..errors import JournalCorruptError, JournalError
from . import framing
from .files import FileFactory, JournalFile

logger = logging.getLogger("pybroker.journal")

__all__ = [
    "HEADER_SIZE",
    "SegmentHeader",
    "SegmentScan",
    "SegmentSet",
    "SegmentState",
    "SegmentWriter",
    "decode_header",
    "encode_header",
    "scan_segment",
]

MAGIC: Final = b"PYBRKJNL"
FORMAT_VERSION: Final = 1
HEADER_SIZE: Final = 64
_HEADER = struct.Struct(">8sHHIQQ")
_CRC = struct.Struct(">I")
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+\Z")
SEGMENT_SUFFIX: Final = ".pbj"
CONTROL_SUFFIX: Final = ".pbc"
TEMPORARY_SUFFIX: Final = ".tmp"


class SegmentState(enum.IntEnum):
    """Header state of a segment file. Values are on disk."""

    DATA = 1
    FREE = 2


@dataclass(frozen=True)
class SegmentHeader:
    """A decoded segment header."""

    state: SegmentState
    file_id: int
    epoch: int
    version: int = FORMAT_VERSION


def encode_header(state: SegmentState, file_id: int, epoch: int) -> bytes:
    """The ``HEADER_SIZE`` header bytes."""
    fixed = _HEADER.pack(MAGIC, FORMAT_VERSION, int(state), 0, file_id, epoch)
    return (fixed + _CRC.pack(crc32c(fixed))).ljust(HEADER_SIZE, b"\x00")


def decode_header(data: bytes, path: Path | str) -> SegmentHeader:
    """Decode a header; damage raises :class:`JournalCorruptError` at offset 0."""
    if len(data) < HEADER_SIZE:
        raise JournalCorruptError("segment header cut short", file=str(path), offset=0)
    fixed = data[:_HEADER.size]
    magic, version, state, _reserved, file_id, epoch = _HEADER.unpack(fixed)
    if magic != MAGIC:
        raise JournalCorruptError(f"not a pybroker journal segment (magic {magic!r})",
                                  file=str(path), offset=0)
    (checksum,) = _CRC.unpack_from(data, _HEADER.size)
    if crc32c(fixed) != checksum:
        raise JournalCorruptError("segment header checksum mismatch", file=str(path), offset=0)
    if version != FORMAT_VERSION:
        raise JournalError(f"{path}: journal format version {version} is not supported "
                           f"(this pybroker reads version {FORMAT_VERSION})")
    try:
        segment_state = SegmentState(state)
    except ValueError:
        raise JournalCorruptError(f"unknown segment state {state}", file=str(path),
                                  offset=0) from None
    return SegmentHeader(segment_state, file_id, epoch, version)


# --------------------------------------------------------------------------------------------
# Names


def check_stem(stem: str) -> str:
    """Validate a journal name stem (letters, digits, underscore)."""
    if not _NAME_PATTERN.match(stem):
        raise JournalError(f"bad journal name {stem!r}: use letters, digits and '_'")
    return stem


def segment_name(stem: str, number: int) -> str:
    """``pybroker-<stem>-<number>.pbj``."""
    return f"pybroker-{stem}-{number}{SEGMENT_SUFFIX}"


def parse_segment_name(stem: str, name: str) -> int | None:
    """The number of a segment file name of this journal, or None."""
    prefix = f"pybroker-{stem}-"
    if not name.startswith(prefix) or not name.endswith(SEGMENT_SUFFIX):
        return None
    middle = name[len(prefix):-len(SEGMENT_SUFFIX)]
    return int(middle) if middle.isdigit() else None


def control_name(stem: str) -> str:
    """The compaction control file name ``pybroker-<stem>.pbc``."""
    return f"pybroker-{stem}{CONTROL_SUFFIX}"


def is_temporary(stem: str, name: str) -> bool:
    """Whether ``name`` is a leftover temporary file of this journal."""
    if not name.endswith(TEMPORARY_SUFFIX):
        return False
    base = name[:-len(TEMPORARY_SUFFIX)]
    return parse_segment_name(stem, base) is not None or base == control_name(stem)


# --------------------------------------------------------------------------------------------
# Crash-atomic file creation


def create_file_atomically(files: FileFactory, path: Path, size: int, header: bytes,
                           ) -> JournalFile:
    """Create ``path`` holding ``header`` then zeros up to ``size``; return it open.

    ``path.tmp`` is created, filled, given its header, fsynced, renamed to ``path`` and the
    directory fsynced, so ``path`` either does not exist or is complete.
    """
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    handle = files.open(temporary, create=True)
    try:
        handle.allocate(size)
        if header:
            handle.pwrite(header, 0)
        handle.fullsync()
        if files.exists(path):  # two writers in one directory: never replace a segment
            raise JournalError(f"{path}: exists already; is another broker writing this "
                               "journal?")
        files.rename(temporary, path)
        files.sync_directory(path.parent)
    except BaseException:
        handle.close()
        raise
    handle.path = path
    return handle


def write_small_file_atomically(files: FileFactory, path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, directory fsync."""
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    if files.exists(temporary):
        files.remove(temporary)
    handle = files.open(temporary, create=True)
    try:
        handle.pwrite(data, 0)
        handle.fullsync()
    finally:
        handle.close()
    files.rename(temporary, path)
    files.sync_directory(path.parent)


def read_small_file(files: FileFactory, path: Path) -> bytes:
    """Read a whole small file."""
    handle = files.open(path)
    try:
        return handle.pread(handle.size(), 0)
    finally:
        handle.close()


# --------------------------------------------------------------------------------------------
# Scanning a segment


@dataclass(frozen=True)
class SegmentScan:
    """What a segment's record area holds.

    ``bodies``/``sizes``: the valid records of this file's life, in order, up to ``stop``.
    ``damage``: why decoding stopped (None = it reached the end of the file exactly).
    ``next_valid``: offset of a valid record of this life after ``stop``, if any (then the
    damage is in the middle, not a torn tail). ``dirty_bytes``: bytes from ``stop`` to the last
    non-zero byte of the file (what zeroing a torn tail has to clear).
    """

    bodies: list[tuple]
    sizes: list[int]
    stop: int
    damage: framing.Damage | None
    next_valid: int | None
    dirty_bytes: int

    @property
    def clean(self) -> bool:
        """The data ends normally: zero fill, stale bytes or the end of the file."""
        return self.next_valid is None and (self.damage is None or self.damage.kind.is_end_of_data)


def scan_segment(data: bytes, header: SegmentHeader, *, start: int = HEADER_SIZE) -> SegmentScan:
    """Decode a whole segment image (``data`` = the file's bytes)."""
    end = len(data)
    bodies, sizes, stop, damage = framing.decode_records(data, start, end, header.file_id,
                                                         header.epoch)
    next_valid = None
    dirty = 0
    if damage is not None:
        next_valid = framing.find_next_record(data, stop + 1, header.file_id, header.epoch, end)
        tail = data[stop:]
        dirty = len(tail.rstrip(b"\x00")) if tail.count(0) != len(tail) else 0
    return SegmentScan(bodies, sizes, stop, damage, next_valid, dirty)


# --------------------------------------------------------------------------------------------
# The set of segment files of one journal


class Segment:
    """One segment file of an open journal (mutable; owned by a :class:`SegmentSet`)."""

    __slots__ = ("epoch", "file_id", "handle", "number", "path", "state")

    def __init__(self, path: Path, number: int, handle: JournalFile, header: SegmentHeader):
        self.path = path
        self.number = number
        self.handle = handle
        self.state = header.state
        self.file_id = header.file_id
        self.epoch = header.epoch

    @property
    def name(self) -> str:
        """The file name."""
        return self.path.name

    def __repr__(self) -> str:
        return f"Segment({self.name}, {self.state.name}, id={self.file_id}, epoch={self.epoch})"


class SegmentSet:
    """The segment files of one journal: data files by id and the FIFO pool of free files.

    Thread-safe: the writer thread claims files, a compaction thread adds and frees files,
    the loop thread asks for counts. ``datasync`` False skips every fdatasync (the
    journal-datasync=false contract); file creation still fsyncs (it is rare and it is what
    makes the name appear atomically).
    """

    def __init__(self, files: FileFactory, directory: Path, stem: str, file_size: int, *,
                 min_files: int, pool_files: int, datasync: bool,
                 guard: Callable[[], None] | None = None) -> None:
        self.files = files
        #: called before every change this set makes to the directory (the journal's fence)
        self.guard = guard
        self.directory = directory
        self.stem = stem
        self.file_size = file_size
        self.min_files = min_files
        self.pool_files = pool_files
        self.datasync = datasync
        self._lock = threading.Lock()
        self._data: dict[int, Segment] = {}
        self._free: collections.deque[Segment] = collections.deque()
        self._next_number = 1
        self.highest_file_id = 0  #: the highest file id any header ever carried
        self.created_files = 0
        self.reused_files = 0
        self.deleted_files = 0

    # -- opening

    @classmethod
    def open(cls, files: FileFactory, directory: Path, stem: str, file_size: int, *,
             min_files: int, pool_files: int, datasync: bool,
             guard: Callable[[], None] | None = None) -> SegmentSet:
        """List ``directory``: clean temporary files, check sizes, read every header."""
        segments = cls(files, directory, stem, file_size, min_files=min_files,
                       pool_files=pool_files, datasync=datasync, guard=guard)
        segments.check_guard()
        files.make_directory(directory)
        removed = False
        found: list[tuple[int, str]] = []
        for name in files.list_directory(directory):
            if is_temporary(stem, name):
                logger.info("%s: removing leftover temporary file", directory / name)
                files.remove(directory / name)
                removed = True
                continue
            number = parse_segment_name(stem, name)
            if number is not None:
                found.append((number, name))
        for number, name in sorted(found):
            path = directory / name
            handle = files.open(path)
            size = handle.size()
            segments._next_number = max(segments._next_number, number + 1)
            if size < HEADER_SIZE:
                handle.close()
                logger.warning("%s: removing a file shorter than a segment header (%d bytes)",
                               path, size)
                files.remove(path)
                removed = True
                continue
            if size != file_size:
                handle.close()
                segments.close_all()
                raise JournalError(
                    f"{path}: the file is not {file_size} bytes long ({size} bytes): "
                    "journal-file-size cannot change on an existing journal")
            try:
                header = decode_header(handle.pread(HEADER_SIZE, 0), path)
            except BaseException:
                handle.close()
                segments.close_all()
                raise
            segment = Segment(path, number, handle, header)
            segments.highest_file_id = max(segments.highest_file_id, header.file_id)
            if header.state is SegmentState.DATA:
                if header.file_id in segments._data:
                    other = segments._data[header.file_id]
                    segments.close_all()
                    handle.close()
                    raise JournalCorruptError(
                        f"file id {header.file_id} also in {other.name}", file=str(path),
                        offset=0)
                segments._data[header.file_id] = segment
            else:
                segments._free.append(segment)
        if removed:
            files.sync_directory(directory)
        return segments

    def check_guard(self) -> None:
        """Raise if this journal may no longer change its directory (fenced)."""
        if self.guard is not None:
            self.guard()

    # -- queries

    def data_ids(self) -> list[int]:
        """File ids of the data files, oldest first."""
        with self._lock:
            return sorted(self._data)

    def data_segments(self) -> list[Segment]:
        """Data files, oldest first."""
        with self._lock:
            return [self._data[file_id] for file_id in sorted(self._data)]

    def get(self, file_id: int) -> Segment:
        """The data file of ``file_id``."""
        with self._lock:
            return self._data[file_id]

    def counts(self) -> tuple[int, int]:
        """(data files, free files)."""
        with self._lock:
            return len(self._data), len(self._free)

    # -- creating, claiming, freeing

    def _allocate_number(self) -> int:
        with self._lock:
            number = self._next_number
            self._next_number += 1
            return number

    def create_free(self) -> Segment:
        """Create a new pool file (FREE header)."""
        self.check_guard()
        number = self._allocate_number()
        path = self.directory / segment_name(self.stem, number)
        header = SegmentHeader(SegmentState.FREE, 0, 0)
        handle = create_file_atomically(self.files, path, self.file_size,
                                        encode_header(SegmentState.FREE, 0, 0))
        self.created_files += 1
        segment = Segment(path, number, handle, header)
        with self._lock:
            self._free.append(segment)
        return segment

    def create_data(self, file_id: int, epoch: int, *, register: bool = True) -> Segment:
        """Create a new file whose header is DATA ``file_id``/``epoch`` (compaction, recover)."""
        self.check_guard()
        number = self._allocate_number()
        path = self.directory / segment_name(self.stem, number)
        handle = create_file_atomically(self.files, path, self.file_size,
                                        encode_header(SegmentState.DATA, file_id, epoch))
        self.created_files += 1
        segment = Segment(path, number, handle, SegmentHeader(SegmentState.DATA, file_id, epoch))
        with self._lock:
            self.highest_file_id = max(self.highest_file_id, file_id)
            if register:
                self._data[file_id] = segment
        return segment

    def ensure_files(self, count: int) -> None:
        """Create pool files until there are at least ``count`` files in all."""
        while sum(self.counts()) < count:
            self.create_free()

    def has_free(self) -> bool:
        """Whether a pool file is ready to claim."""
        with self._lock:
            return bool(self._free)

    def claim(self, file_id: int, epoch: int) -> Segment:
        """Make a file the DATA file of ``file_id``: the oldest pool file, or a new one.

        The header is fdatasynced before this returns (see the module invariants).
        """
        self.check_guard()
        with self._lock:
            segment = self._free.popleft() if self._free else None
        if segment is None:
            return self.create_data(file_id, epoch)
        try:
            # the header and an end mark (zero frame header) where the first record goes, in
            # one write inside the first sector: the file's stale bytes never read as data
            segment.handle.pwrite(encode_header(SegmentState.DATA, file_id, epoch)
                                  + bytes(framing.FRAME_HEADER_SIZE), 0)
            if self.datasync:
                segment.handle.datasync()
        except BaseException:
            with self._lock:
                self._free.appendleft(segment)
            raise
        segment.state = SegmentState.DATA
        segment.file_id = file_id
        segment.epoch = epoch
        self.reused_files += 1
        with self._lock:
            self.highest_file_id = max(self.highest_file_id, file_id)
            self._data[file_id] = segment
        return segment

    def register(self, segment: Segment) -> None:
        """Add a DATA file made elsewhere (compaction outputs)."""
        with self._lock:
            self._data[segment.file_id] = segment

    def unregister(self, file_id: int) -> Segment:
        """Remove a data file from the set without touching it; return it."""
        with self._lock:
            return self._data.pop(file_id)

    def invalidate(self, segment: Segment) -> None:
        """Rewrite the header to FREE (keeping the last id) and fdatasync it."""
        self.check_guard()
        segment.handle.pwrite(encode_header(SegmentState.FREE, segment.file_id, segment.epoch), 0)
        if self.datasync:
            segment.handle.datasync()
        segment.state = SegmentState.FREE

    def release(self, segment: Segment, *, invalidate: bool = True) -> None:
        """Free a file no longer in the data set: back to the pool, or deleted past the limit.

        The file is invalidated first (unless already FREE), so a deleted file that comes back
        after a crash (the unlink was not durable) is only a pool file.
        """
        with self._lock:
            if self._data.get(segment.file_id) is segment:
                del self._data[segment.file_id]
        if invalidate and segment.state is not SegmentState.FREE:
            self.invalidate(segment)
        with self._lock:
            total = len(self._data) + len(self._free)
            keep = (self.pool_files < 0 or len(self._free) < self.pool_files
                    or total < self.min_files)
            if keep:
                self._free.append(segment)
                return
        segment.handle.close()
        self.check_guard()
        self.files.remove(segment.path)
        self.deleted_files += 1

    def close_all(self) -> None:
        """Close every handle."""
        with self._lock:
            segments = [*self._data.values(), *self._free]
        for segment in segments:
            segment.handle.close()


# --------------------------------------------------------------------------------------------
# Writing records into fresh files (compaction outputs, recover)


class SegmentWriter:
    """Write records, in order, into newly created DATA files with consecutive file ids.

    Blocking; used by compaction and ``recover``, never by the live append path. Each file's
    records are gathered in memory and written with one write, then the file is fdatasynced.
    ``last_file_id`` bounds the ids it may use (compaction's reserved range).
    """

    def __init__(self, segments: SegmentSet, *, epoch: int, first_file_id: int,
                 last_file_id: int | None = None) -> None:
        self._segments = segments
        self._epoch = epoch
        self._next_id = first_file_id
        self._last_id = last_file_id
        self._current: Segment | None = None
        self._buffer = bytearray()
        self._offset = HEADER_SIZE
        self._capacity = segments.file_size
        self.outputs: list[Segment] = []

    @property
    def current_file_id(self) -> int | None:
        """Id of the file being filled."""
        return self._current.file_id if self._current is not None else None

    def _roll(self) -> None:
        self._flush()
        if self._last_id is not None and self._next_id > self._last_id:
            raise JournalError(f"compacted data needs more than the file ids reserved "
                               f"(up to {self._last_id})")
        segment = self._segments.create_data(self._next_id, self._epoch, register=False)
        self._next_id += 1
        self.outputs.append(segment)
        self._current = segment
        self._offset = HEADER_SIZE

    def _flush(self) -> None:
        if self._current is not None and self._buffer:
            self._current.handle.pwrite(self._buffer, HEADER_SIZE)
            self._current.handle.datasync()
            self._buffer = bytearray()

    def write(self, kind: int, rest: Iterable[object]) -> tuple[int, int]:
        """Append the record ``[kind, file_id, epoch, *rest]``; return (file id, framed size)."""
        rest = tuple(rest)
        if self._current is None:
            self._roll()
        assert self._current is not None
        record = framing.encode_record((kind, self._current.file_id, self._epoch, *rest))
        if self._offset + len(record) > self._capacity:
            if self._offset > HEADER_SIZE:
                self._roll()
                record = framing.encode_record((kind, self._current.file_id, self._epoch, *rest))
            if self._offset + len(record) > self._capacity:
                raise JournalError(f"a record of {len(record)} bytes does not fit in a journal "
                                   f"file of {self._capacity} bytes")
        self._buffer += record
        self._offset += len(record)
        return self._current.file_id, len(record)

    def finish(self) -> list[Segment]:
        """Write and sync what is buffered; return the files written, in id order."""
        self._flush()
        return list(self.outputs)

    def abandon(self) -> list[Segment]:
        """Stop without flushing; return the files created so far (to remove)."""
        self._buffer = bytearray()
        return list(self.outputs)


def remove_segments(files: FileFactory, segments: Iterable[Segment],
                    on_error: Callable[[Segment, BaseException], None] | None = None) -> None:
    """Close and remove files (best effort when ``on_error`` is given)."""
    for segment in segments:
        try:
            segment.handle.close()
            files.remove(segment.path)
        except Exception as error:
            if on_error is None:
                raise
            on_error(segment, error)
