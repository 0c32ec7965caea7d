"""Offline journal tools behind ``pybroker data print|verify|recover`` (run on a stopped broker).

Nothing here writes to the journal it reads. Every function sees the journal as the next open
would: data files in file-id order, and an interrupted compaction resolved the way
:func:`pybroker.journal.compactor.recover_interrupted` would resolve it.

* :func:`iterate_records` yields every valid record with its file, offset and kind, skipping
  over damage to the next valid record.
* :func:`verify` checks every record and reports each damaged region with file and offset.
* :func:`recover` copies every valid record, in order, into a fresh journal in another
  directory; transactions that lost records are dropped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import JournalCorruptError, JournalError
from . import compactor, framing
from .files import FileFactory, OSFileFactory
from .framing import COMMIT, PREPARE, RecordKind
from .journal import JournalOptions
from .segment import (
    HEADER_SIZE,
    SegmentHeader,
    SegmentSet,
    SegmentState,
    SegmentWriter,
    control_name,
    decode_header,
    is_temporary,
    parse_segment_name,
    read_small_file,
)

logger = logging.getLogger("pybroker.journal")

__all__ = [
    "DamagedRegion",
    "FileReport",
    "RecordView",
    "RecoverReport",
    "VerifyReport",
    "iterate_records",
    "recover",
    "verify",
]


@dataclass(frozen=True)
class RecordView:
    """One valid record as stored (for ``data print``)."""

    file: str
    offset: int
    size: int
    kind: RecordKind
    file_id: int
    epoch: int
    record_id: int | None
    user_type: int | None
    tx_id: int | None
    body: bytes | None  #: payload (add/update), or the prepare's extra
    counts: tuple[tuple[int, int], ...] | None  #: per-file record counts (prepare/commit)


@dataclass(frozen=True)
class DamagedRegion:
    """Bytes of a segment that hold no valid record although valid data was expected."""

    file: str
    offset: int
    length: int
    kind: str  #: what stopped decoding there (a :class:`~.framing.DamageKind` value)
    detail: str
    torn_tail: bool  #: at the end of the newest file with nothing valid after it (a crash)


@dataclass(frozen=True)
class FileReport:
    """One segment file."""

    file: str
    state: str  #: "data", "free", or "ignored" (replaced by an interrupted compaction)
    file_id: int
    epoch: int
    records: int
    end_offset: int  #: where this file's valid data ends


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify`."""

    directory: str
    files: list[FileReport]
    records: int
    damage: list[DamagedRegion]
    problems: list[str]  #: file-level problems (bad header, wrong size, ...)

    @property
    def ok(self) -> bool:
        """No damage and no problems at all."""
        return not self.damage and not self.problems

    @property
    def loadable(self) -> bool:
        """The journal would load (at most a torn tail, which load truncates)."""
        return not self.problems and all(region.torn_tail for region in self.damage)


@dataclass(frozen=True)
class RecoverReport:
    """Result of :func:`recover`."""

    source: str
    destination: str
    records_salvaged: int
    damaged_regions: list[DamagedRegion]
    bytes_lost: int  #: bytes of the damaged regions
    transactions_dropped: int  #: commits/prepares dropped because records were lost
    files_read: int
    files_written: int
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Reading a journal directory without changing it


@dataclass
class _File:
    path: Path
    header: SegmentHeader
    data: bytes


