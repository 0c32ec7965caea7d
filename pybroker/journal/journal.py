"""The journal: an append-only record log with group commit, under all durable storage.

Theory of operation
-------------------
*Appends* (``append``/``update``/``delete``, the ``*_tx`` calls, ``prepare``/``commit``/
``rollback``) run on the event-loop thread and never block on the disk. Each one validates
against the in-memory :class:`_Tracker` (which ids are live, which transactions are open),
frames the record for the file and offset it will occupy, appends the bytes to the newest
*batch* under a lock, and returns a future. The loop thread alone decides where records go
(current file id, offset, rollover), so the file id and epoch inside each record are known
when it is framed.

*One writer thread* takes batches in order. For each it calls ``fence`` (if given), writes the
batch's chunks with ``pwrite``, fdatasyncs every file written since the last sync when the
batch holds a durable record (or an explicit ``sync()``), and resolves the batch's futures
with one ``call_soon_threadsafe``. The records of a batch share its futures: one for those
that wait for the write, one for those that wait for the fdatasync. Whatever arrives while a
batch is being written or synced goes into the next batch: that is the group commit.
``buffer_timeout_ns`` is Artemis's timed-buffer spacing: a batch waits at most that long after
the previous flush started to gather more (0 = write at once); ``buffer_size`` caps a batch. One difference from Artemis's
TimedBuffer: a record that finds the writer idle after a batch of a few records is written at
once, so a lone synchronous producer does not pay the whole timeout per message; under load
(records arriving while a batch is written, or big batches) the spacing applies as in Artemis.

Durability rules the writer keeps (each one prevents a specific bad replay):

* a sync=True future resolves only after the fdatasync that covers it (or after the write
  when journal-datasync/sync-(non-)transactional say not to sync);
* before records go into a new file, the previous file is fdatasynced and the new file's
  header is durable (:mod:`.segment`), so a file's data is complete before a newer file
  has any, and a torn record can only be in the newest file;
* a file is freed (header FREE, fdatasync) only after the records that made it dead are
  durable, and files are freed oldest first, one fdatasync each: a crash never leaves an old
  add without the later delete that killed it;
* after a write or fsync error nothing more is written (no retry after a failed fsync:
  the page cache state is unknown) and every pending and later call fails.

*Files* are reclaimed from the head: when the oldest data file holds no live record it goes
back to the pool. *Compaction* (:mod:`.compactor`) rewrites the live records of every data
file into fresh files whose ids sit just above them; appends continue meanwhile and are
replayed onto the compacted state at the swap.

*Replay* (``load``) reads whole segments, decodes them in bulk, checks every record (length,
CRC32C, file id and epoch), truncates a torn tail of the newest file, refuses damage anywhere
else, and applies transactions at their COMMIT.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgpack
from crc32c import crc32c

from ..errors import ConfigError, JournalClosedError, JournalCorruptError, JournalError
from . import compactor, framing
from .files import FileFactory, OSFileFactory
from .framing import (
    ADD,
    ADD_TX,
    COMMIT,
    DELETE,
    DELETE_TX,
    FRAME_HEADER_SIZE,
    PREPARE,
    ROLLBACK,
    UPDATE,
    UPDATE_TX,
)
from .segment import (
    HEADER_SIZE,
    Segment,
    SegmentHeader,
    SegmentSet,
    SegmentState,
    check_stem,
    scan_segment,
)

logger = logging.getLogger("pybroker.journal")

__all__ = [
    "Journal",
    "JournalOptions",
    "JournalStatistics",
    "LoadResult",
    "PreparedTransaction",
    "RecordInfo",
    "TruncationInfo",
]

MAX_ID: Final = (1 << 64) - 1
#: A record's location in the tracker is one int: ``file_id << _SIZE_BITS | framed size``.
_SIZE_BITS: Final = 40
_SIZE_MASK: Final = (1 << _SIZE_BITS) - 1
JOURNAL_TYPES: Final = ("NIO", "ASYNCIO", "MAPPED")
#: Room left for the file id and epoch to grow when a record is framed again after a rollover.
_ROLLOVER_SLACK: Final = 18


# --------------------------------------------------------------------------------------------
# Public data types


@dataclass(frozen=True)
class JournalOptions:
    """Journal settings; each field's default is Artemis's (broker.xml element in brackets)."""

    #: bytes per segment file [journal-file-size], default 10485760 (10 MiB).
    file_size: int = 10_485_760
    #: files pre-created and always kept [journal-min-files], default 2.
    min_files: int = 2
    #: free files kept for reuse; -1 keeps all [journal-pool-files], default -1.
    pool_files: int = -1
    #: longest a batch waits after the previous flush to gather more writes, in ns; 0 writes
    #: at once [journal-buffer-timeout], default 3333333 (the NIO default).
    buffer_timeout_ns: int = 3_333_333
    #: largest batch in bytes [journal-buffer-size], default 490 KiB.
    buffer_size: int = 490 * 1024
    #: fdatasync for durable prepare/commit/rollback [journal-sync-transactional], default True.
    sync_transactional: bool = True
    #: fdatasync for durable non-transactional records [journal-sync-non-transactional],
    #: default True.
    sync_non_transactional: bool = True
    #: False = never fdatasync: process-crash durability only [journal-datasync], default True.
    datasync: bool = True
    #: compact only with more data files than this; 0 disables [journal-compact-min-files],
    #: default 10.
    compact_min_files: int = 10
    #: compact when live data is under this % of the data files [journal-compact-percentage],
    #: default 30.
    compact_percentage: int = 30
    #: NIO, ASYNCIO or MAPPED [journal-type]; all three use positional writes + fdatasync
    #: here (there is no libaio or mmap path), default "NIO".
    journal_type: str = "NIO"
    #: file name stem: files are ``pybroker-<name>-<N>.pbj``; default "data" (bindings use
    #: "bindings").
    name: str = "data"

    def __post_init__(self) -> None:
        def bad(element: str, message: str) -> ConfigError:
            return ConfigError(message, element=element)

        if self.file_size < 1024:
            raise bad("journal-file-size", f"{self.file_size} bytes is too small (minimum 1024)")
        if self.min_files < 1:
            raise bad("journal-min-files", f"{self.min_files}: at least 1 file is needed")
        if self.pool_files < -1:
            raise bad("journal-pool-files", f"{self.pool_files}: use -1 (keep all) or >= 0")
        if self.buffer_timeout_ns < 0:
            raise bad("journal-buffer-timeout", f"{self.buffer_timeout_ns} is negative")
        if self.buffer_size <= 0:
            raise bad("journal-buffer-size", f"{self.buffer_size} must be positive")
        if self.compact_min_files < 0:
            raise bad("journal-compact-min-files", f"{self.compact_min_files} is negative")
        if not 0 <= self.compact_percentage <= 100:
            raise bad("journal-compact-percentage", f"{self.compact_percentage} is not 0..100")
        if self.journal_type.upper() not in JOURNAL_TYPES:
            raise bad("journal-type", f"{self.journal_type!r}: expected NIO, ASYNCIO or MAPPED")
        try:
            check_stem(self.name)
        except JournalError as error:
            raise ConfigError(str(error)) from None


class RecordInfo(NamedTuple):
    """A committed, live record as replayed: an add, or one of the updates that followed it."""

    id: int
    user_type: int
    body: bytes
    is_update: bool


@dataclass(frozen=True)
class PreparedTransaction:
    """A transaction that was prepared (XA) and neither committed nor rolled back."""

    tx_id: int
    extra: bytes  #: what ``prepare`` was given (the Xid)
    records: list[RecordInfo]  #: its adds and updates, in order
    deletes: list[int]  #: ids it deletes


@dataclass(frozen=True)
class TruncationInfo:
    """A torn tail dropped at load."""

    file: str  #: path of the newest segment
    offset: int  #: where the torn record began
    bytes_dropped: int  #: bytes zeroed from there to the last non-zero byte
    reason: str  #: what was wrong with the first dropped record


@dataclass(frozen=True)
class LoadResult:
    """What :meth:`Journal.load` found."""

    #: committed, not deleted records in journal order (transaction records at their commit)
    records: list[RecordInfo]
    #: prepared transactions still waiting for commit or rollback
    prepared: list[PreparedTransaction]
    #: transactions with no commit, prepare or rollback: discarded (AMQ142015), and a
    #: rollback record appended for each
    incomplete_transactions: int
    #: committed transactions dropped because records were missing (AMQ142014), plus prepared
    #: ones found incomplete (AMQ142013)
    discarded_transactions: int
    #: the torn tail truncated in the newest segment, if any
    truncated_tail: TruncationInfo | None
    files: int  #: data files replayed
    records_read: int  #: valid records read


@dataclass(frozen=True)
class JournalStatistics:
    """Counters of an open journal (a snapshot)."""

    records_written: int  #: records appended since open (all kinds)
    bytes_written: int  #: bytes the writer wrote to segments
    fsyncs: int  #: fdatasync/fsync calls by the writer
    batches: int  #: group commits (writes) done
    largest_batch: int  #: most records in one batch
    data_files: int
    free_files: int
    live_records: int  #: ids added and not deleted
    live_bytes: int  #: framed bytes of the records still needed
    pending_transactions: int  #: open or prepared transactions
    compactions: int
    reclaimed_files: int  #: data files freed without compaction (head reclaim)


# --------------------------------------------------------------------------------------------
# Where records are: the tracker


class _Tx:
    """An open transaction: its records (with their files) until commit or rollback."""

    __slots__ = ("adds", "deletes", "extra", "files", "ops", "prepare_counts", "prepare_location",
                 "prepared", "tx_id")

    def __init__(self, tx_id: int) -> None:
        self.tx_id = tx_id
        #: (kind, record_id, user_type, body, file_id, size); body kept only by replay
        self.ops: list[tuple] = []
        self.files: dict[int, int] = {}  # file id -> records of this tx in it
        self.prepared = False
        self.prepare_location: tuple[int, int] | None = None
        self.prepare_counts: Sequence[int] | None = None
        self.extra: bytes | None = None
        self.adds: set[int] = set()  # ids added by this tx and not deleted by it
        self.deletes: set[int] = set()  # ids this tx deletes


class _Tracker:
    """Which records are live, where they are, and which transactions are open.

    The append path validates first and then calls these methods; replay calls them directly
    and leniently (an update or delete of an unknown id is a record whose add was reclaimed
    or deleted: dead, ignored). Per data file it counts the records still needed (head
    reclaim) and in all the bytes still needed (the compaction trigger).
    """

    __slots__ = ("file_live", "live", "live_bytes", "pending_adds", "txs")

    def __init__(self) -> None:
        # id -> location of its add (an int, see _location) or, once updated, the list of the
        # locations of its add and updates. Ints are not tracked by the garbage collector:
        # with a million live records that is what keeps replay and appends fast.
        self.live: dict[int, int | list[int]] = {}
        self.txs: dict[int, _Tx] = {}
        self.pending_adds: dict[int, int] = {}  # id -> tx adding it
        self.file_live: dict[int, int] = {}
        self.live_bytes = 0

    def _hold(self, file_id: int, size: int) -> None:
        file_live = self.file_live
        file_live[file_id] = file_live.get(file_id, 0) + 1
        self.live_bytes += size

    def _drop(self, file_id: int, size: int) -> None:
        self.file_live[file_id] -= 1
        self.live_bytes -= size

    def _drop_entry(self, entry: int | list[int]) -> None:
        file_live = self.file_live
        if type(entry) is int:
            file_live[entry >> _SIZE_BITS] -= 1
            self.live_bytes -= entry & _SIZE_MASK
            return
        dropped = 0
        for location in entry:
            file_live[location >> _SIZE_BITS] -= 1
            dropped += location & _SIZE_MASK
        self.live_bytes -= dropped

    def _attach(self, record_id: int, entry: int | list[int], location: int) -> None:
        if type(entry) is int:
            self.live[record_id] = [entry, location]
        else:
            entry.append(location)

    def locations(self, record_id: int) -> list[tuple[int, int]]:
        """(file id, size) of each record of a live id (its add, then its updates)."""
        entry = self.live[record_id]
        return [(location >> _SIZE_BITS, location & _SIZE_MASK)
                for location in ([entry] if type(entry) is int else entry)]

    def add(self, record_id: int, file_id: int, size: int) -> None:
        old = self.live.get(record_id)
        if old is not None:
            self._drop_entry(old)
        self.live[record_id] = file_id << _SIZE_BITS | size
        self._hold(file_id, size)

    def update(self, record_id: int, file_id: int, size: int) -> bool:
        entry = self.live.get(record_id)
        if entry is None:
            return False
        self._attach(record_id, entry, file_id << _SIZE_BITS | size)
        self._hold(file_id, size)
        return True

    def delete(self, record_id: int) -> bool:
        entry = self.live.pop(record_id, None)
        if entry is None:
            return False
        self._drop_entry(entry)
        return True

    def tx_record(self, tx_id: int, kind: int, record_id: int, user_type: int | None,
                  body: bytes | None, file_id: int, size: int) -> None:
        tx = self.txs.get(tx_id)
        if tx is None:
            tx = self.txs[tx_id] = _Tx(tx_id)
        tx.ops.append((kind, record_id, user_type, body, file_id, size))
        tx.files[file_id] = tx.files.get(file_id, 0) + 1
        self._hold(file_id, size)
        if kind == ADD_TX:
            self.pending_adds[record_id] = tx_id
            tx.adds.add(record_id)
            tx.deletes.discard(record_id)
        elif kind == DELETE_TX:
            if record_id in tx.adds:
                tx.adds.discard(record_id)
            else:
                tx.deletes.add(record_id)

    def prepare(self, tx_id: int, file_id: int, size: int, extra: bytes | None,
                counts: Sequence[int] | None) -> None:
        tx = self.txs.get(tx_id)
        if tx is None:
            tx = self.txs[tx_id] = _Tx(tx_id)
        if tx.prepare_location is not None:
            self._drop(*tx.prepare_location)
        tx.prepared = True
        tx.prepare_location = (file_id, size)
        tx.prepare_counts = counts
        tx.extra = extra
        self._hold(file_id, size)

    def _forget_adds(self, tx: _Tx) -> None:
        pending = self.pending_adds
        for op in tx.ops:
            if op[0] == ADD_TX and pending.get(op[1]) == tx.tx_id:
                del pending[op[1]]

    def commit(self, tx_id: int) -> _Tx | None:
        tx = self.txs.pop(tx_id, None)
        if tx is None:
            return None
        self._forget_adds(tx)
        if tx.prepare_location is not None:
            self._drop(*tx.prepare_location)
        live = self.live
        for kind, record_id, _user_type, _body, file_id, size in tx.ops:
            if kind == ADD_TX:
                old = live.get(record_id)
                if old is not None:
                    self._drop_entry(old)
                live[record_id] = file_id << _SIZE_BITS | size  # held since the tx record
            elif kind == UPDATE_TX:
                entry = live.get(record_id)
                if entry is None:
                    self._drop(file_id, size)
                else:
                    self._attach(record_id, entry, file_id << _SIZE_BITS | size)
            else:  # DELETE_TX: the delete record itself is not needed after the commit
                self._drop(file_id, size)
                entry = live.pop(record_id, None)
                if entry is not None:
                    self._drop_entry(entry)
        return tx

    def rollback(self, tx_id: int) -> _Tx | None:
        tx = self.txs.pop(tx_id, None)
        if tx is None:
            return None
        self._forget_adds(tx)
        if tx.prepare_location is not None:
            self._drop(*tx.prepare_location)
        for op in tx.ops:
            self._drop(op[4], op[5])
        return tx

    def counts_of(self, tx_id: int) -> list[int]:
        """Flat ``[file_id, n, ...]`` of the transaction's records (for PREPARE/COMMIT)."""
        tx = self.txs.get(tx_id)
        if tx is None:
            return []
        flat: list[int] = []
        for file_id, count in tx.files.items():
            flat.append(file_id)
            flat.append(count)
        return flat


