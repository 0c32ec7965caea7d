"""Page files of one address: :class:`PageStore`.

Theory of operation
-------------------
Layout (as Artemis)::

    <paging-directory>/<random UUID>/address.txt      the address name + "\\n"
    <paging-directory>/<random UUID>/000000001.page   page files, 9 zero-padded digits
    <paging-directory>/<random UUID>/000000002.page   ...

The folder of an address is found by reading ``address.txt`` (:meth:`PageStore.scan`). A page
file is a sequence of records in the journal's framing (:mod:`pybroker.journal.framing`)::

    u32 length (big-endian) | u32 crc32c(body) | body = msgpack [message_id, [queue_id, ...],
                                                                 data, tx_id or nil]

followed by nothing, or by zeros (a torn tail zeroed at load, see below). Page files are never
reused, so unlike journal segments they need no file id or epoch in each record. A page rolls
over when the next record would take it past ``page_size_bytes`` (a page always takes at least
one record, so a record bigger than a page gets a page of its own), as Artemis's
``PagingStoreImpl`` does.

*Appends* run on the event-loop thread: the loop alone assigns each record its page and index
(so :meth:`PageStore.append` can say where a record went before it is written), frames it and
appends the bytes to the newest *batch*. *One writer thread* takes batches in order, writes
them with ``pwrite``, fdatasyncs once per batch when ``sync`` is on, and resolves the batch's
futures with one ``call_soon_threadsafe``: whatever arrives while a batch is written or synced
goes into the next batch (group commit, as in the journal). The thread starts with the first
append and exits after it has been idle for a while, so an address that stopped paging costs
no thread.

Durability rules the writer keeps (each one prevents a specific bad replay):

* with ``sync`` a future resolves only after the fdatasync that covers its record; without it,
  after the write (page-sync off: process-crash durability only);
* before the first byte goes into a new page, the previous page is fdatasynced (even without
  ``sync``) and the new file's name is made durable (directory fsync): a page is complete on
  disk before a newer page has any data, so a torn record can only be in the *last* page;
* :meth:`PageStore.close` fdatasyncs the current page (even without ``sync``): a clean stop
  leaves nothing to lose;
* after a write or sync error nothing more is written (no retry after a failed fsync: the page
  cache state is unknown) and every pending and later append fails with ``StorageError``.

*Load* (:meth:`PageStore.load`) reads each page (one at a time) and checks every record
(length, CRC32C, body shape). Zeros up to the end of a file are the end of its data. In the
last page, damage with no valid record anywhere after it is a torn tail: it is zeroed
(idempotent, so no marker is needed if that crashes too), fdatasynced, logged with the file and
offset, and new records go where the torn one began, never after garbage (ARTEMIS-2425 lost
messages by appending after a torn record). Any other damage (a valid record after it, or
damage in an earlier page) raises :class:`~pybroker.errors.StorageError` naming file and offset.

*Deletion*: :meth:`PageStore.delete_page` removes a page every queue acknowledged (durably:
file removal + directory fsync). Deleting the current page first creates the next (empty)
page, so page numbers never go back, not even across a restart. :meth:`PageStore.delete`
removes the whole folder: ``address.txt`` is first renamed to ``deleted.txt`` (durably), which
takes the folder out of :meth:`PageStore.scan` at once; a scan that finds a folder with that
marker finishes the deletion.

Memory: only the batches not yet written and what :meth:`PageStore.read_page` returns (one
page's records) are held; load decodes one page at a time and keeps counts only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack
from crc32c import crc32c

from ..errors import StorageError
from ..journal.files import FileFactory, JournalFile, MemoryFileFactory, OSFileFactory
from ..journal.framing import (
    FRAME_HEADER_SIZE,
    Damage,
    DamageKind,
    pack_frame_header,
    unpack_frame_header,
)

logger = logging.getLogger("pybroker.paging")

__all__ = [
    "ADDRESS_FILE",
    "DELETED_FILE",
    "PageInfo",
    "PageLoad",
    "PagePosition",
    "PageScan",
    "PageStore",
    "PageStoreStatistics",
    "PageTruncation",
    "PagedRecord",
    "decode_page",
    "encode_paged_record",
    "page_file_name",
    "parse_page_file_name",
]

ADDRESS_FILE: Final = "address.txt"
#: ``address.txt`` renamed: the folder is being deleted (a scan finishes the deletion).
DELETED_FILE: Final = "deleted.txt"
_ADDRESS_TEMP: Final = "address.txt.tmp"
_PAGE_NAME: Final = re.compile(r"^([0-9]{9,})\.page$")
MAX_ID: Final = (1 << 64) - 1
#: The smallest body: fixarray(4), 0, fixarray(0), bin8 of 0 bytes, nil.
MIN_BODY_SIZE: Final = 6
_ARRAY4: Final = 0x94
#: A batch stops taking records at this size (the next one starts).
_BATCH_LIMIT: Final = 4 << 20
#: The writer thread exits after this many seconds without work (restarted by the next append).
_IDLE_EXIT_SECONDS: Final = 5.0


# --------------------------------------------------------------------------------------------
# Public data types


@dataclass(frozen=True)
class PagedRecord:
    """One paged message: its id, the queues it was routed to, its encoded bytes, its tx."""

    message_id: int
    queue_ids: tuple[int, ...]
    data: bytes
    tx_id: int | None = None


@dataclass(frozen=True, order=True)
class PagePosition:
    """Where a record is: page number and index of the record within the page (from 0)."""

    page: int
    index: int


@dataclass(frozen=True)
class PageInfo:
    """One page as loaded: its number, how many records and valid bytes it holds, and how
    many records went to each (transaction id or None, queue ids) -- what a restart needs to
    count each queue's paged messages without keeping the records."""

    page: int
    records: int
    size_bytes: int
    routes: dict[tuple[int | None, tuple[int, ...]], int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class PageTruncation:
    """A torn tail zeroed at load."""

    file: str  #: path of the last page
    offset: int  #: where the first dropped record began (new records go here)
    bytes_dropped: int  #: bytes zeroed from there to the last non-zero byte
    reason: str  #: what was wrong with the first dropped record


@dataclass(frozen=True)
class PageLoad:
    """What :meth:`PageStore.load` found."""

    address: str
    folder: Path
    pages: tuple[PageInfo, ...]  #: present pages, oldest first
    record_count: int
    size_bytes: int  #: valid record bytes over all pages
    truncated: PageTruncation | None  #: the torn tail cut from the last page, if any
    #: (message id, transaction id or None) of the records whose message id was asked for
    found: frozenset[tuple[int, int | None]] = frozenset()

    @property
    def first_page(self) -> int:
        """The oldest page present (0 when there is none)."""
        return self.pages[0].page if self.pages else 0

    @property
    def last_page(self) -> int:
        """The newest page present (0 when there is none)."""
        return self.pages[-1].page if self.pages else 0


@dataclass(frozen=True)
class PageStoreStatistics:
    """Counters of an open page store (a snapshot)."""

    records_appended: int  #: since open
    bytes_written: int  #: by the writer thread
    batches: int  #: group commits (writes) done
    largest_batch: int  #: most records in one batch
    fsyncs: int  #: fdatasync calls on page files
    pages_created: int
    pages_deleted: int
    pending_bytes: int  #: appended, not yet written


# --------------------------------------------------------------------------------------------
# Names and records (sans-I/O)


def page_file_name(page: int) -> str:
    """``000000007.page`` for page 7."""
    return f"{page:09d}.page"


def parse_page_file_name(name: str) -> int | None:
    """The page number of a page file name, or None if ``name`` is not one."""
    match = _PAGE_NAME.match(name)
    if match is None:
        return None
    number = int(match.group(1))
    return number if number > 0 else None


_packer = msgpack.Packer(autoreset=True, use_bin_type=True)


def _check_record(record: PagedRecord) -> None:
    message_id, queue_ids, data, tx_id = (record.message_id, record.queue_ids, record.data,
                                          record.tx_id)
    if type(message_id) is not int or not 0 <= message_id <= MAX_ID:
        raise StorageError(f"paged message id {message_id!r} is not a 64-bit unsigned integer")
    if not isinstance(queue_ids, tuple | list) or not all(
            type(queue_id) is int and 0 <= queue_id <= MAX_ID for queue_id in queue_ids):
        raise StorageError(f"paged message {message_id}: queue ids {queue_ids!r} are not a "
                           "tuple of 64-bit unsigned integers")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise StorageError(f"paged message {message_id}: data is {type(data).__name__}, "
                           "not bytes")
    if tx_id is not None and (type(tx_id) is not int or not 0 <= tx_id <= MAX_ID):
        raise StorageError(f"paged message {message_id}: transaction id {tx_id!r} is not a "
                           "64-bit unsigned integer")


def encode_paged_record(record: PagedRecord) -> bytes:
    """The framed bytes of ``record`` (validated first; raises StorageError)."""
    _check_record(record)
    body = _packer.pack((record.message_id, record.queue_ids, record.data, record.tx_id))
    return pack_frame_header(len(body), crc32c(body)) + body


def _is_record(fields: object) -> bool:
    """Whether a decoded body array is a page record."""
    if type(fields) is not tuple or len(fields) != 4:
        return False
    message_id, queue_ids, data, tx_id = fields
    if type(message_id) is not int or message_id < 0 or type(data) is not bytes:
        return False
    if type(queue_ids) is not tuple or not all(
            type(queue_id) is int and queue_id >= 0 for queue_id in queue_ids):
        return False
    return tx_id is None or (type(tx_id) is int and tx_id >= 0)


def _record_of(fields: object) -> PagedRecord | None:
    """The record a decoded body array stands for, or None if it is not a page record."""
    if not _is_record(fields):
        return None
    message_id, queue_ids, data, tx_id = fields  # type: ignore[misc]
    return PagedRecord(message_id, queue_ids, data, tx_id)


def _unpack(body: bytes | memoryview) -> object:
    try:
        return msgpack.unpackb(body, use_list=False)
    except Exception:  # msgpack raises several unrelated types on garbage
        return None


@dataclass(frozen=True)
class PageScan:
    """What :func:`decode_page` found in one page image."""

    records: list[PagedRecord] | None  #: decoded records (None when only counting)
    count: int  #: valid records before ``stop``
    stop: int  #: end of the valid records (where the next one goes)
    damage: Damage | None  #: why decoding stopped before the end; None = clean end or zeros
    next_valid: int | None  #: offset of a valid record after the damage (corruption), if any
    dirty_bytes: int  #: bytes from ``stop`` to the last non-zero byte (what a truncation zeroes)
    #: records per (transaction id or None, queue ids), when only counting
    routes: dict[tuple[int | None, tuple[int, ...]], int] | None = None
    #: (message id, transaction id) of the records whose message id is in ``wanted``
    found: list[tuple[int, int | None]] | None = None


def _valid_at(data: bytes, pos: int, end: int) -> int:
    """Framed size of a valid page record at ``pos``, or 0."""
    if pos < 0 or pos + FRAME_HEADER_SIZE + MIN_BODY_SIZE > end:
        return 0
    length, checksum = unpack_frame_header(data, pos)
    start = pos + FRAME_HEADER_SIZE
    if length < MIN_BODY_SIZE or start + length > end:
        return 0
    body = memoryview(data)[start:start + length]
    if crc32c(body) != checksum or _record_of(_unpack(body)) is None:
        return 0
    return FRAME_HEADER_SIZE + length


def find_next_record(data: bytes, start: int, end: int | None = None) -> int | None:
    """Offset of the first valid page record at or after ``start``, or None.

    Every body opens with ``fixarray(4)`` (0x94), 8 bytes into the frame: candidates come from
    a C-speed ``find`` of that byte, each checked in full (length, CRC, body shape).
    """
    if end is None:
        end = len(data)
    search = start + FRAME_HEADER_SIZE
    while True:
        hit = data.find(b"\x94", search, end)
        if hit < 0:
            return None
        if _valid_at(data, hit - FRAME_HEADER_SIZE, end):
            return hit - FRAME_HEADER_SIZE
        search = hit + 1


def decode_page(data: bytes, *, decode: bool = True, wanted: frozenset[int] | set[int] = frozenset()
                ) -> PageScan:
    """Decode the image of one page file.

    With ``decode`` False the bodies are checked (CRC and shape) and counted per (transaction
    id, queue ids) in ``routes``, not turned into :class:`PagedRecord` objects: the load path
    counts records this way, and notes the records whose message id is in ``wanted``.
    """
    end = len(data)
    view = memoryview(data)
    records: list[PagedRecord] | None = [] if decode else None
    routes: dict[tuple[int | None, tuple[int, ...]], int] | None = None if decode else {}
    found: list[tuple[int, int | None]] | None = None if decode else []
    count = 0
    pos = 0
    damage: Damage | None = None
    while pos < end:
        if pos + FRAME_HEADER_SIZE > end:
            if data.count(0, pos, end) != end - pos:
                damage = Damage(DamageKind.TRUNCATED, pos, "frame header cut short")
            break
        length, checksum = unpack_frame_header(data, pos)
        if length == 0:
            if checksum == 0 and data.count(0, pos, end) == end - pos:
                break  # zeros to the end of the file: the end of the data
            damage = Damage(DamageKind.ZEROED if checksum == 0 else DamageKind.BAD_LENGTH, pos,
                            "zeroed bytes before more data" if checksum == 0
                            else "zero length with a checksum")
            break
        if length < MIN_BODY_SIZE:
            damage = Damage(DamageKind.BAD_LENGTH, pos, f"length {length}")
            break
        body_start = pos + FRAME_HEADER_SIZE
        body_end = body_start + length
        if body_end > end:
            damage = Damage(DamageKind.TRUNCATED, pos,
                            f"record of {length} bytes runs past the end of the file")
            break
        body = view[body_start:body_end]
        if crc32c(body) != checksum:
            damage = Damage(DamageKind.BAD_CRC, pos, "checksum mismatch")
            break
        if records is not None:
            record = _record_of(_unpack(body))
            if record is None:
                damage = Damage(DamageKind.BAD_BODY, pos, "body is not a page record")
                break
            records.append(record)
        else:
            fields = _unpack(body) if data[body_start] == _ARRAY4 else None
            if not _is_record(fields):
                damage = Damage(DamageKind.BAD_BODY, pos, "body is not a page record")
                break
            key = (fields[3], fields[1])  # type: ignore[index]
            routes[key] = routes.get(key, 0) + 1  # type: ignore[index]
            if wanted and fields[0] in wanted:  # type: ignore[index]
                found.append((fields[0], fields[3]))  # type: ignore[index,union-attr]
        count += 1
        pos = body_end
    next_valid = None
    dirty = 0
    if damage is not None:
        next_valid = find_next_record(data, pos + 1, end)
        dirty = len(data[pos:].rstrip(b"\x00"))
    return PageScan(records, count, pos, damage, next_valid, dirty, routes, found)


# --------------------------------------------------------------------------------------------
# Directory operations FileFactory does not have yet (see _list_directories)


def _list_directories(files: FileFactory, directory: Path) -> list[str]:
    """Names of the subdirectories of ``directory`` (blocking)."""
    lister = getattr(files, "list_directories", None)
    if lister is not None:
        return sorted(lister(directory))
    if isinstance(files, MemoryFileFactory):
        # Stopgap until FileFactory grows list_directories: the memory file system keeps
        # directories as keys of its name table (list_directory shows files only).
        with files._disk.lock:
            files._check_alive(directory)
            key = Path(directory)
            return sorted(Path(name).name for name in files._disk.names
                          if Path(name).parent == key and Path(name) != key)
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


def _remove_directory(files: FileFactory, directory: Path) -> None:
    """Remove the empty directory ``directory`` (blocking)."""
    remover = getattr(files, "remove_directory", None)
    if remover is not None:
        remover(directory)
        return
    if isinstance(files, MemoryFileFactory):
        with files._disk.lock:  # stopgap, see _list_directories
            files._check_alive(directory)
            key = str(Path(directory))
            if files._disk.names.get(key):
                raise OSError(f"{directory}: directory not empty")
            files._disk.names.pop(key, None)
            files._disk.durable_names.pop(key, None)
        return
    os.rmdir(directory)


def _read_all(files: FileFactory, path: Path) -> bytes:
    handle = files.open(path)
    try:
        return handle.pread(handle.size(), 0)
    finally:
        handle.close()


def _read_address(files: FileFactory, folder: Path) -> str | None:
    """The address named by ``folder``/address.txt, or None if it is missing or not valid."""
    try:
        data = _read_all(files, folder / ADDRESS_FILE)
    except FileNotFoundError:
        return None
    return _parse_address(data)


def _parse_address(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    if not text or "\n" in text or "\r" in text:
        return None
    return text


def _finish_deletion(files: FileFactory, folder: Path) -> None:
    """Remove every file of a folder marked deleted, the marker last, then the folder."""
    names = files.list_directory(folder)
    for name in names:
        if name != DELETED_FILE:
            try:
                files.remove(folder / name)
            except FileNotFoundError:
                pass
    files.sync_directory(folder)
    try:
        files.remove(folder / DELETED_FILE)
    except FileNotFoundError:
        pass
    files.sync_directory(folder)
    _remove_directory(files, folder)
    files.sync_directory(folder.parent)


# --------------------------------------------------------------------------------------------
# Batches (guarded by the store's condition lock)


class _Batch:
    __slots__ = ("action", "chunks", "futures", "records", "size", "stop", "tail")

    def __init__(self) -> None:
        self.chunks: list[list[Any]] = []  # [page, offset, bytearray]
        self.tail: list[Any] | None = None
        self.futures: list[tuple[asyncio.Future[PagePosition], PagePosition]] = []
        self.size = 0
        self.records = 0
        #: writer-thread work done alone in its batch, in order with the writes around it;
        #: resolves its own future
        self.action: tuple[Callable[[], None], asyncio.Future[None]] | None = None
        self.stop = False  # the writer exits after this batch


def _resolve_positions(pairs: list[tuple[asyncio.Future[PagePosition], PagePosition]]) -> None:
    for future, position in pairs:
        if not future.done():
            future.set_result(position)


def _resolve_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail_all(futures: Iterable[asyncio.Future[Any]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
            future.exception()  # logged once by the store, not once per unawaited future


def _call(loop: asyncio.AbstractEventLoop, function: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(function, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


# --------------------------------------------------------------------------------------------
# The store

# Lifecycle. OPENED: found on disk, load() must come first. READY: appends and reads.
# FAILED: a write or sync failed; reads and close still work. CLOSED / DELETED: final.
_OPENED, _READY, _FAILED, _CLOSED, _DELETED = "opened", "ready", "failed", "closed", "deleted"
_ALLOWED: Final = {
    "load": {_OPENED},
    "append": {_READY},
    "read_page": {_READY, _FAILED},
    "delete_page": {_READY},
    "delete": {_OPENED, _READY, _FAILED},
    "close": {_OPENED, _READY, _FAILED, _CLOSED, _DELETED},
}


class PageStore:
    """The page files of one address. Make one with :meth:`create` or :meth:`open`."""

    def __init__(self, folder: Path, address: str, *, page_size_bytes: int,
                 files: FileFactory, sync: bool, loop: asyncio.AbstractEventLoop) -> None:
        if page_size_bytes <= 0:
            raise StorageError(f"page store {folder}: page-size-bytes {page_size_bytes} must be "
                               "positive")
        self.folder = folder
        self.address = address
        self._page_size = page_size_bytes
        self._files = files
        self._sync = sync
        self._loop = loop
        self._state = _OPENED
        # loop-thread state: where the next record goes, what is present
        self._pages: dict[int, list[int]] = {}  # page -> [records, bytes], oldest first
        self._current = 0
        self._offset = 0
        self._page_records = 0
        self._records = 0
        self._bytes = 0
        self._appended = 0
        self._pending_bytes = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # shared with the writer (under _cond)
        self._cond = threading.Condition()
        self._batches: collections.deque[_Batch] = collections.deque()
        self._writer: threading.Thread | None = None
        self._writer_idle = False
        self._failure: StorageError | None = None
        self._ends: dict[int, int] = {}  # page -> end of the written records
        # writer-thread state
        self._w_page = 0
        self._w_handle: JournalFile | None = None
        self._w_dirty = False
        self._w_bytes = 0
        self._w_batches = 0
        self._w_largest = 0
        self._w_fsyncs = 0
        self._w_created = 0
        self._w_deleted = 0

    # ------------------------------------------------------------------------ construction

    @classmethod
    async def create(cls, paging_directory: Path, address: str, *, page_size_bytes: int,
                     files: FileFactory | None = None, sync: bool = True) -> PageStore:
        """Make a new folder ``<paging_directory>/<random UUID>`` for ``address``.

        ``address.txt`` is written crash-atomically (temp file, fsync, rename, directory
        fsync). The store is ready at once (there is nothing to load).
        """
        if not address or "\n" in address or "\r" in address:
            raise StorageError(f"paging: {address!r} cannot name a page folder")
        files = files if files is not None else OSFileFactory()
        loop = asyncio.get_running_loop()
        folder = Path(paging_directory) / str(uuid.uuid4())

        def blocking() -> None:
            files.make_directory(folder)
            temp = folder / _ADDRESS_TEMP
            handle = files.open(temp, create=True)
            try:
                handle.pwrite((address + "\n").encode("utf-8"), 0)
                handle.fullsync()
            finally:
                handle.close()
            files.rename(temp, folder / ADDRESS_FILE)
            files.sync_directory(folder)
            files.sync_directory(folder.parent)

        try:
            await loop.run_in_executor(None, blocking)
        except OSError as error:
            raise StorageError(f"paging {address!r}: cannot create {folder}: {error}") from error
        store = cls(folder, address, page_size_bytes=page_size_bytes, files=files, sync=sync,
                    loop=loop)
        store._state = _READY
        logger.info("paging %r: new page folder %s", address, folder)
        return store

    @classmethod
    async def open(cls, folder: Path, *, page_size_bytes: int, files: FileFactory | None = None,
                   sync: bool = True) -> PageStore:
        """Open an existing page folder (as found by :meth:`scan`); :meth:`load` comes next."""
        files = files if files is not None else OSFileFactory()
        loop = asyncio.get_running_loop()
        folder = Path(folder)
        try:
            address = await loop.run_in_executor(None, _read_address, files, folder)
        except OSError as error:
            raise StorageError(f"page folder {folder}: cannot read {ADDRESS_FILE}: "
                               f"{error}") from error
        if address is None:
            raise StorageError(f"page folder {folder}: no valid {ADDRESS_FILE}")
        return cls(folder, address, page_size_bytes=page_size_bytes, files=files, sync=sync,
                   loop=loop)

    @staticmethod
    async def scan(paging_directory: Path, files: FileFactory | None = None) -> dict[str, Path]:
        """The page folders under ``paging_directory``: address -> folder.

        A folder without a valid ``address.txt`` is logged and skipped, never deleted; a folder
        whose deletion was interrupted (``deleted.txt``) has its deletion finished. Two folders
        naming one address raise StorageError (neither can be chosen without losing messages).
        A missing ``paging_directory`` holds no folders.
        """
        files = files if files is not None else OSFileFactory()
        directory = Path(paging_directory)

        def blocking() -> dict[str, Path]:
            if not files.exists(directory):
                return {}
            found: dict[str, Path] = {}
            for name in _list_directories(files, directory):
                folder = directory / name
                entries = files.list_directory(folder)
                if ADDRESS_FILE not in entries and DELETED_FILE in entries:
                    logger.info("paging: finishing the interrupted deletion of %s", folder)
                    _finish_deletion(files, folder)
                    continue
                address = _read_address(files, folder)
                if address is None:
                    logger.warning("paging: %s has no valid %s: skipped (not deleted)",
                                   folder, ADDRESS_FILE)
                    continue
                if address in found:
                    raise StorageError(f"paging: address {address!r} has two page folders, "
                                       f"{found[address]} and {folder}")
                found[address] = folder
            return found

        try:
            return await asyncio.get_running_loop().run_in_executor(None, blocking)
        except OSError as error:
            raise StorageError(f"paging: cannot scan {directory}: {error}") from error

    # ------------------------------------------------------------------------ state

    def _require(self, event: str) -> None:
        if self._state not in _ALLOWED[event]:
            if self._state == _FAILED and self._failure is not None:
                raise StorageError(f"page store {self.folder} ({self.address!r}) failed, "
                                   f"{event} refused: {self._failure}")
            raise StorageError(f"page store {self.folder} ({self.address!r}): {event} is not "
                               f"allowed when {self._state}")

    @property
    def current_page(self) -> int:
        """The page new records go to (0 before the first page exists)."""
        return self._current

    @property
    def first_page(self) -> int:
        """The oldest page present (0 when there is none)."""
        return next(iter(self._pages), 0)

    @property
    def pages(self) -> tuple[int, ...]:
        """The pages present, oldest first (the current one included)."""
        return tuple(self._pages)

    @property
    def size_bytes(self) -> int:
        """Framed bytes of the records in the pages present (appended ones included)."""
        return self._bytes

    @property
    def record_count(self) -> int:
        """Records in the pages present (appended ones included)."""
        return self._records

    @property
    def page_size_bytes(self) -> int:
        """The rollover size."""
        return self._page_size

    @property
    def pending_bytes(self) -> int:
        """Bytes appended and not yet written by the writer thread."""
        return self._pending_bytes

    def page_records(self, page: int) -> int:
        """How many records page ``page`` holds (appended ones included); 0 if absent."""
        info = self._pages.get(page)
        return info[0] if info else 0

    def statistics(self) -> PageStoreStatistics:
        """A snapshot of the store's counters."""
        return PageStoreStatistics(self._appended, self._w_bytes, self._w_batches,
                                   self._w_largest, self._w_fsyncs, self._w_created,
                                   self._w_deleted, self._pending_bytes)

    def _path(self, page: int) -> Path:
        return self.folder / page_file_name(page)

    # ------------------------------------------------------------------------ load

    async def load(self, wanted: frozenset[int] | set[int] = frozenset()) -> PageLoad:
        """Check every page, cut a torn tail of the last one, and get ready for appends;
        ``PageLoad.found`` tells which of the message ids in ``wanted`` the pages hold.

        Raises StorageError (naming file and offset) for damage that is not a torn tail.
        """
        self._require("load")
        try:
            infos, ends, truncated, found = await self._loop.run_in_executor(
                None, self._load_blocking, wanted)
        except OSError as error:
            raise StorageError(f"page store {self.folder} ({self.address!r}): load failed: "
                               f"{error}") from error
        for info in infos:
            self._pages[info.page] = [info.records, info.size_bytes]
            self._records += info.records
            self._bytes += info.size_bytes
        self._ends = ends
        if infos:
            last = infos[-1]
            self._current = last.page
            self._offset = ends[last.page]
            self._page_records = last.records
        self._state = _READY
        return PageLoad(self.address, self.folder, tuple(infos), self._records, self._bytes,
                        truncated, frozenset(found))

    def _load_blocking(self, wanted: frozenset[int] | set[int] = frozenset()
                       ) -> tuple[list[PageInfo], dict[int, int], PageTruncation | None,
                                  list[tuple[int, int | None]]]:
        files = self._files
        numbers = sorted(number for number in map(parse_page_file_name,
                                                  files.list_directory(self.folder))
                         if number is not None)
        infos: list[PageInfo] = []
        ends: dict[int, int] = {}
        truncated: PageTruncation | None = None
        found: list[tuple[int, int | None]] = []
        for position, page in enumerate(numbers):
            path = self._path(page)
            last = position == len(numbers) - 1
            handle = files.open(path)
            try:
                data = handle.pread(handle.size(), 0)
                scan = decode_page(data, decode=False, wanted=wanted)
                damage = scan.damage
                if damage is not None:
                    if scan.next_valid is not None:
                        raise StorageError(
                            f"page file {path} at offset {damage.offset}: {damage.kind.value} "
                            f"record ({damage.detail}) with valid records after it (next at "
                            f"offset {scan.next_valid})")
                    if not last:
                        raise StorageError(
                            f"page file {path} at offset {damage.offset}: {damage.kind.value} "
                            f"record ({damage.detail}) in a page that is not the last one")
                    logger.warning("paging %r: torn tail in %s at offset %d (%s: %s): dropping "
                                   "%d bytes", self.address, path, scan.stop, damage.kind.value,
                                   damage.detail, scan.dirty_bytes)
                    handle.pwrite(bytes(scan.dirty_bytes), scan.stop)
                    handle.datasync()
                    truncated = PageTruncation(str(path), scan.stop, scan.dirty_bytes,
                                               damage.kind.value)
            finally:
                handle.close()
            infos.append(PageInfo(page, scan.count, scan.stop, scan.routes or {}))
            found.extend(scan.found or ())
            ends[page] = scan.stop
            del data, scan
        return infos, ends, truncated, found

    # ------------------------------------------------------------------------ append

    def append(self, record: PagedRecord) -> asyncio.Future[PagePosition]:
        """Queue ``record`` for the current page; the future gives where it went.

        With ``sync`` the future resolves after the fdatasync covering the record, else after
        the write. Raises StorageError at once for a bad record or a store that failed.
        """
        if self._state is not _READY:
            self._require("append")
        framed = encode_paged_record(record)
        size = len(framed)
        if self._current == 0 or (self._page_records and self._offset + size > self._page_size):
            self._roll()
        page = self._current
        offset = self._offset
        position = PagePosition(page, self._page_records)
        future: asyncio.Future[PagePosition] = self._loop.create_future()
        with self._cond:
            if self._failure is not None:
                raise StorageError(f"page store {self.folder} ({self.address!r}) failed: "
                                   f"{self._failure}")
            batches = self._batches
            batch = batches[-1] if batches else None
            if batch is None or batch.size >= _BATCH_LIMIT or batch.action is not None:
                batch = _Batch()
                batches.append(batch)
            chunk = batch.tail
            if chunk is None or chunk[0] != page:
                chunk = batch.tail = [page, offset, bytearray()]
                batch.chunks.append(chunk)
            chunk[2] += framed
            batch.size += size
            batch.records += 1
            batch.futures.append((future, position))
            self._wake_writer()
        self._offset = offset + size
        self._page_records += 1
        info = self._pages[page]
        info[0] += 1
        info[1] += size
        self._records += 1
        self._bytes += size
        self._appended += 1
        self._pending_bytes += size
        return future

    def _roll(self) -> None:
        """Start the next page (loop side; the writer creates the file when it gets there)."""
        self._current += 1
        self._offset = 0
        self._page_records = 0
        self._pages[self._current] = [0, 0]

    def _wake_writer(self) -> None:
        """Under _cond: make sure a writer thread will see the batches."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._writer_main, daemon=True,
                                            name=f"pybroker-paging-{self.address}")
            self._writer.start()
        elif self._writer_idle:
            self._writer_idle = False
            self._cond.notify()

    async def wait_writable(self, limit: int) -> None:
        """Return once at most ``limit`` appended bytes wait for the writer (back-pressure)."""
        if self._failure is not None:
            raise StorageError(f"page store {self.folder} failed: {self._failure}")
        if self._pending_bytes <= limit:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((limit, future))
        await future

    def _written(self, pairs: list[tuple[asyncio.Future[PagePosition], PagePosition]],
                 size: int) -> None:
        """Loop side of a finished batch: resolve, then release back-pressure waiters."""
        _resolve_positions(pairs)
        self._pending_bytes -= size
        if self._waiters:
            pending = self._pending_bytes
            keep = []
            for limit, future in self._waiters:
                if pending <= limit:
                    if not future.done():
                        future.set_result(None)
                else:
                    keep.append((limit, future))
            self._waiters = keep

    def _failed(self, error: StorageError, futures: list[asyncio.Future[Any]]) -> None:
        if self._state in (_READY, _OPENED):
            self._state = _FAILED
        _fail_all(futures, error)
        waiters, self._waiters = self._waiters, []
        _fail_all((future for _, future in waiters), error)

    # ------------------------------------------------------------------------ the writer

    def _writer_main(self) -> None:
        cond = self._cond
        batches = self._batches
        while True:
            with cond:
                while not batches:
                    self._writer_idle = True
                    cond.wait(_IDLE_EXIT_SECONDS)
                    if not batches and self._writer_idle:
                        # idle: release the thread (the next append starts another one)
                        self._writer = None
                        self._writer_idle = False
                        return
                self._writer_idle = False
                batch = batches.popleft()
            try:
                if not self._process(batch):
                    return
            except BaseException as error:  # a bug: fail the store rather than hang callers
                logger.exception("page store %s: writer thread failed", self.folder)
                self._fail(StorageError(f"page store {self.folder}: writer failed: {error}"),
                           batch)
                return

    def _process(self, batch: _Batch) -> bool:
        """Write one batch (or run its action); False once the writer must stop."""
        path: Path = self.folder
        operation = "write"
        try:
            if batch.action is not None:
                operation = "update the page files"
                action, future = batch.action
                action()
                _call(self._loop, _resolve_none, future)
            if batch.chunks:
                for page, offset, data in batch.chunks:
                    operation = "open a page"
                    handle = self._w_switch(page)
                    path = handle.path
                    operation = "write"
                    handle.pwrite(data, offset)
                    self._w_dirty = True
                    with self._cond:
                        self._ends[page] = offset + len(data)
                    self._w_bytes += len(data)
                if self._sync and self._w_dirty and self._w_handle is not None:
                    operation = "fdatasync"
                    self._w_handle.datasync()
                    self._w_fsyncs += 1
                    self._w_dirty = False
                self._w_batches += 1
                if batch.records > self._w_largest:
                    self._w_largest = batch.records
                _call(self._loop, self._written, batch.futures, batch.size)
            if batch.stop:
                operation = "fdatasync"
                self._w_sync_current()  # a clean close leaves durable pages, sync or not
                self._w_close()
                return False
        except Exception as error:
            failure = StorageError(f"page store {self.folder} ({self.address!r}): {operation} "
                                   f"failed on {path}: {error}; nothing more is written to it "
                                   "(no retry after a failed write or sync)")
            failure.__cause__ = error
            logger.error("%s", failure)
            self._fail(failure, batch)
            self._w_close()
            return False
        return True

    def _w_switch(self, page: int) -> JournalFile:
        """The handle of ``page``; a new page becomes durable before it gets data."""
        handle = self._w_handle
        if handle is not None and self._w_page == page:
            return handle
        self._w_sync_current()
        self._w_close()
        path = self._path(page)
        if self._files.exists(path):
            handle = self._files.open(path)
        else:
            handle = self._files.open(path, create=True)
            self._files.sync_directory(self.folder)
            self._w_created += 1
        self._w_handle = handle
        self._w_page = page
        return handle

    def _w_sync_current(self) -> None:
        """fdatasync the page being left (always, sync or not: see the durability rules)."""
        if self._w_handle is not None and self._w_dirty:
            self._w_handle.datasync()
            self._w_fsyncs += 1
            self._w_dirty = False

    def _w_close(self) -> None:
        handle, self._w_handle = self._w_handle, None
        self._w_page = 0
        if handle is not None:
            handle.close()

    def _fail(self, error: StorageError, batch: _Batch) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = error
            pending = [batch, *self._batches]
            self._batches.clear()
        futures: list[asyncio.Future[Any]] = []
        for item in pending:
            futures.extend(future for future, _ in item.futures)
            if item.action is not None:
                futures.append(item.action[1])
        _call(self._loop, self._failed, self._failure, futures)

    def _queue_action(self, action: Callable[[], None], *, stop: bool = False
                      ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        with self._cond:
            if self._failure is not None:
                raise StorageError(f"page store {self.folder} ({self.address!r}) failed: "
                                   f"{self._failure}")
            batch = _Batch()
            batch.action = (action, future)
            batch.stop = stop
            self._batches.append(batch)
            self._wake_writer()
        return future

    async def _stop_writer(self) -> None:
        """Let the writer finish every queued batch and exit; close its handle."""
        with self._cond:
            writer = self._writer
            failed = self._failure is not None
        if writer is not None and not failed:
            try:
                await self._queue_action(lambda: None, stop=True)
            except StorageError:
                pass
        with self._cond:
            writer = self._writer
        if writer is not None:
            await self._loop.run_in_executor(None, writer.join)
        # the thread has gone (or never ran): its handle is ours now
        await self._loop.run_in_executor(None, self._w_close)

    # ------------------------------------------------------------------------ reads

    async def read_page(self, page: int) -> list[PagedRecord]:
        """Every record of ``page`` whose append has been written, in order, validated.

        Raises StorageError naming file and offset if the page is damaged.
        """
        self._require("read_page")
        if page not in self._pages:
            raise StorageError(f"page store {self.folder} ({self.address!r}): no page {page} "
                               f"(pages {self.first_page}..{self._current})")
        with self._cond:
            end = self._ends.get(page, 0)
        if end == 0:
            return []
        path = self._path(page)

        def blocking() -> list[PagedRecord]:
            handle = self._files.open(path)
            try:
                data = handle.pread(end, 0)
            finally:
                handle.close()
            if len(data) < end:
                raise StorageError(f"page file {path} at offset {len(data)}: the file ends "
                                   f"before its last written record (expected {end} bytes)")
            scan = decode_page(data)
            if scan.damage is not None:
                damage = scan.damage
                raise StorageError(f"page file {path} at offset {damage.offset}: "
                                   f"{damage.kind.value} record ({damage.detail})")
            assert scan.records is not None
            return scan.records

        try:
            return await self._loop.run_in_executor(None, blocking)
        except OSError as error:
            raise StorageError(f"page file {path}: read failed: {error}") from error

    # ------------------------------------------------------------------------ deletion

    async def delete_page(self, page: int) -> None:
        """Remove page ``page`` (every queue acknowledged it), durably.

        Deleting the current page starts the next one first (an empty file), so a later
        append never reuses a page number.
        """
        self._require("delete_page")
        info = self._pages.get(page)
        if info is None:
            raise StorageError(f"page store {self.folder} ({self.address!r}): no page {page} "
                               "to delete")
        current = page == self._current
        if current:
            self._roll()
        del self._pages[page]
        self._records -= info[0]
        self._bytes -= info[1]
        next_page = self._current

        def action() -> None:
            if current:
                self._w_switch(next_page)
            elif self._w_page == page:
                self._w_close()
            path = self._path(page)
            if self._files.exists(path):
                self._files.remove(path)
                self._files.sync_directory(self.folder)
            with self._cond:
                self._ends.pop(page, None)
            self._w_deleted += 1

        await self._queue_action(action)

    async def delete(self) -> None:
        """Remove the whole folder (leaving page mode with purge-page-folders); final."""
        self._require("delete")
        await self._stop_writer()
        files = self._files
        folder = self.folder

        def blocking() -> None:
            files.rename(folder / ADDRESS_FILE, folder / DELETED_FILE)
            files.sync_directory(folder)
            _finish_deletion(files, folder)

        try:
            await self._loop.run_in_executor(None, blocking)
        except OSError as error:
            raise StorageError(f"page store {folder} ({self.address!r}): delete failed: "
                               f"{error}") from error
        finally:
            self._state = _DELETED
        logger.info("paging %r: page folder %s deleted", self.address, folder)

    async def close(self) -> None:
        """Write everything appended, stop the writer, release the files. Idempotent."""
        self._require("close")
        if self._state in (_CLOSED, _DELETED):
            return
        await self._stop_writer()
        self._state = _CLOSED

    def __repr__(self) -> str:
        return (f"PageStore({self.address!r}, {str(self.folder)!r}, pages="
                f"{self.first_page}..{self._current}, {self._state})")