def _read_directory(files: FileFactory, directory: Path, options: JournalOptions,
                    problems: list[str]) -> tuple[list[_File], list[FileReport]]:
    stem = options.name
    found: list[tuple[int, str]] = []
    for name in files.list_directory(directory):
        if is_temporary(stem, name):
            problems.append(f"{directory / name}: leftover temporary file (removed at open)")
            continue
        number = parse_segment_name(stem, name)
        if number is not None:
            found.append((number, name))
    reports: list[FileReport] = []
    data_files: list[_File] = []
    for _number, name in sorted(found):
        path = directory / name
        handle = files.open(path)
        try:
            size = handle.size()
            content = handle.pread(size, 0)
        finally:
            handle.close()
        if size < HEADER_SIZE:
            problems.append(f"{path}: {size} bytes, shorter than a header (removed at open)")
            continue
        if size != options.file_size:
            problems.append(f"{path}: the file is not {options.file_size} bytes long "
                            f"({size} bytes)")
        try:
            header = decode_header(content[:HEADER_SIZE], path)
        except (JournalCorruptError, JournalError) as error:
            problems.append(str(error))
            continue
        if header.state is SegmentState.FREE:
            reports.append(FileReport(str(path), "free", header.file_id, header.epoch, 0,
                                      HEADER_SIZE))
            continue
        data_files.append(_File(path, header, content))
    control_path = directory / control_name(stem)
    if files.exists(control_path):
        try:
            control = compactor.CompactionControl.decode(read_small_file(files, control_path),
                                                         str(control_path))
        except JournalCorruptError as error:
            problems.append(str(error))
        else:
            if control.state == compactor.STARTED:
                def ignored(file_id: int) -> bool:
                    return control.first_reserved <= file_id <= control.last_reserved
            else:
                inputs = set(control.inputs)

                def ignored(file_id: int) -> bool:
                    return file_id in inputs
            kept = []
            for item in data_files:
                if ignored(item.header.file_id):
                    reports.append(FileReport(str(item.path), "ignored", item.header.file_id,
                                              item.header.epoch, 0, HEADER_SIZE))
                else:
                    kept.append(item)
            data_files = kept
            logger.info("%s: interrupted compaction (%s) resolved as the next open would",
                        control_path, control.state)
    data_files.sort(key=lambda item: item.header.file_id)
    return data_files, reports


def _scan_with_resync(item: _File, newest: bool,
                      ) -> tuple[list[tuple[tuple, int, int]], list[DamagedRegion], int]:
    """Every valid record of one file as (fields, offset, size), the damage, the data end."""
    data = item.data
    header = item.header
    end = len(data)
    records: list[tuple[tuple, int, int]] = []
    damage: list[DamagedRegion] = []
    position = HEADER_SIZE
    data_end = HEADER_SIZE
    while position < end:
        bodies, sizes, stop, problem = framing.decode_records(
            data, position, end, header.file_id, header.epoch,
            max_length=end - HEADER_SIZE - framing.FRAME_HEADER_SIZE)
        offset = position
        for fields, size in zip(bodies, sizes, strict=True):
            records.append((fields, offset, size))
            offset += size
        data_end = stop
        if problem is None:
            break
        following = framing.find_next_record(data, stop + 1, header.file_id, header.epoch, end)
        if following is None:
            if not problem.kind.is_end_of_data:
                tail = data[stop:]
                length = len(tail.rstrip(b"\x00"))
                damage.append(DamagedRegion(str(item.path), stop, length, problem.kind.value,
                                            problem.detail, torn_tail=newest))
            break
        damage.append(DamagedRegion(str(item.path), stop, following - stop, problem.kind.value,
                                    problem.detail, torn_tail=False))
        position = following
    return records, damage, data_end


def _view(path: Path, fields: tuple, offset: int, size: int) -> RecordView:
    record = framing.parse_record(fields, offset, size)
    return RecordView(str(path), offset, size, record.kind, record.file_id, record.epoch,
                      record.record_id, record.user_type, record.tx_id, record.body,
                      record.counts)


def iterate_records(directory: Path, options: JournalOptions, files: FileFactory | None = None,
                    ) -> Iterator[RecordView]:
    """Yield every valid record of the journal in ``directory``, in journal order."""
    files = files or OSFileFactory()
    data_files, _reports = _read_directory(files, Path(directory), options, [])
    for index, item in enumerate(data_files):
        records, _damage, _end = _scan_with_resync(item, index == len(data_files) - 1)
        for fields, offset, size in records:
            yield _view(item.path, fields, offset, size)


def verify(directory: Path, options: JournalOptions,
           files: FileFactory | None = None) -> VerifyReport:
    """Check every record of the journal in ``directory``; report damage with file/offset."""
    files = files or OSFileFactory()
    directory = Path(directory)
    problems: list[str] = []
    data_files, reports = _read_directory(files, directory, options, problems)
    damage: list[DamagedRegion] = []
    total = 0
    for index, item in enumerate(data_files):
        records, file_damage, end = _scan_with_resync(item, index == len(data_files) - 1)
        total += len(records)
        damage.extend(file_damage)
        reports.append(FileReport(str(item.path), "data", item.header.file_id, item.header.epoch,
                                  len(records), end))
    reports.sort(key=lambda report: report.file)
    return VerifyReport(str(directory), reports, total, damage, problems)


