"""Large-message bodies: one file per message, written and read in chunks.

Theory of operation
-------------------
A message whose encoded size passes the large-message threshold keeps its body out of the
journal: ``<large-messages-directory>/<message_id>.msg`` (Artemis's name) holds it. The broker
never holds a whole large body in memory: :class:`LargeMessageWriter` takes the transfer frames
as they arrive (:meth:`~LargeMessageWriter.write` only queues them) and a worker thread writes
them, joining small frames into larger writes; :class:`LargeMessageReader` reads slices back
when the message is delivered. ``pending_bytes`` and
:meth:`~LargeMessageWriter.wait_writable` let a producer be paused while the disk is behind.

Writers share a small thread pool; each writer has at most one task in it at a time (its
chunks stay in order), so several transfers progress at once and none blocks the loop.

Crash rule (the StorageManager keeps it; this module gives it what it needs)
-----------------------------------------------------------------------------
1. Before the first chunk, the StorageManager writes a durable ADD_LARGE_MESSAGE_PENDING record
   for the id (Artemis user type 29).
2. The body goes to ``<id>.msg``, created by the first write (no ``.tmp`` name: the pending
   record, not the file name, says the transfer is unfinished, as in Artemis).
3. :meth:`LargeMessageWriter.finish` writes the last chunk, fdatasyncs the file and fsyncs the
   directory (``large-message-sync``; without it neither happens) and returns the size.
4. Only then does the StorageManager write the message record (user type 30, holding the size)
   and delete the pending record.
5. A consumed message's record is deleted first and its file second: a crash in between leaves
   an orphan file, never a record without a body.

On restart: every id of :meth:`LargeMessageStore.list_ids` without a message record is an
interrupted transfer or a leftover of a deleted message: :meth:`LargeMessageStore.delete` it
(pending records without a file are just dropped). An id with a record whose
:meth:`LargeMessageStore.file_size` differs from the recorded size (or is None) lost part of its
body (large-message-sync off, or damage): the message is unreadable and must be reported and
dropped, never delivered truncated. A writer that failed (write or sync error) stops for good;
its caller aborts it, which deletes the partial file.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import re
import threading
from pathlib import Path
from typing import Final

from ..errors import StorageError
from ..journal.files import FileFactory, JournalFile, OSFileFactory

logger = logging.getLogger("pybroker.large")

__all__ = [
    "LargeMessageReader",
    "LargeMessageStore",
    "LargeMessageWriter",
    "large_message_file_name",
]

_NAME: Final = re.compile(r"^([0-9]+)\.msg$")
MAX_ID: Final = (1 << 64) - 1
#: Chunks queued back to back are joined into writes of up to this many bytes.
_WRITE_SIZE: Final = 1 << 20
#: Threads writing and reading large-message files (shared by every writer and reader).
DEFAULT_WORKERS: Final = 4


def large_message_file_name(message_id: int) -> str:
    """``1234.msg`` for message 1234."""
    return f"{message_id}.msg"


def _check_id(message_id: object) -> int:
    if type(message_id) is not int or not 0 <= message_id <= MAX_ID:
        raise StorageError(f"large message id {message_id!r} is not a 64-bit unsigned integer")
    return message_id


class LargeMessageStore:
    """The large-messages directory: one ``<message_id>.msg`` file per large message.

    ``sync`` is large-message-sync (default True): :meth:`LargeMessageWriter.finish` fdatasyncs.
    ``workers`` threads do all file I/O.
    """

    def __init__(self, directory: Path, *, files: FileFactory | None = None, sync: bool = True,
                 workers: int = DEFAULT_WORKERS) -> None:
        self.directory = Path(directory)
        self.sync = sync
        self._files = files if files is not None else OSFileFactory()
        self._workers = workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writers: dict[int, LargeMessageWriter] = {}

    @property
    def files(self) -> FileFactory:
        """The file factory under the store."""
        return self._files

    async def start(self) -> None:
        """Create the directory (and parents) if missing; start the I/O threads."""
        if self._executor is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self._workers, thread_name_prefix="pybroker-large")
        try:
            await self._run(self._files.make_directory, self.directory)
        except OSError as error:
            await self.close()
            raise StorageError(f"large messages: cannot create {self.directory}: "
                               f"{error}") from error

    async def close(self) -> None:
        """Abort the writers still open (their files go), then stop the I/O threads."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        for writer in list(self._writers.values()):
            try:
                await writer.abort()
            except StorageError as error:  # a dead device: the restart removes the orphan
                logger.warning("%s", error)
        assert self._loop is not None
        await self._loop.run_in_executor(None, executor.shutdown, True)

    def _running(self) -> tuple[asyncio.AbstractEventLoop, concurrent.futures.Executor]:
        if self._executor is None or self._loop is None:
            raise StorageError(f"large-message store {self.directory} is not started")
        return self._loop, self._executor

    async def _run(self, function, *args):
        loop, executor = self._running()
        return await loop.run_in_executor(executor, function, *args)

    def path(self, message_id: int) -> Path:
        """The file of ``message_id``."""
        return self.directory / large_message_file_name(message_id)

    def create(self, message_id: int) -> LargeMessageWriter:
        """A writer for a new body; its file ``<id>.msg`` appears with the first write.

        Raises StorageError if a writer for this id is still open.
        """
        _check_id(message_id)
        loop, executor = self._running()
        if message_id in self._writers:
            raise StorageError(f"large message {message_id}: a body is already being written")
        writer = LargeMessageWriter(self, message_id, loop, executor)
        self._writers[message_id] = writer
        return writer

    def _forget(self, writer: LargeMessageWriter) -> None:
        if self._writers.get(writer.message_id) is writer:
            del self._writers[writer.message_id]

    async def list_ids(self) -> set[int]:
        """Ids of every ``<id>.msg`` file (other names are ignored): orphan cleanup."""
        names = await self._run(self._files.list_directory, self.directory)
        return {int(match.group(1)) for match in map(_NAME.match, names) if match is not None}

    async def file_size(self, message_id: int) -> int | None:
        """Size of ``<id>.msg`` in bytes, None if there is no such file."""
        _check_id(message_id)
        path = self.path(message_id)

        def blocking() -> int | None:
            try:
                handle = self._files.open(path)
            except FileNotFoundError:
                return None
            try:
                return handle.size()
            finally:
                handle.close()

        try:
            return await self._run(blocking)
        except OSError as error:
            raise StorageError(f"large message {message_id}: cannot stat {path}: "
                               f"{error}") from error

    async def open_reader(self, message_id: int) -> LargeMessageReader:
        """Open ``<id>.msg`` for reading; StorageError if it is missing."""
        _check_id(message_id)
        path = self.path(message_id)

        def blocking() -> tuple[JournalFile, int]:
            handle = self._files.open(path)
            try:
                return handle, handle.size()
            except BaseException:
                handle.close()
                raise

        try:
            handle, size = await self._run(blocking)
        except FileNotFoundError as error:
            raise StorageError(f"large message {message_id}: no body file {path}") from error
        except OSError as error:
            raise StorageError(f"large message {message_id}: cannot open {path}: "
                               f"{error}") from error
        return LargeMessageReader(self, message_id, handle, size)

    async def delete(self, message_id: int) -> None:
        """Remove ``<id>.msg`` (nothing to do if it is gone); not for a body being written.

        The removal is not fsynced: if a crash undoes it, the file is an orphan the restart
        deletes (see the crash rule).
        """
        _check_id(message_id)
        if message_id in self._writers:
            raise StorageError(f"large message {message_id}: its body is being written; "
                               "abort the writer instead")
        path = self.path(message_id)

        def blocking() -> None:
            try:
                self._files.remove(path)
            except FileNotFoundError:
                pass

        try:
            await self._run(blocking)
        except OSError as error:
            raise StorageError(f"large message {message_id}: cannot delete {path}: "
                               f"{error}") from error

    def __repr__(self) -> str:
        return f"LargeMessageStore({str(self.directory)!r}, writing={len(self._writers)})"