# --------------------------------------------------------------------------------------------
# Replay


_new_info = functools.partial(tuple.__new__, RecordInfo)


class _Replay:
    """Apply decoded records, file by file, to a tracker and to the record list.

    ``present``: ids of the files being replayed (a COMMIT's per-file count is checked only
    for files that are present; the others were reclaimed).
    """

    def __init__(self, present: set[int], *, announce: bool) -> None:
        self.tracker = _Tracker()
        self.present = present
        #: sequence -> (id, user type, body, is update), in journal order. Plain tuples while
        #: replaying: the garbage collector untracks those (not a NamedTuple), so a big
        #: replay is not slowed by full collections over every record read so far.
        self.ordered: dict[int, tuple] = {}
        #: id -> sequence of its add (an int), or the list of its add's and updates' sequences
        self.sequences: dict[int, int | list[int]] = {}
        self.sequence = 0
        self.discarded = 0
        self.records_read = 0
        self._announce = announce

    def feed(self, file_id: int, bodies: list[tuple], sizes: list[int]) -> None:
        """Apply one file's records (the hot path of load: keep it lean)."""
        tracker = self.tracker
        live = tracker.live
        file_live = tracker.file_live
        file_live.setdefault(file_id, 0)
        ordered = self.ordered
        sequences = self.sequences
        sequence = self.sequence
        base = file_id << _SIZE_BITS
        held = 0
        added = 0
        self.records_read += len(bodies)
        for fields, size in zip(bodies, sizes, strict=True):
            kind = fields[0]
            if kind == ADD:
                record_id = fields[3]
                if record_id in live:
                    file_live[file_id] += added
                    added = 0
                    self._forget(record_id)
                live[record_id] = base | size
                added += 1
                held += size
                sequence += 1
                ordered[sequence] = (record_id, fields[4], fields[5], False)
                sequences[record_id] = sequence
            elif kind == UPDATE:
                record_id = fields[3]
                entry = live.get(record_id)
                if entry is None:
                    continue
                if type(entry) is int:
                    live[record_id] = [entry, base | size]
                else:
                    entry.append(base | size)
                added += 1
                held += size
                sequence += 1
                ordered[sequence] = (record_id, fields[4], fields[5], True)
                own = sequences[record_id]
                if type(own) is int:
                    sequences[record_id] = [own, sequence]
                else:
                    own.append(sequence)
            elif kind == DELETE:
                record_id = fields[3]
                if record_id in live:
                    file_live[file_id] += added
                    added = 0
                    self._forget(record_id)
            else:
                file_live[file_id] += added
                added = 0
                self.sequence = sequence
                self._transactional(file_id, fields, size)
                sequence = self.sequence
        file_live[file_id] += added
        self.sequence = sequence
        tracker.live_bytes += held

    def _forget(self, record_id: int) -> None:
        self.tracker.delete(record_id)
        ordered = self.ordered
        own = self.sequences.pop(record_id)
        if type(own) is int:
            del ordered[own]
        else:
            for sequence in own:
                del ordered[sequence]

    def _transactional(self, file_id: int, fields: tuple, size: int) -> None:
        kind = fields[0]
        tracker = self.tracker
        if kind == ADD_TX or kind == UPDATE_TX:
            tracker.tx_record(fields[6], kind, fields[3], fields[4], fields[5], file_id, size)
        elif kind == DELETE_TX:
            tracker.tx_record(fields[4], kind, fields[3], None, None, file_id, size)
        elif kind == PREPARE:
            tracker.prepare(fields[3], file_id, size, fields[5], fields[4])
        elif kind == COMMIT:
            tx_id = fields[3]
            tx = tracker.txs.get(tx_id)
            if tx is None:
                return  # its records were reclaimed, or it was empty
            if not self._complete(tx, fields[4]):
                if self._announce:
                    logger.warning("AMQ142014: Transaction %d is missing elements so the "
                                   "transaction is being ignored", tx_id)
                tracker.rollback(tx_id)
                self.discarded += 1
                return
            tracker.commit(tx_id)
            self._apply(tx)
        elif kind == ROLLBACK:
            tracker.rollback(fields[3])

    def _complete(self, tx: _Tx, counts: Sequence[int] | None) -> bool:
        if counts is None:
            return True
        present = self.present
        files = tx.files
        for index in range(0, len(counts) - 1, 2):
            file_id = counts[index]
            if file_id in present and files.get(file_id, 0) != counts[index + 1]:
                return False
        return True

    def _apply(self, tx: _Tx) -> None:
        """Mirror a commit (already applied to the tracker) on the ordered record list."""
        ordered = self.ordered
        sequences = self.sequences
        for kind, record_id, user_type, body, _file_id, _size in tx.ops:
            if kind == ADD_TX:
                old = sequences.pop(record_id, None)
                if old is not None:
                    for sequence in [old] if type(old) is int else old:
                        del ordered[sequence]
                self.sequence += 1
                ordered[self.sequence] = (record_id, user_type, body, False)
                sequences[record_id] = self.sequence
            elif kind == UPDATE_TX:
                own = sequences.get(record_id)
                if own is not None:
                    self.sequence += 1
                    ordered[self.sequence] = (record_id, user_type, body, True)
                    if type(own) is int:
                        sequences[record_id] = [own, self.sequence]
                    else:
                        own.append(self.sequence)
            else:
                old = sequences.pop(record_id, None)
                if old is not None:
                    for sequence in [old] if type(old) is int else old:
                        del ordered[sequence]

    def records(self) -> list[RecordInfo]:
        """The live records as :class:`RecordInfo`, in journal order."""
        new_info = _new_info
        return [new_info(record) for record in self.ordered.values()]

    def check_prepared(self) -> None:
        """Drop prepared transactions whose records are not all there (AMQ142013)."""
        for tx in list(self.tracker.txs.values()):
            if tx.prepared and not self._complete(tx, tx.prepare_counts):
                if self._announce:
                    logger.warning("AMQ142013: Prepared transaction %d was not considered "
                                   "completed, it will be ignored", tx.tx_id)
                self.tracker.rollback(tx.tx_id)
                self.discarded += 1