def recover(source: Path, destination: Path, options: JournalOptions,
            files: FileFactory | None = None) -> RecoverReport:
    """Copy every valid record of ``source`` into a fresh journal in ``destination``.

    Records keep their order; per-file transaction counts are recomputed for the new files.
    A COMMIT or PREPARE whose transaction lost records (its counts do not match what was
    salvaged) is dropped, so that transaction loads as incomplete and is discarded.
    """
    files = files or OSFileFactory()
    source = Path(source)
    destination = Path(destination)
    if source.resolve() == destination.resolve():
        raise JournalError(f"recover: the destination must differ from the source ({source})")
    problems: list[str] = []
    data_files, _reports = _read_directory(files, source, options, problems)
    files.make_directory(destination)
    for name in files.list_directory(destination):
        if parse_segment_name(options.name, name) is not None or name == control_name(
                options.name):
            raise JournalError(f"recover: {destination} already holds a journal ({name})")
    epoch = max((item.header.epoch for item in data_files), default=0)
    segments = SegmentSet.open(files, destination, options.name, options.file_size,
                               min_files=options.min_files, pool_files=options.pool_files,
                               datasync=True)
    writer = SegmentWriter(segments, epoch=epoch, first_file_id=1)
    present = {item.header.file_id for item in data_files}
    source_counts: dict[int, dict[int, int]] = {}  # tx -> source file id -> salvaged records
    target_counts: dict[int, dict[int, int]] = {}  # tx -> destination file id -> records
    damage: list[DamagedRegion] = []
    salvaged = 0
    dropped = 0
    try:
        for index, item in enumerate(data_files):
            records, file_damage, _end = _scan_with_resync(item, index == len(data_files) - 1)
            damage.extend(file_damage)
            source_id = item.header.file_id
            for fields, _offset, _size in records:
                kind = fields[0]
                if kind in (COMMIT, PREPARE):
                    tx_id = fields[3]
                    counts = fields[4]
                    salvaged_counts = source_counts.get(tx_id, {})
                    complete = all(
                        counts[i] not in present or salvaged_counts.get(counts[i], 0)
                        == counts[i + 1] for i in range(0, len(counts) - 1, 2))
                    if not complete:
                        dropped += 1
                        logger.warning("recover: transaction %d lost records: its %s is "
                                       "dropped", tx_id, RecordKind(kind).name.lower())
                        continue
                    new_counts = [number for pair in target_counts.get(tx_id, {}).items()
                                  for number in pair]
                    rest = [tx_id, new_counts, *fields[5:]]
                    writer.write(kind, rest)
                    if kind == COMMIT:
                        source_counts.pop(tx_id, None)
                        target_counts.pop(tx_id, None)
                    salvaged += 1
                    continue
                file_id, _size = writer.write(kind, fields[3:])
                salvaged += 1
                tx_id = _tx_of(fields)
                if tx_id is not None:
                    per_source = source_counts.setdefault(tx_id, {})
                    per_source[source_id] = per_source.get(source_id, 0) + 1
                    per_target = target_counts.setdefault(tx_id, {})
                    per_target[file_id] = per_target.get(file_id, 0) + 1
                elif kind == framing.ROLLBACK:
                    source_counts.pop(fields[3], None)
                    target_counts.pop(fields[3], None)
        outputs = writer.finish()
        for segment in outputs:
            segments.register(segment)
        segments.ensure_files(options.min_files)
    finally:
        segments.close_all()
    return RecoverReport(str(source), str(destination), salvaged, damage,
                         sum(region.length for region in damage), dropped, len(data_files),
                         len(outputs), problems)


def _tx_of(fields: tuple) -> int | None:
    kind = fields[0]
    if kind in (framing.ADD_TX, framing.UPDATE_TX):
        return fields[6]
    if kind == framing.DELETE_TX:
        return fields[4]
    return None