# Writer states (loop side). WRITING: write() accepted. FINISHING: finish() called, the last
# chunks and the sync are in flight. FINISHED / ABORTED: final. FAILED: a write or sync failed;
# only abort() is useful.
_WRITING, _FINISHING, _FINISHED, _ABORTED, _FAILED = (
    "writing", "finishing", "finished", "aborted", "failed")


class LargeMessageWriter:
    """Writes one large body while its frames arrive (made by :meth:`LargeMessageStore.create`).

    ``size`` counts the bytes accepted so far (after :meth:`finish`: the file's size).
    """

    def __init__(self, store: LargeMessageStore, message_id: int,
                 loop: asyncio.AbstractEventLoop, executor: concurrent.futures.Executor) -> None:
        self.message_id = message_id
        self.path = store.path(message_id)
        self.size = 0
        self._store = store
        self._files = store.files
        self._sync = store.sync
        self._loop = loop
        self._executor = executor
        self._state = _WRITING
        # shared with the worker (under _lock)
        self._lock = threading.Lock()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._pending = 0
        self._scheduled = False
        self._finish_requested = False
        self._aborted = False
        self._error: StorageError | None = None
        self._task: concurrent.futures.Future[None] | None = None
        # worker-only
        self._handle: JournalFile | None = None
        self._written = 0
        # loop-only
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted by :meth:`write` and not yet written to the file."""
        return self._pending

    @property
    def state(self) -> str:
        """writing, finishing, finished, aborted or failed."""
        return self._state

    def _refuse(self, event: str) -> StorageError:
        if self._error is not None:
            return StorageError(f"large message {self.message_id}: {event} refused, the writer "
                                f"failed: {self._error}")
        return StorageError(f"large message {self.message_id}: {event} is not allowed when "
                            f"{self._state}")

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Queue ``chunk`` for the file (copied if it is not ``bytes``); never blocks."""
        if self._state is not _WRITING or self._error is not None:
            raise self._refuse("write")
        data = chunk if type(chunk) is bytes else bytes(chunk)
        if not data:
            return
        with self._lock:
            self._chunks.append(data)
            self._pending += len(data)
            self.size += len(data)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._task = self._executor.submit(self._drain)

    async def wait_writable(self, limit: int) -> None:
        """Return once at most ``limit`` bytes wait to be written (pause a producer meanwhile).

        Raises StorageError if the writer failed.
        """
        if self._error is not None:
            raise self._refuse("wait_writable")
        if self._pending <= limit:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((limit, future))
        await future

    async def finish(self) -> int:
        """Write what is queued, fdatasync (with large-message-sync) and return the size."""
        if self._state is not _WRITING or self._error is not None:
            raise self._refuse("finish")
        self._state = _FINISHING
        with self._lock:
            self._finish_requested = True
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._task = self._executor.submit(self._drain)
        task = self._task
        assert task is not None
        await asyncio.wrap_future(task, loop=self._loop)
        if self._state is _ABORTED:
            raise StorageError(f"large message {self.message_id}: aborted while finishing")
        if self._error is not None:
            self._state = _FAILED
            raise self._refuse("finish")
        if self._state is _FINISHING:
            self._state = _FINISHED
            self._store._forget(self)
        return self.size

    async def abort(self) -> None:
        """Stop writing and delete the file (whatever state the writer is in). Idempotent."""
        if self._state is _ABORTED:
            return
        self._state = _ABORTED
        with self._lock:
            self._aborted = True
            self._chunks.clear()
            self._pending = 0
            task = self._task
        if task is not None:
            await asyncio.wrap_future(task, loop=self._loop)
        self._release_waiters(StorageError(f"large message {self.message_id}: aborted"))

        def blocking() -> None:
            handle, self._handle = self._handle, None
            if handle is not None:
                handle.close()
            try:
                self._files.remove(self.path)
            except FileNotFoundError:
                pass

        try:
            await self._loop.run_in_executor(self._executor, blocking)
        except OSError as error:
            raise StorageError(f"large message {self.message_id}: cannot delete {self.path}: "
                               f"{error}") from error
        finally:
            self._store._forget(self)

    # ------------------------------------------------------------------------ worker side

    def _drain(self) -> None:
        """Worker thread: write queued chunks in order; then the finish step if asked."""
        while True:
            with self._lock:
                if self._aborted or self._error is not None:
                    self._scheduled = False
                    return
                if self._chunks:
                    pieces = [self._chunks.popleft()]
                    size = len(pieces[0])
                    while self._chunks and size + len(self._chunks[0]) <= _WRITE_SIZE:
                        piece = self._chunks.popleft()
                        pieces.append(piece)
                        size += len(piece)
                    finish = False
                elif self._finish_requested:
                    pieces = []
                    size = 0
                    finish = True
                else:
                    self._scheduled = False
                    return
            operation = "write"
            try:
                handle = self._handle
                if handle is None:
                    operation = "create"
                    handle = self._handle = self._files.open(self.path, create=True)
                    operation = "write"
                if pieces:
                    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    handle.pwrite(data, self._written)
                    self._written += size
                    with self._lock:
                        self._pending -= size
                    _call(self._loop, self._progress)
                if finish:
                    if self._sync:
                        operation = "fdatasync"
                        handle.datasync()
                    handle.close()
                    self._handle = None
                    if self._sync:
                        operation = "directory fsync"
                        self._files.sync_directory(self.path.parent)
                    with self._lock:
                        self._finish_requested = False
                        self._scheduled = False
                    return
            except Exception as error:
                failure = StorageError(f"large message {self.message_id}: {operation} failed on "
                                       f"{self.path}: {error}; the body is incomplete (abort "
                                       "deletes it)")
                failure.__cause__ = error
                logger.error("%s", failure)
                with self._lock:
                    self._error = failure
                    self._chunks.clear()
                    self._pending = 0
                    self._scheduled = False
                _call(self._loop, self._progress)
                return

    def _progress(self) -> None:
        """Loop side: release back-pressure waiters (or fail them)."""
        if self._error is not None:
            if self._state in (_WRITING, _FINISHING):
                self._state = _FAILED
            self._release_waiters(self._refuse("wait_writable"))
            return
        if not self._waiters:
            return
        pending = self._pending
        keep = []
        for limit, future in self._waiters:
            if pending <= limit:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((limit, future))
        self._waiters = keep

    def _release_waiters(self, error: StorageError) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(error)

    def __repr__(self) -> str:
        return (f"LargeMessageWriter({self.message_id}, {self._state}, size={self.size}, "
                f"pending={self._pending})")