# --------------------------------------------------------------------------------------------
# Batches


class _Batch:
    """Records framed on the loop thread, waiting for the writer (guarded by the journal lock)."""

    __slots__ = ("actions", "chunks", "needs_sync", "records", "size", "stop", "sync_futures",
                 "sync_group", "tail", "urgent", "write_futures", "write_group")

    def __init__(self) -> None:
        self.chunks: list[list] = []  # [file_id, offset, bytearray]
        self.tail: list | None = None
        self.size = 0
        self.records = 0
        self.write_futures: list[asyncio.Future[None]] = []  # resolve after the write
        self.sync_futures: list[asyncio.Future[None]] = []  # resolve after the fdatasync
        # the one future every record of this batch that waits for the write (the fdatasync)
        # gets: they all complete together, so one future per group commit serves them all
        self.write_group: _GroupCommit | None = None
        self.sync_group: _GroupCommit | None = None
        self.needs_sync = False
        self.actions: list[Callable[[], None]] = []  # writer-thread work after the sync
        self.urgent = False  # do not wait for buffer_timeout
        self.stop = False  # the writer exits after this batch


class _GroupCommit(asyncio.Future):
    """The future of the records of one batch (a group commit), shared by all of them. A
    waiter that gives up cannot call the write off for the others: ``cancel`` does nothing
    (a task cancelled while awaiting it is cancelled once the batch completes, as with
    ``asyncio.shield``)."""

    def cancel(self, msg: Any = None) -> bool:
        return False


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _fail_futures(futures: list[asyncio.Future[None]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
            # The journal logs its failure once; do not also log every unawaited future.
            future.exception()


class _Compaction:
    __slots__ = ("first", "input_set", "inputs", "last", "oplog")

    def __init__(self, inputs: list[int], first: int, last: int) -> None:
        self.inputs = inputs
        self.input_set = set(inputs)
        self.first = first
        self.last = last
        self.oplog: list[tuple[str, tuple]] = []  # tracker calls made after the cut


_OPENED, _LOADED, _CLOSING, _CLOSED = "opened", "loaded", "closing", "closed"

# Replay allocates an object or two per record and keeps most of them (the LoadResult):
# the cyclic garbage collector would run full collections over all of them again and again
# (measured: a third of the load time for 300k records). Loads pause it; the pause is
# reference-counted because several journals (data, bindings) may load at once, and it only
# lasts while records are decoded (no cycles are made there).
_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_resume = False


@contextlib.contextmanager
def _gc_paused():
    global _gc_pauses, _gc_resume
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_resume:
                # what the load made is long-lived: straight into the oldest generation (a
                # list splice), instead of young collections walking it all right away
                gc.freeze()
                gc.unfreeze()
                gc.enable()
_BODY_TYPES: Final = frozenset({bytes, bytearray, memoryview})
# A record that finds the writer idle is written at once when the last batch held at most this
# many records: a few synchronous writers gain nothing from waiting (PostgreSQL's
# commit_siblings reasoning). After a bigger batch it waits for the buffer timeout as usual.
_FEW_RECORDS: Final = 4
_END_MARK: Final = bytes(FRAME_HEADER_SIZE)


def _check_id(what: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise JournalError(f"{what} {value!r} is not a 64-bit unsigned integer")


# --------------------------------------------------------------------------------------------
# The journal


class Journal:
    """An append-only record journal in one directory. Create with :meth:`open`."""

    def __init__(self, directory: Path, options: JournalOptions, files: FileFactory,
                 segments: SegmentSet, *, epoch: int, fence: Callable[[], None] | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._directory = directory
        self._options = options
        self._files = files
        self._segments = segments
        self._epoch = epoch
        self._fence = fence
        self._loop = loop
        self._state = _OPENED
        self._failure: BaseException | None = None
        self._file_size = options.file_size
        self._max_record = options.file_size - HEADER_SIZE - _ROLLOVER_SLACK
        self._buffer_size = options.buffer_size
        self._timeout_ns = options.buffer_timeout_ns
        self._datasync = options.datasync
        self._sync_non_tx = options.datasync and options.sync_non_transactional
        self._sync_tx = options.datasync and options.sync_transactional
        self._pack = msgpack.Packer(autoreset=True, use_bin_type=True).pack
        self._pack_header = framing.pack_frame_header
        self._new_future = functools.partial(_GroupCommit, loop=loop)

        # loop-thread state: where the next record goes
        self._tracker = _Tracker()
        self._live = self._tracker.live  # shortcuts into the tracker (see _set_tracker)
        self._pending_adds = self._tracker.pending_adds
        self._file_live = self._tracker.file_live
        self._usable = False  # loaded, not closing, not failed: the appends' one check
        self._data_ids: list[int] = []
        self._current_id: int | None = None
        self._offset = HEADER_SIZE
        self._next_id = 1
        self._records_written = 0

        # shared with the writer (under _lock)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._batches: collections.deque[_Batch] = collections.deque()
        self._writer_idle = False
        self._writer_gathering = False
        self._writer: threading.Thread | None = None

        # writer-thread state
        self._w_segment: Segment | None = None
        self._w_dirty: dict[int, Segment] = {}
        self._w_last_flush_ns = 0
        self._w_batches = 0
        self._w_last_records = 0  # records in the last batch written (read by the loop too)
        self._w_bytes = 0
        self._w_fsyncs = 0
        self._w_largest = 0
        self._w_reclaimed = 0

        # the spare-file thread (see _preparer_main)
        self._spare_cond = threading.Condition()
        self._spare_wanted = False
        self._spare_stop = False
        self._spare_idle = True
        self._preparer: threading.Thread | None = None

        self._compaction: _Compaction | None = None
        self._compaction_task: asyncio.Task[None] | None = None  # the automatic one
        #: every compaction task; the journal owns them (close() waits for them)
        self._compaction_tasks: set[asyncio.Task[None]] = set()
        self._compaction_lock = asyncio.Lock()  # one compaction at a time
        self._compaction_blocked: str | None = None
        self._compactions = 0

    # ---------------------------------------------------------------------------- lifecycle

    @classmethod
    async def open(cls, directory: Path, options: JournalOptions, files: FileFactory | None = None,
                   *, epoch: int = 0, fence: Callable[[], None] | None = None) -> Journal:
        """Open (creating if needed) the journal in ``directory``; call :meth:`load` next.

        Leftover temporary files are removed, an interrupted compaction is finished or
        undone, and every segment's size and header are checked (a file whose size is not
        ``file_size`` is an error). ``epoch`` goes into every new segment and record; a
        segment written with a newer epoch makes :meth:`load` fail (a newer broker owns the
        journal). ``fence`` is called before the journal writes anything to the directory: in
        the writer thread before each batch, and before each step of a compaction, of file
        preparation and of load's repairs (so it must be thread-safe and cheap). If it
        raises, nothing more is written and every pending and later call fails with that
        exception.
        """
        _check_id("epoch", epoch)
        files = files if files is not None else OSFileFactory()
        directory = Path(directory)
        loop = asyncio.get_running_loop()
        if options.journal_type.upper() != "NIO":
            logger.debug("journal-type %s: pybroker writes %s with positional writes and "
                         "fdatasync (as NIO)", options.journal_type, directory)

        def blocking() -> SegmentSet:
            segments = SegmentSet.open(files, directory, options.name, options.file_size,
                                       min_files=options.min_files,
                                       pool_files=options.pool_files, datasync=options.datasync,
                                       guard=fence)
            try:
                compactor.recover_interrupted(segments)
            except BaseException:
                segments.close_all()
                raise
            return segments

        segments = await loop.run_in_executor(None, blocking)
        return cls(directory, options, files, segments, epoch=epoch, fence=fence, loop=loop)

    @property
    def directory(self) -> Path:
        """The journal directory."""
        return self._directory

    @property
    def options(self) -> JournalOptions:
        """The options the journal was opened with."""
        return self._options

    async def load(self) -> LoadResult:
        """Replay the journal; must be called once, before anything else.

        A torn tail of the newest segment is truncated (and logged); damage anywhere else
        raises :class:`JournalCorruptError`. Transactions with no outcome are discarded
        (AMQ142015) and a rollback is appended for each.
        """
        if self._state is not _OPENED:
            raise JournalError(f"journal {self._directory}: load() must come first, and once")
        with _gc_paused():
            result, incomplete = await self._loop.run_in_executor(None, self._load_blocking)
        self._state = _LOADED
        self._usable = True
        self._writer = threading.Thread(target=self._writer_main, daemon=True,
                                        name=f"pybroker-journal-{self._options.name}")
        self._writer.start()
        if self._options.pool_files != 0:
            self._preparer = threading.Thread(
                target=self._preparer_main, daemon=True,
                name=f"pybroker-journal-{self._options.name}-files")
            self._preparer.start()
        for tx_id in incomplete:
            self.rollback(tx_id, sync=False)
        self._reclaim_heads()
        return result

    async def close(self) -> None:
        """Write and sync everything appended, stop the writer, close the files."""
        if self._state is _CLOSED or self._state is _CLOSING:
            return
        if self._state is _OPENED:
            self._state = _CLOSED
            self._segments.close_all()
            return
        self._state = _CLOSING
        self._usable = False
        for task in list(self._compaction_tasks):
            try:
                await asyncio.shield(task)
            except Exception:
                pass  # reported to its caller, or logged (automatic compaction)
        future = self._loop.create_future()
        with self._cond:
            if self._failure is None:
                batch = self._tail_batch()
                batch.stop = True
                batch.urgent = True
                if self._datasync:
                    batch.needs_sync = True
                batch.sync_futures.append(future)
                self._cond.notify()
            else:
                future.set_result(None)
        try:
            await future
        except BaseException as error:
            if not isinstance(error, Exception):
                raise
        writer = self._writer
        if writer is not None:
            await self._loop.run_in_executor(None, writer.join)
        await self._loop.run_in_executor(None, self._stop_preparer)
        self._segments.close_all()
        self._state = _CLOSED

    # ---------------------------------------------------------------------------- appends

    def _set_tracker(self, tracker: _Tracker) -> None:
        self._tracker = tracker
        self._live = tracker.live
        self._pending_adds = tracker.pending_adds
        self._file_live = tracker.file_live

    def _check_usable(self) -> None:
        if self._state is not _LOADED:
            if self._state is _OPENED:
                raise JournalError(f"journal {self._directory}: call load() first")
            raise JournalClosedError(f"journal {self._directory} is closed")
        if self._failure is not None:
            raise self._failure.with_traceback(None)  # do not grow one traceback forever

    def append(self, record_id: int, user_type: int, body: bytes, *,
               sync: bool) -> asyncio.Future[None]:
        """Add record ``record_id``. The future resolves once written (synced if ``sync``).

        Callable from the event loop without awaiting; futures resolve in append order. The
        records of one group commit share one future, which cannot be cancelled (a waiter
        that gives up does not call the write off for the others). Adding an id that is live
        (or being added by an open transaction) is an error.
        """
        # The hottest path of the broker: the same steps as _write, inlined.
        if not self._usable:
            self._check_usable()
        live = self._live
        if record_id in live or record_id in self._pending_adds:
            raise JournalError(f"journal {self._directory}: record {record_id} already exists")
        if type(record_id) is not int or not 0 <= record_id <= MAX_ID:
            _check_id("record id", record_id)
        if (type(user_type) is not int or not 0 <= user_type <= 255
                or type(body) not in _BODY_TYPES):
            self._check_body(user_type, body)
        file_id = self._current_id
        offset = self._offset
        if file_id is None:
            return self._append_slow(record_id, user_type, body, sync)
        packed = self._pack([ADD, file_id, self._epoch, record_id, user_type, body])
        length = len(packed)
        size = length + FRAME_HEADER_SIZE
        if offset + size > self._file_size:
            return self._append_slow(record_id, user_type, body, sync)
        header = self._pack_header(length, crc32c(packed))
        with self._lock:
            if self._failure is not None:
                raise self._failure.with_traceback(None)  # do not grow one traceback forever
            batches = self._batches
            batch = batches[-1] if batches else None
            if batch is None or batch.size >= self._buffer_size or batch.stop:
                batch = _Batch()
                batches.append(batch)
            chunk = batch.tail
            if chunk is None or chunk[0] != file_id:
                chunk = batch.tail = [file_id, offset, bytearray()]
                batch.chunks.append(chunk)
            data = chunk[2]
            data += header
            data += packed
            batch.size += size
            batch.records += 1
            if (sync and self._sync_non_tx) or batch.needs_sync:
                batch.needs_sync = True
                future = batch.sync_group
                if future is None:
                    future = batch.sync_group = self._new_future()
                    batch.sync_futures.append(future)
            else:
                future = batch.write_group
                if future is None:
                    future = batch.write_group = self._new_future()
                    batch.write_futures.append(future)
            if self._writer_idle:
                self._writer_idle = False
                if self._w_last_records <= _FEW_RECORDS:  # few writers: do not wait
                    batch.urgent = True
                self._cond.notify()
            elif self._writer_gathering and batch.size >= self._buffer_size:
                self._cond.notify()
        self._offset = offset + size
        self._records_written += 1
        live[record_id] = file_id << _SIZE_BITS | size
        file_live = self._file_live
        file_live[file_id] = file_live.get(file_id, 0) + 1
        self._tracker.live_bytes += size
        if self._compaction is not None:
            self._compaction.oplog.append(("add", (record_id, file_id, size)))
        return future

    def _append_slow(self, record_id: int, user_type: int, body: bytes,
                     sync: bool) -> asyncio.Future[None]:
        """``append`` when the record starts a new file."""
        future, file_id, size = self._write(
            [ADD, 0, self._epoch, record_id, user_type, body], sync and self._sync_non_tx)
        self._tracker.add(record_id, file_id, size)
        if self._compaction is not None:
            self._compaction.oplog.append(("add", (record_id, file_id, size)))
        return future

    def update(self, record_id: int, user_type: int, body: bytes, *,
               sync: bool) -> asyncio.Future[None]:
        """Append an update to live record ``record_id`` (replayed after its add)."""
        if self._state is not _LOADED or self._failure is not None:
            self._check_usable()
        tracker = self._tracker
        entry = tracker.live.get(record_id)
        if entry is None:
            raise self._unknown("update", record_id)
        if (type(user_type) is not int or not 0 <= user_type <= 255
                or type(body) not in _BODY_TYPES):
            self._check_body(user_type, body)
        future, file_id, size = self._write(
            [UPDATE, 0, self._epoch, record_id, user_type, body], sync and self._sync_non_tx)
        tracker._attach(record_id, entry, file_id << _SIZE_BITS | size)
        file_live = tracker.file_live
        file_live[file_id] = file_live.get(file_id, 0) + 1
        tracker.live_bytes += size
        if self._compaction is not None:
            self._compaction.oplog.append(("update", (record_id, file_id, size)))
        return future

    def delete(self, record_id: int, *, sync: bool) -> asyncio.Future[None]:
        """Delete live record ``record_id`` (its add and updates are no longer replayed)."""
        if self._state is not _LOADED or self._failure is not None:
            self._check_usable()
        tracker = self._tracker
        if record_id not in tracker.live:
            raise self._unknown("delete", record_id)
        future, _file_id, _size = self._write([DELETE, 0, self._epoch, record_id],
                                              sync and self._sync_non_tx)
        tracker.delete(record_id)
        if self._compaction is not None:
            self._compaction.oplog.append(("delete", (record_id,)))
        self._reclaim_heads()
        return future

    def append_tx(self, tx_id: int, record_id: int, user_type: int,
                  body: bytes) -> asyncio.Future[None]:
        """Add ``record_id`` in transaction ``tx_id`` (live once the transaction commits)."""
        tx = self._open_tx(tx_id)
        tracker = self._tracker
        if record_id in tracker.live or record_id in tracker.pending_adds:
            raise JournalError(f"journal {self._directory}: record {record_id} already exists")
        _check_id("record id", record_id)
        self._check_body(user_type, body)
        return self._tx_record(tx, ADD_TX, record_id, user_type,
                               [ADD_TX, 0, self._epoch, record_id, user_type, body, tx_id])

    def update_tx(self, tx_id: int, record_id: int, user_type: int,
                  body: bytes) -> asyncio.Future[None]:
        """Update ``record_id`` in transaction ``tx_id``."""
        tx = self._open_tx(tx_id)
        self._check_tx_target(tx, tx_id, record_id, "update")
        self._check_body(user_type, body)
        return self._tx_record(tx, UPDATE_TX, record_id, user_type,
                               [UPDATE_TX, 0, self._epoch, record_id, user_type, body, tx_id])

    def delete_tx(self, tx_id: int, record_id: int) -> asyncio.Future[None]:
        """Delete ``record_id`` in transaction ``tx_id``."""
        tx = self._open_tx(tx_id)
        self._check_tx_target(tx, tx_id, record_id, "delete")
        return self._tx_record(tx, DELETE_TX, record_id, None,
                               [DELETE_TX, 0, self._epoch, record_id, tx_id])

    def prepare(self, tx_id: int, extra: bytes, *, sync: bool) -> asyncio.Future[None]:
        """Prepare transaction ``tx_id`` (XA); ``extra`` (the Xid) is returned by a later load."""
        self._check_usable()
        _check_id("transaction id", tx_id)
        if not isinstance(extra, bytes | bytearray | memoryview):
            raise JournalError(f"prepare extra must be bytes, not {type(extra).__name__}")
        tracker = self._tracker
        tx = tracker.txs.get(tx_id)
        if tx is not None and tx.prepared:
            raise JournalError(f"journal {self._directory}: transaction {tx_id} is already "
                               "prepared")
        counts = tracker.counts_of(tx_id)
        future, file_id, size = self._write([PREPARE, 0, self._epoch, tx_id, counts, extra],
                                            sync and self._sync_tx)
        tracker.prepare(tx_id, file_id, size, None, counts)
        self._log(("prepare", (tx_id, file_id, size, None, counts)))
        return future

    def commit(self, tx_id: int, *, sync: bool) -> asyncio.Future[None]:
        """Commit transaction ``tx_id``: its records take effect."""
        self._check_usable()
        tracker = self._tracker
        if tx_id not in tracker.txs:
            raise JournalError(f"journal {self._directory}: no open transaction {tx_id}")
        future, _file_id, _size = self._write(
            [COMMIT, 0, self._epoch, tx_id, tracker.counts_of(tx_id)], sync and self._sync_tx)
        tracker.commit(tx_id)
        self._log(("commit", (tx_id,)))
        self._reclaim_heads()
        return future

    def rollback(self, tx_id: int, *, sync: bool) -> asyncio.Future[None]:
        """Roll back transaction ``tx_id``: its records are discarded."""
        self._check_usable()
        tracker = self._tracker
        if tx_id not in tracker.txs:
            raise JournalError(f"journal {self._directory}: no open transaction {tx_id}")
        future, _file_id, _size = self._write([ROLLBACK, 0, self._epoch, tx_id],
                                              sync and self._sync_tx)
        tracker.rollback(tx_id)
        self._log(("rollback", (tx_id,)))
        self._reclaim_heads()
        return future

    async def sync(self) -> None:
        """Resolve once everything appended before this call is written and fdatasynced."""
        self._check_usable()
        await self._barrier()

    async def _barrier(self) -> None:
        future = self._loop.create_future()
        with self._cond:
            if self._failure is not None:
                raise self._failure.with_traceback(None)  # do not grow one traceback forever
            batch = self._tail_batch()
            if self._datasync:
                batch.needs_sync = True
            if batch.needs_sync:
                batch.sync_futures.append(future)
            else:
                batch.write_futures.append(future)
            batch.urgent = True
            if self._writer_idle or self._writer_gathering:
                self._writer_idle = False
                self._cond.notify()
        await future

    # -- helpers of the append path

    def _unknown(self, what: str, record_id: int) -> JournalError:
        return JournalError(f"journal {self._directory}: cannot {what} record {record_id}: "
                            "no such live record")

    @staticmethod
    def _check_body(user_type: int, body: object) -> None:
        if type(user_type) is not int or not 0 <= user_type <= 255:
            raise JournalError(f"user type {user_type!r} is not 0..255")
        if not isinstance(body, bytes | bytearray | memoryview):
            raise JournalError(f"record body must be bytes, not {type(body).__name__}")

    def _open_tx(self, tx_id: int) -> _Tx | None:
        self._check_usable()
        _check_id("transaction id", tx_id)
        tx = self._tracker.txs.get(tx_id)
        if tx is not None and tx.prepared:
            raise JournalError(f"journal {self._directory}: transaction {tx_id} is prepared: "
                               "commit or roll it back")
        return tx

    def _check_tx_target(self, tx: _Tx | None, tx_id: int, record_id: int, what: str) -> None:
        if tx is not None and record_id in tx.adds:
            return
        if record_id in self._tracker.live and (tx is None or record_id not in tx.deletes):
            return
        raise JournalError(f"journal {self._directory}: transaction {tx_id} cannot {what} "
                           f"record {record_id}: no such live record")

    def _tx_record(self, tx: _Tx | None, kind: int, record_id: int, user_type: int | None,
                   fields: list) -> asyncio.Future[None]:
        future, file_id, size = self._write(fields, False)
        tx_id = fields[-1]
        self._tracker.tx_record(tx_id, kind, record_id, user_type, None, file_id, size)
        self._log(("tx_record", (tx_id, kind, record_id, user_type, None, file_id, size)))
        return future

    def _log(self, entry: tuple[str, tuple]) -> None:
        if self._compaction is not None:
            self._compaction.oplog.append(entry)

    def _tail_batch(self) -> _Batch:
        """The newest batch (under the lock), started anew when full or when none is waiting."""
        batches = self._batches
        if batches:
            batch = batches[-1]
            if batch.size < self._buffer_size and not batch.stop:
                return batch
        batch = _Batch()
        batches.append(batch)
        return batch

    def _write(self, fields: list, durable: bool) -> tuple[asyncio.Future[None], int, int]:
        """Frame ``fields`` (item 1 becomes the file id) into the newest batch.

        The hot path of every append: framing happens here on the loop thread, and the lock
        is held only to append bytes and the future to the batch.
        """
        file_id = self._current_id
        provisional = fields[1] = file_id if file_id is not None else self._next_id
        body = self._pack(fields)
        length = len(body)
        size = length + FRAME_HEADER_SIZE
        offset = self._offset
        if file_id is None or offset + size > self._file_size:
            if size > self._max_record:
                raise JournalError(
                    f"journal {self._directory}: a record of {size} bytes does not fit in a "
                    f"journal file of {self._file_size} bytes")
            file_id = self._roll()
            offset = self._offset
            if file_id != provisional:
                fields[1] = file_id
                body = self._pack(fields)
                length = len(body)
                size = length + FRAME_HEADER_SIZE
        header = self._pack_header(length, crc32c(body))
        with self._lock:
            if self._failure is not None:
                raise self._failure.with_traceback(None)  # do not grow one traceback forever
            batches = self._batches
            batch = batches[-1] if batches else None
            if batch is None or batch.size >= self._buffer_size or batch.stop:
                batch = _Batch()
                batches.append(batch)
            chunk = batch.tail
            if chunk is None or chunk[0] != file_id:
                chunk = batch.tail = [file_id, offset, bytearray()]
                batch.chunks.append(chunk)
            data = chunk[2]
            data += header
            data += body
            batch.size += size
            batch.records += 1
            if durable or batch.needs_sync:
                batch.needs_sync = True
                future = batch.sync_group
                if future is None:
                    future = batch.sync_group = self._new_future()
                    batch.sync_futures.append(future)
            else:
                future = batch.write_group
                if future is None:
                    future = batch.write_group = self._new_future()
                    batch.write_futures.append(future)
            if self._writer_idle:
                self._writer_idle = False
                if self._w_last_records <= _FEW_RECORDS:  # few writers: do not wait
                    batch.urgent = True
                self._cond.notify()
            elif self._writer_gathering and batch.size >= self._buffer_size:
                self._cond.notify()
        self._offset = offset + size
        self._records_written += 1
        return future, file_id, size

    def _roll(self) -> int:
        """Start the next file (loop side: the writer claims a file when it gets there)."""
        file_id = self._next_id
        self._next_id += 1
        self._current_id = file_id
        self._offset = HEADER_SIZE
        self._data_ids.append(file_id)
        self._tracker.file_live.setdefault(file_id, 0)
        self._maybe_compact()
        return file_id

    def _add_action(self, action: Callable[[], None]) -> None:
        with self._cond:
            batch = self._tail_batch()
            batch.actions.append(action)
            if self._writer_idle:
                self._writer_idle = False
                self._cond.notify()

    def _reclaim_heads(self) -> None:
        """Free the oldest data files while they hold nothing live (never the current one)."""
        ids = self._data_ids
        if not ids:
            return
        file_live = self._tracker.file_live
        compaction = self._compaction
        while ids:
            head = ids[0]
            if (head == self._current_id or file_live.get(head, 0)
                    or (compaction is not None and head in compaction.input_set)):
                return
            ids.pop(0)
            file_live.pop(head, None)
            self._add_action(functools.partial(self._w_free, head))

    # ---------------------------------------------------------------------------- the writer

    def _writer_main(self) -> None:
        cond = self._cond
        batches = self._batches
        while True:
            with cond:
                while not batches:
                    if self._failure is not None:  # failed elsewhere (fence, compaction)
                        return
                    self._writer_idle = True
                    cond.wait()
                self._writer_idle = False
                batch = batches[0]
                timeout = self._timeout_ns
                if timeout and not batch.urgent:
                    deadline = self._w_last_flush_ns + timeout
                    while True:
                        now = time.monotonic_ns()
                        if (now >= deadline or len(batches) > 1 or batch.urgent
                                or batch.size >= self._buffer_size):
                            break
                        self._writer_gathering = True
                        cond.wait((deadline - now) / 1e9)
                    self._writer_gathering = False
                batches.popleft()
            try:
                if not self._process(batch):
                    return
            except BaseException as error:  # a bug: fail the journal rather than hang callers
                logger.exception("journal %s: writer thread failed", self._directory)
                self._fail(JournalError(f"journal {self._directory}: writer failed: {error}"),
                           batch)
                return

    def _process(self, batch: _Batch) -> bool:
        """Write one batch; False once the writer must stop."""
        if (batch.chunks or batch.actions) and self._fence is not None:
            try:
                self._fence()
            except BaseException as error:
                logger.error("journal %s: fenced, nothing more is written: %s",
                             self._directory, error)
                self._fail(error, batch)
                return False
        path: Path | str = self._directory
        operation = "write"
        try:
            self._w_last_flush_ns = time.monotonic_ns()
            if batch.chunks:
                for file_id, offset, data in batch.chunks:
                    segment = self._w_segment
                    if segment is None or segment.file_id != file_id:
                        operation = "switch to a new file"
                        segment = self._w_switch(file_id)
                        operation = "write"
                    path = segment.path
                    # End mark: a zero frame header after the last record (the next batch
                    # overwrites it). A reused file holds stale bytes after its new data;
                    # without the mark they could read as a damaged record.
                    end = offset + len(data)
                    data += _END_MARK[:self._file_size - end]
                    segment.handle.pwrite(data, offset)
                    self._w_dirty[file_id] = segment
                    self._w_bytes += len(data)
                self._w_batches += 1
                self._w_last_records = batch.records
                if batch.records > self._w_largest:
                    self._w_largest = batch.records
            loop = self._loop
            if batch.needs_sync or batch.actions:
                if batch.write_futures:
                    self._call(loop, _resolve, batch.write_futures)
                    batch.write_futures = []
                if self._datasync and self._w_dirty:
                    operation = "fdatasync"
                    for file_id in sorted(self._w_dirty):
                        segment = self._w_dirty[file_id]
                        path = segment.path
                        segment.handle.datasync()
                        self._w_fsyncs += 1
                    self._w_dirty.clear()
                operation = "free a file"
                for action in batch.actions:
                    action()
            futures = batch.write_futures + batch.sync_futures if batch.write_futures \
                else batch.sync_futures
            if futures:
                self._call(loop, _resolve, futures)
        except Exception as error:
            failure: BaseException = JournalError(
                f"journal {self._directory}: {operation} failed on {path}: {error}; the journal "
                "stops (no retry after a failed write or sync)")
            failure.__cause__ = error
            if self._fence is not None:  # the segment set's guard may have fenced us
                try:
                    self._fence()
                except BaseException as fenced:
                    failure = fenced
            logger.error("%s", failure)
            self._fail(failure, batch)
            return False
        return not batch.stop

    def _w_switch(self, file_id: int) -> Segment:
        previous = self._w_segment
        if previous is not None and self._datasync and previous.file_id in self._w_dirty:
            previous.handle.datasync()
            self._w_fsyncs += 1
            del self._w_dirty[previous.file_id]
        try:
            segment = self._segments.get(file_id)
        except KeyError:
            segment = self._segments.claim(file_id, self._epoch)
            if self._datasync:
                self._w_fsyncs += 1
            if self._options.pool_files != 0 and not self._segments.has_free():
                self._want_spare()
        self._w_segment = segment
        return segment

    # ---------------------------------------------------------------------------- spare files

    # Creating a segment (zero-fill, fsync, rename, directory fsync) takes tens of ms for a
    # 10 MiB file: done by the writer it would stall every durable append for that long each
    # time the journal grows by a file. A helper thread keeps one spare file in the pool
    # instead (as Artemis opens the next file ahead); the writer only claims it. If there is
    # no spare when one is needed, the writer creates the file itself.

    def _want_spare(self) -> None:
        with self._spare_cond:
            self._spare_wanted = True
            self._spare_cond.notify_all()

    def _preparer_main(self) -> None:
        cond = self._spare_cond
        while True:
            with cond:
                while not self._spare_stop and not self._spare_wanted:
                    self._spare_idle = True
                    cond.notify_all()
                    cond.wait()
                if self._spare_stop:
                    self._spare_idle = True
                    cond.notify_all()
                    return
                self._spare_wanted = False
                self._spare_idle = False
            try:
                if self._fence is not None:
                    self._fence()
            except BaseException as error:
                logger.error("journal %s: fenced, nothing more is written: %s",
                             self._directory, error)
                self._fail(error)
                continue
            try:
                if not self._segments.has_free() and self._failure is None:
                    self._segments.create_free()
            except Exception as error:  # the writer creates files itself, and reports errors
                logger.warning("journal %s: could not prepare a spare file: %s",
                               self._directory, error)

    def _wait_spare_idle(self, timeout: float | None = None) -> bool:
        """Block until the spare-file thread has nothing to do (tests count I/O operations)."""
        with self._spare_cond:
            return self._spare_cond.wait_for(
                lambda: self._spare_idle and not self._spare_wanted, timeout)

    def _stop_preparer(self) -> None:
        with self._spare_cond:
            self._spare_stop = True
            self._spare_cond.notify_all()
        if self._preparer is not None:
            self._preparer.join()

    def _w_free(self, file_id: int) -> None:
        try:
            segment = self._segments.unregister(file_id)
        except KeyError:
            return
        if self._w_segment is segment:
            self._w_segment = None
        self._w_dirty.pop(file_id, None)
        self._segments.release(segment)
        self._w_reclaimed += 1

    def _call(self, loop: asyncio.AbstractEventLoop, function: Callable[..., Any],
              *args: Any) -> None:
        try:
            loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _fail(self, error: BaseException, batch: _Batch | None = None) -> None:
        """Fail the journal (any thread): pending and later calls fail with the error."""
        with self._cond:
            if self._failure is None:
                self._failure = error
            self._usable = False
            pending = [batch, *self._batches] if batch is not None else list(self._batches)
            self._batches.clear()
            self._cond.notify_all()
        futures = [future for item in pending
                   for future in (*item.write_futures, *item.sync_futures)]
        if futures:
            self._call(self._loop, _fail_futures, futures, self._failure)

    # ---------------------------------------------------------------------------- load

    def _load_blocking(self) -> tuple[LoadResult, list[int]]:
        segments = self._segments.data_segments()
        for segment in segments:
            if segment.epoch > self._epoch:
                raise JournalError(
                    f"{segment.path}: written with epoch {segment.epoch}, newer than this "
                    f"journal's epoch {self._epoch}: another broker owns this journal")
        replay = _Replay({segment.file_id for segment in segments}, announce=True)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pybroker-journal-read") as reader:
            truncated, end_offset = self._replay_segments(segments, replay, reader)
        replay.check_prepared()

        tracker = replay.tracker
        self._data_ids = [segment.file_id for segment in segments]
        if segments and segments[-1].epoch == self._epoch:
            self._current_id = segments[-1].file_id
            self._offset = end_offset
            self._w_segment = segments[-1]
        else:
            self._current_id = None
        self._next_id = self._segments.highest_file_id + 1

        prepared: list[PreparedTransaction] = []
        incomplete: list[int] = []
        for tx in tracker.txs.values():
            if tx.prepared:
                prepared.append(PreparedTransaction(
                    tx.tx_id, tx.extra or b"",
                    [_new_info((op[1], op[2], op[3], op[0] == UPDATE_TX))
                     for op in tx.ops if op[0] != DELETE_TX],
                    [op[1] for op in tx.ops if op[0] == DELETE_TX]))
            else:
                logger.warning("AMQ142015: Uncommitted transaction with id %d found and "
                               "discarded", tx.tx_id)
                incomplete.append(tx.tx_id)
            tx.ops = [(op[0], op[1], op[2], None, op[4], op[5]) for op in tx.ops]
            tx.extra = None
        self._set_tracker(tracker)
        self._segments.ensure_files(self._options.min_files)
        result = LoadResult(replay.records(), prepared, len(incomplete),
                            replay.discarded, truncated, len(segments), replay.records_read)
        return result, incomplete

    def _replay_segments(self, segments: list[Segment], replay: _Replay,
                         reader: concurrent.futures.Executor) -> tuple[TruncationInfo | None, int]:
        """Feed every segment to ``replay``, the next one read (by ``reader``: pread releases
        the GIL) while the current one is decoded. Returns the torn tail cut from the newest
        segment, if any, and where its records end."""
        truncated: TruncationInfo | None = None
        end_offset = HEADER_SIZE
        size = self._file_size
        pending = reader.submit(segments[0].handle.pread, size, 0) if segments else None
        for index, segment in enumerate(segments):
            assert pending is not None
            data = pending.result()
            pending = (reader.submit(segments[index + 1].handle.pread, size, 0)
                       if index + 1 < len(segments) else None)
            header = SegmentHeader(SegmentState.DATA, segment.file_id, segment.epoch)
            scan = scan_segment(data, header)
            damage = scan.damage
            newest = index == len(segments) - 1
            if damage is not None and not scan.clean:
                if scan.next_valid is not None:
                    raise JournalCorruptError(
                        f"{damage.kind.value} record ({damage.detail}) with valid records after "
                        f"it (next at offset {scan.next_valid})", file=str(segment.path),
                        offset=damage.offset)
                if not newest:
                    raise JournalCorruptError(
                        f"{damage.kind.value} record ({damage.detail}) in a segment that is not "
                        "the newest", file=str(segment.path), offset=damage.offset)
                truncated = TruncationInfo(str(segment.path), scan.stop, scan.dirty_bytes,
                                           damage.kind.value)
                logger.warning("journal %s: torn tail at offset %d (%s: %s): dropping %d bytes",
                               segment.path, scan.stop, damage.kind.value, damage.detail,
                               scan.dirty_bytes)
                self._segments.check_guard()
                segment.handle.pwrite(bytes(scan.dirty_bytes), scan.stop)
                segment.handle.datasync()
            replay.feed(segment.file_id, scan.bodies, scan.sizes)
            end_offset = scan.stop
        return truncated, end_offset

    # ---------------------------------------------------------------------------- compaction

    def _maybe_compact(self) -> None:
        options = self._options
        if (options.compact_min_files == 0 or self._compaction is not None
                or self._compaction_blocked is not None or self._state is not _LOADED
                or (self._compaction_task is not None and not self._compaction_task.done())):
            return
        files = len(self._data_ids)
        if files <= options.compact_min_files:
            return
        if self._tracker.live_bytes * 100 >= options.compact_percentage * files * self._file_size:
            return
        self._compaction_task = self._start_compaction(self._compact_logged())

    def _start_compaction(self, coroutine) -> asyncio.Task[None]:
        task = self._loop.create_task(coroutine, name=f"compact {self._directory}")
        self._compaction_tasks.add(task)
        task.add_done_callback(self._compaction_tasks.discard)
        return task

    async def _compact_serialized(self) -> None:
        async with self._compaction_lock:
            if self._state is not _LOADED or self._failure is not None:
                self._check_usable()
            await self._run_compaction()

    async def _compact_logged(self) -> None:
        try:
            await self._compact_serialized()
        except Exception as error:
            logger.error("journal %s: automatic compaction failed: %s", self._directory, error)

    async def compact(self) -> None:
        """Rewrite the live records into fresh files and free the old ones.

        Also runs by itself when there are more than ``compact_min_files`` data files and the
        live data is under ``compact_percentage`` of them. Appends may go on meanwhile; a
        crash at any point leaves a journal that loads to the same state.
        """
        self._check_usable()
        # A task of the journal's own, shielded: cancelling the caller does not stop a
        # compaction half-way (its files would outlive the journal's knowledge of them).
        await asyncio.shield(self._start_compaction(self._compact_serialized()))

    async def _run_compaction(self) -> None:
        if self._compaction_blocked is not None:
            raise JournalError(self._compaction_blocked)
        inputs = list(self._data_ids)
        if not inputs:
            return
        first = self._next_id
        last = first + 2 * len(inputs) + 1
        self._next_id = last + 1
        if self._current_id is not None:
            self._offset = self._file_size  # the next append starts a file above ``last``
        compaction = self._compaction = _Compaction(inputs, first, last)
        loop = self._loop
        try:
            await self._barrier()
            input_segments = [self._segments.get(file_id) for file_id in inputs]
            outputs, tracker = await loop.run_in_executor(
                None, self._compact_blocking, input_segments, first, last)
        except BaseException as error:
            self._compaction = None
            self._raise_if_fenced(error)
            if isinstance(error, compactor.CompactionCleanupError):
                self._compaction_blocked = str(error)
            if isinstance(error, JournalError):
                raise
            raise JournalError(f"journal {self._directory}: compaction failed: {error}") \
                from error
        # The swap: synchronous on the loop thread, so no append interleaves with it.
        for name, arguments in compaction.oplog:
            getattr(tracker, name)(*arguments)
        self._set_tracker(tracker)
        self._data_ids = [segment.file_id for segment in outputs] + [
            file_id for file_id in self._data_ids if file_id > last]
        for segment in outputs:
            self._segments.register(segment)
        replaced = [self._segments.unregister(file_id) for file_id in inputs]
        self._compaction = None
        self._compactions += 1
        try:
            await loop.run_in_executor(None, compactor.finish, self._segments, replaced)
        except Exception as error:
            self._raise_if_fenced(error)
            self._compaction_blocked = (
                f"journal {self._directory}: freeing the files replaced by a compaction failed "
                f"({error}); compaction is off until the journal is reopened")
            raise JournalError(self._compaction_blocked) from error
        finally:
            if self._state is _LOADED and self._failure is None:
                self._reclaim_heads()

    def _raise_if_fenced(self, error: BaseException) -> None:
        """After a compaction error: if the fence says we are stale, fail with its exception."""
        if self._fence is None or not isinstance(error, Exception):
            return
        try:
            self._fence()
        except BaseException as fenced:  # a stale owner: stop everything, touch nothing more
            self._fail(fenced)
            raise fenced from error

    def _compact_blocking(self, inputs: list[Segment], first: int,
                          last: int) -> tuple[list[Segment], _Tracker]:
        replay = _Replay({segment.file_id for segment in inputs}, announce=False)
        for segment in inputs:
            data = segment.handle.pread(self._file_size, 0)
            scan = scan_segment(data, SegmentHeader(SegmentState.DATA, segment.file_id,
                                                    segment.epoch))
            if not scan.clean:
                assert scan.damage is not None
                raise JournalCorruptError(f"{scan.damage.kind.value} record found while "
                                          "compacting", file=str(segment.path),
                                          offset=scan.damage.offset)
            replay.feed(segment.file_id, scan.bodies, scan.sizes)
        source = replay.tracker
        tracker = _Tracker()

        def produce(writer: Any) -> None:
            # live records (adds with their updates) in journal order, then open transactions
            for record_id, user_type, body, is_update in replay.ordered.values():
                kind = UPDATE if is_update else ADD
                file_id, size = writer.write(kind, (record_id, user_type, body))
                if kind == ADD:
                    tracker.add(record_id, file_id, size)
                else:
                    tracker.update(record_id, file_id, size)
            for tx in source.txs.values():
                for kind, record_id, user_type, body, _file_id, _size in tx.ops:
                    if kind == DELETE_TX:
                        rest: tuple = (record_id, tx.tx_id)
                    else:
                        rest = (record_id, user_type, body, tx.tx_id)
                    file_id, size = writer.write(kind, rest)
                    tracker.tx_record(tx.tx_id, kind, record_id, user_type, None, file_id, size)
                if tx.prepared:
                    counts = tracker.counts_of(tx.tx_id)
                    file_id, size = writer.write(PREPARE, (tx.tx_id, counts, tx.extra or b""))
                    tracker.prepare(tx.tx_id, file_id, size, None, counts)

        outputs = compactor.write_outputs(
            self._segments, inputs=[segment.file_id for segment in inputs],
            first_reserved=first, last_reserved=last, epoch=self._epoch, produce=produce)
        for segment in outputs:
            tracker.file_live.setdefault(segment.file_id, 0)
        return outputs, tracker

    # ---------------------------------------------------------------------------- statistics

    def statistics(self) -> JournalStatistics:
        """A snapshot of the journal's counters."""
        data_files, free_files = self._segments.counts()
        tracker = self._tracker
        return JournalStatistics(
            records_written=self._records_written, bytes_written=self._w_bytes,
            fsyncs=self._w_fsyncs, batches=self._w_batches, largest_batch=self._w_largest,
            data_files=data_files, free_files=free_files, live_records=len(tracker.live),
            live_bytes=tracker.live_bytes, pending_transactions=len(tracker.txs),
            compactions=self._compactions, reclaimed_files=self._w_reclaimed)

    def __repr__(self) -> str:
        return f"Journal({str(self._directory)!r}, name={self._options.name!r}, {self._state})"