class LargeMessageReader:
    """Reads slices of one body (made by :meth:`LargeMessageStore.open_reader`)."""

    def __init__(self, store: LargeMessageStore, message_id: int, handle: JournalFile,
                 size: int) -> None:
        self.message_id = message_id
        self.size = size
        self._store = store
        self._handle: JournalFile | None = handle

    async def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the end of the body)."""
        if offset < 0 or length < 0:
            raise StorageError(f"large message {self.message_id}: bad slice {offset}+{length}")
        handle = self._handle
        if handle is None:
            raise StorageError(f"large message {self.message_id}: reader is closed")
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        try:
            data = await self._store._run(handle.pread, length, offset)
        except OSError as error:
            raise StorageError(f"large message {self.message_id}: read failed on "
                               f"{handle.path} at offset {offset}: {error}") from error
        if len(data) != length:
            raise StorageError(f"large message {self.message_id}: {handle.path} ends at offset "
                               f"{offset + len(data)}, before its size {self.size}")
        return data

    async def close(self) -> None:
        """Release the file. Idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            await self._store._run(handle.close)

    def __repr__(self) -> str:
        return f"LargeMessageReader({self.message_id}, size={self.size})"


def _call(loop: asyncio.AbstractEventLoop, function, *args) -> None:
    try:
        loop.call_soon_threadsafe(function, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
