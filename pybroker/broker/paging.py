"""Paging: an address over its memory limit keeps new messages in page files, and each queue
reads them back (depages) as its consumers make room.

Theory of operation
-------------------
Entering page mode: the post office routes a message to an address that is over
``max-size-bytes`` / ``max-size-messages`` (or the global limit) with ``address-full-policy``
PAGE. From then on *every* new message for the address goes to its :class:`PageStore`
(``paging-directory/<uuid>/NNNNNNNNN.page``), with the ids of the queues it was routed to; none
goes to memory, so order is kept.

Depaging: each queue of a paging address has a :class:`PageCursor`: the position of the next
record it has not read. While the queue holds fewer than ``max-read-page-messages`` /
``max-read-page-bytes`` in memory, the cursor reads forward -- older pages from disk, the page
being written from the records kept for it in memory -- and puts the records meant for its
queue into the queue (their references remember their page position).

Acknowledging a depaged reference writes an ACKNOWLEDGE_CURSOR record (queue, page, index) to
the journal instead of deleting a journal record; after a restart or a failover, cursors skip
acknowledged positions. A page is deleted (with its cursor records) once every cursor has read
past it and every reference it produced was acknowledged.

Leaving page mode: once every cursor has read everything written and the address is below its
limit again, new messages go to memory as before (the cursors being at the end, nothing paged
is left behind them).

Transactions: a committing transaction's sends to a paging address are paged as records
carrying its id (:meth:`Paging.page_tx`). While it commits, its id is in ``holds`` and cursors
stop at its records (order is kept: nothing after them is read either); once its COMMIT (with
a PAGE_TRANSACTION journal record naming the first and last page it wrote) is durable the id is
``committed`` and cursors read on; a transaction that failed, or whose COMMIT a crash lost, is
in neither set and cursors skip its records. The PAGE_TRANSACTION record is deleted with the
last of its pages. Cursor records of a transaction's acks are in the transaction, and their
pages are pinned until its COMMIT is durable (for good if it fails: a restart brings those
messages back). A page is deleted only once the journal is durable past the acks that freed it.

Paging needs persistence (the page store and the journal that records cursor acks); with
``persistence-enabled=false`` a PAGE address behaves as BLOCK.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pybroker.errors import StorageError
from pybroker.storage.paging import PagedRecord, PageStore

from .message import Message, MessageReference

if TYPE_CHECKING:
    from .postoffice import PostOffice, RouteResult
    from .queue import Queue

log = logging.getLogger("pybroker.paging")

#: depage window when max-read-page-messages is -1 and no byte limit applies
DEFAULT_READ_MESSAGES = 5_000
#: pages of records kept in memory per address for cursors that read the same page
CACHED_PAGES = 1


class PageCursor:
    """A queue's position in its address's pages."""

    __slots__ = (
        "acked", "address_paging", "blocked_tx", "in_memory", "in_memory_bytes", "index", "page", "queue", "reading",
    )

    def __init__(self, address_paging: AddressPaging, queue: Queue, page: int, index: int) -> None:
        self.address_paging = address_paging
        self.queue = queue
        self.page = page
        self.index = index
        # page -> acknowledged indexes (from the journal, after a restart)
        self.acked: dict[int, set[int]] = {}
        self.in_memory = 0  # depaged references not yet acknowledged
        self.in_memory_bytes = 0
        self.reading = False
        # the transaction whose record the cursor waits at (written, not yet committed)
        self.blocked_tx: int | None = None

    def __repr__(self) -> str:
        return f"PageCursor(queue={self.queue.name!r}, page={self.page}, index={self.index})"


class AddressPaging:
    """The paging state of one address."""

    def __init__(self, manager: Paging, address: str) -> None:
        self.manager = manager
        self.address = address
        self.store: PageStore | None = None
        self._opening: asyncio.Task[None] | None = None
        self._waiting: list[tuple[PagedRecord, asyncio.Future[Any]]] = []
        self.paging = False
        self.cursors: dict[int, PageCursor] = {}
        # records of the page being written, in order (cursors read them without disk I/O)
        self.live_page = 0
        self.live: list[PagedRecord] = []
        self.live_written = 0  # how many of ``live`` are on disk (their append resolved)
        self._cache: collections.OrderedDict[int, list[PagedRecord]] = collections.OrderedDict()
        # page -> depaged references not yet acknowledged (any queue)
        self.pending: collections.Counter[int] = collections.Counter()
        # page -> journal ids of its ACKNOWLEDGE_CURSOR records
        self.ack_records: dict[int, list[int]] = {}
        self.paged_messages = 0
        # transactions with paged sends: being committed (cursors wait at their records),
        # committed (their records are read), and the PAGE_TRANSACTION journal records of the
        # committed ones: [record id, tx id, first page, last page]
        self.holds: set[int] = set()
        self.committed: set[int] = set()
        self.tx_records: list[tuple[int, int, int, int]] = []
        self.deleting: set[int] = set()  # pages whose deletion is under way
        # page -> acks of transactions being committed (a failed commit keeps its pin: the
        # page stays until a restart brings back what the transaction did not acknowledge)
        self.pinned: collections.Counter[int] = collections.Counter()

    # -- writing -----------------------------------------------------------------------------
    def append(self, record: PagedRecord) -> asyncio.Future[Any]:
        store = self.store
        if store is None:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append((record, future))
            if self._opening is None:
                self._opening = asyncio.get_running_loop().create_task(self._open(), name=f"page-store-{self.address}")
            return future
        return self._append(store, record)

    def _append(self, store: PageStore, record: PagedRecord) -> asyncio.Future[Any]:
        future = store.append(record)
        page = store.current_page
        if page != self.live_page:
            self.live_page = page
            self.live = []
            self.live_written = 0
        self.live.append(record)
        live = self.live

        def written(done: asyncio.Future[Any]) -> None:
            if live is self.live and not done.cancelled() and done.exception() is None:
                self.live_written += 1
                self.manager.wake(self)

        future.add_done_callback(written)
        return future

    async def _open(self) -> None:
        manager = self.manager
        try:
            self.store = await PageStore.create(
                manager.directory, self.address, page_size_bytes=manager.page_size(self.address),
                sync=manager.sync,
            )
        except BaseException as error:
            waiting, self._waiting = self._waiting, []
            for _, future in waiting:
                if not future.done():
                    future.set_exception(StorageError(f"cannot create the page store of {self.address}: {error}"))
            self._opening = None
            raise
        waiting, self._waiting = self._waiting, []
        for record, future in waiting:
            inner = self._append(self.store, record)
            _chain(inner, future)
        self._opening = None

    # -- reading -----------------------------------------------------------------------------
    async def records(self, page: int) -> list[PagedRecord]:
        """The written records of ``page`` (the page being written: the ones on disk)."""
        if page == self.live_page and self.store is not None and page == self.store.current_page:
            return self.live[: self.live_written]
        cached = self._cache.get(page)
        if cached is None:
            assert self.store is not None
            cached = await self.store.read_page(page)
            self._cache[page] = cached
            while len(self._cache) > CACHED_PAGES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(page)
        return cached

    def pages_after(self, page: int) -> int | None:
        store = self.store
        if store is None:
            return None
        for candidate in store.pages:
            if candidate > page:
                return candidate
        return None

    @property
    def end(self) -> tuple[int, int]:
        """Position just after the last written record ((0, 0) before the store exists: a
        cursor there moves to the first page once there is one)."""
        store = self.store
        if store is None:
            return (0, 0)
        if self.live_page == store.current_page:
            return (self.live_page, self.live_written)
        return (store.current_page, store.page_records(store.current_page) if store.pages else 0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        if not name:
            return None
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_MALLOC_TRIM = _load_malloc_trim()


def _trim_heap() -> None:
    """Give freed heap back to the system (glibc): a page's worth of records was just
    released, often allocated by I/O threads whose arenas do not shrink on their own."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _count_paged(targets: list[Queue]) -> None:
    for queue in targets:
        queue.messages_added += 1
        queue.paged_count += 1
        queue.used = True


def _chain(inner: asyncio.Future[Any], outer: asyncio.Future[Any]) -> None:
    def copy(done: asyncio.Future[Any]) -> None:
        if outer.done():
            return
        if done.cancelled():
            outer.cancel()
        elif done.exception() is not None:
            outer.set_exception(done.exception())
        else:
            outer.set_result(done.result())

    inner.add_done_callback(copy)


class Paging:
    """Paging for one broker (owned by the server; the post office calls :meth:`page`)."""

    def __init__(
        self,
        post_office: PostOffice,
        directory: Path,
        *,
        codecs: Any,
        sync: bool = True,
        settings: Callable[[str], Any],
    ) -> None:
        self.post_office = post_office
        self.directory = Path(directory)
        self.codecs = codecs
        self.sync = sync
        self._settings = settings
        self.addresses: dict[str, AddressPaging] = {}
        self._wake_scheduled: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.depaged = 0
        self.paged_large: set[int] = set()

    def page_size(self, address: str) -> int:
        return self._settings(address).page_size_bytes or 10 * 1024 * 1024

    # -- start and stop ---------------------------------------------------------------------
    async def start(
        self,
        page_acks: list[tuple[int, str, int, int, int]],
        page_transactions: Iterable[tuple[int, str, int, int, int]] = (),
        large_pending: frozenset[int] | set[int] = frozenset(),
    ) -> None:
        """Open the page stores found on disk and put cursors where they were; paged records of
        transactions without a committed PAGE_TRANSACTION record stay invisible.
        ``paged_large`` then holds the ids of ``large_pending`` (large messages whose sending a
        crash may have cut) that visible page records hold: their bodies stay."""
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
        folders = await PageStore.scan(self.directory)
        acks: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
        for record_id, address, queue_id, page, index in page_acks:
            acks.setdefault((address, queue_id), []).append((record_id, page, index))
        transactions: dict[str, list[tuple[int, int, int, int]]] = {}
        for record_id, address, tx_id, first_page, last_page in page_transactions:
            transactions.setdefault(address, []).append((record_id, tx_id, first_page, last_page))
        storage = self.post_office.storage
        post_office = self.post_office
        for address, folder in folders.items():
            store = await PageStore.open(folder, page_size_bytes=self.page_size(address), sync=self.sync)
            loaded = await store.load(large_pending)
            paging = AddressPaging(self, address)
            paging.store = store
            paging.live_page = store.current_page
            if loaded.pages:
                last = loaded.pages[-1]
                # the records of the page being written are read from disk once, into ``live``
                paging.live = await store.read_page(last.page) if last.page == store.current_page else []
                paging.live_written = len(paging.live)
            self.addresses[address] = paging
            pages = set(store.pages)
            for entry in transactions.pop(address, ()):
                _record_id, tx_id, first_page, last_page = entry
                if any(first_page <= page <= last_page for page in pages):
                    paging.tx_records.append(entry)
                    paging.committed.add(tx_id)
                else:
                    storage.delete_page_transaction(entry[0])  # its pages are gone
            for message_id, tx_id in loaded.found:
                if tx_id is None or tx_id in paging.committed:
                    self.paged_large.add(message_id)
            if not loaded.record_count:
                continue
            first = loaded.first_page
            # records per queue: committed (or not transactional), minus the acknowledged ones
            routed: collections.Counter[int] = collections.Counter()
            for info in loaded.pages:
                for (tx_id, queue_ids), count in info.routes.items():
                    if tx_id is None or tx_id in paging.committed:
                        for queue_id in queue_ids:
                            routed[queue_id] += count
            for queue in list(post_office.bindings.get(address, ())):
                cursor = PageCursor(paging, queue, first, 0)
                for record_id, page, index in acks.pop((address, queue.queue_id), ()):
                    if page not in pages:
                        storage.delete_page_ack(record_id)  # its page is gone
                        continue
                    cursor.acked.setdefault(page, set()).add(index)
                    paging.ack_records.setdefault(page, []).append(record_id)
                paging.cursors[queue.queue_id] = cursor
                queue.cursor = cursor
                acked = sum(len(indexes) for indexes in cursor.acked.values())
                queue.paged_count = max(0, routed[queue.queue_id] - acked)
            paging.paging = bool(paging.cursors)
            log.info(
                "AMQ222038-paging: address %s has %d paged messages in %d pages (%s)",
                address, loaded.record_count, len(loaded.pages), folder,
            )
            for cursor in list(paging.cursors.values()):
                self._schedule_fill(cursor)
        # cursor records of addresses whose pages (or queues) are gone, and their transactions
        for entries in acks.values():
            for record_id, _page, _index in entries:
                storage.delete_page_ack(record_id)
        for entries in transactions.values():
            for entry in entries:
                storage.delete_page_transaction(entry[0])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for paging in self.addresses.values():
            if paging._opening is not None:
                with contextlib.suppress(Exception):
                    await paging._opening
            if paging.store is not None:
                with contextlib.suppress(Exception):
                    await paging.store.close()

    # -- routing (from the post office) -------------------------------------------------------
    def page(self, message: Message, targets: list[Queue], address: str) -> RouteResult:
        from .postoffice import RouteResult

        paging = self._enter(address)
        refused = self._page_limit_reached(paging, message)
        if refused is not None:
            return refused
        self._place_cursors(paging, targets)
        _count_paged(targets)
        record = PagedRecord(message.message_id, tuple(queue.queue_id for queue in targets), message.encode())
        paging.paged_messages += 1
        future = paging.append(record)
        return RouteResult(queues=len(targets), durable=future, paged=True)

    def page_tx(self, message: Message, targets: list[Queue], address: str, tx_id: int
                ) -> asyncio.Future[Any] | None:
        """Page a send of transaction ``tx_id`` being committed: its record carries the tx id and
        cursors wait at it until :meth:`tx_done`. None when the page limit drops it (raises
        :class:`~pybroker.errors.AddressFullError` when it fails)."""
        paging = self._enter(address)
        if self._page_limit_reached(paging, message) is not None:
            return None
        self._place_cursors(paging, targets)
        paging.holds.add(tx_id)
        record = PagedRecord(
            message.message_id, tuple(queue.queue_id for queue in targets), message.encode(), tx_id
        )
        return paging.append(record)

    def tx_done(self, tx_id: int, committed: dict[str, tuple[int, int, int, list[list[Queue]]]]) -> None:
        """Transaction ``tx_id`` ended. ``committed`` (empty when it failed): per address its
        PAGE_TRANSACTION record id, first and last page, and the targets of each paged send."""
        for address, (record_id, first_page, last_page, sends) in committed.items():
            paging = self.addresses[address]
            paging.committed.add(tx_id)
            paging.tx_records.append((record_id, tx_id, first_page, last_page))
            paging.paged_messages += len(sends)
            for targets in sends:
                _count_paged(targets)
        for paging in self.addresses.values():
            if tx_id in paging.holds:
                paging.holds.discard(tx_id)
                self.wake(paging)
                self._maybe_leave(paging)

    def _enter(self, address: str) -> AddressPaging:
        paging = self.addresses.get(address)
        if paging is None:
            paging = self.addresses[address] = AddressPaging(self, address)
        if not paging.paging:
            paging.paging = True
            log.info(
                "AMQ222038: Starting paging on address '%s'; size=%d bytes (%d messages)",
                address, self.post_office.limits.usage(address).bytes, self.post_office.limits.usage(address).messages,
            )
        return paging

    @staticmethod
    def _place_cursors(paging: AddressPaging, targets: list[Queue]) -> None:
        position = paging.end
        for queue in targets:
            if queue.queue_id not in paging.cursors:
                # a queue that starts reading pages now: from the first record meant for it
                cursor = paging.cursors[queue.queue_id] = PageCursor(paging, queue, *position)
                queue.cursor = cursor

    def _page_limit_reached(self, paging: AddressPaging, message: Message) -> RouteResult | None:
        """page-limit-bytes / page-limit-messages with page-full-policy DROP or FAIL."""
        from .postoffice import RouteResult

        settings = self._settings(paging.address)
        limit_bytes = settings.page_limit_bytes
        limit_messages = settings.page_limit_messages
        if (limit_bytes is None or limit_bytes < 0) and (limit_messages is None or limit_messages < 0):
            return None
        store = paging.store
        size = store.size_bytes + store.pending_bytes if store is not None else 0
        count = store.record_count if store is not None else len(paging._waiting)
        if not (
            (limit_bytes is not None and 0 <= limit_bytes <= size)
            or (limit_messages is not None and 0 <= limit_messages <= count)
        ):
            return None
        policy = (settings.page_full_policy or "DROP").upper()
        limits = self.post_office.limits
        if policy == "FAIL":
            limits.refused += 1
            from pybroker.errors import AddressFullError

            raise AddressFullError(
                f"AMQ229250: address {paging.address} reached its page limit "
                f"(page-limit-bytes={limit_bytes}, page-limit-messages={limit_messages})"
            )
        limits.dropped += 1
        return RouteResult(dropped=True)

    # -- depaging ----------------------------------------------------------------------------
    def wake(self, paging: AddressPaging) -> None:
        for cursor in paging.cursors.values():
            if not cursor.reading and self._wants_more(cursor):
                self._schedule_fill(cursor)

    def queue_has_room(self, queue: Queue) -> None:
        cursor = getattr(queue, "cursor", None)
        if cursor is not None and not cursor.reading and self._wants_more(cursor):
            self._schedule_fill(cursor)

    def _wants_more(self, cursor: PageCursor) -> bool:
        queue = cursor.queue
        if queue.deleted or not queue.consumers:
            # a queue nobody reads keeps its backlog on disk
            return False
        settings = self._settings(queue.address)
        limit_messages = settings.max_read_page_messages
        if limit_messages is None or limit_messages < 0:
            limit_messages = DEFAULT_READ_MESSAGES
        if cursor.in_memory >= limit_messages:
            return False
        limit_bytes = settings.max_read_page_bytes
        if limit_bytes is not None and 0 <= limit_bytes <= cursor.in_memory_bytes:
            return False
        paging = cursor.address_paging
        if cursor.blocked_tx is not None:
            if cursor.blocked_tx in paging.holds:
                return False  # waits at a record of a transaction being committed
            cursor.blocked_tx = None
        return (cursor.page, cursor.index) < paging.end

    def _schedule_fill(self, cursor: PageCursor) -> None:
        cursor.reading = True
        task = asyncio.get_running_loop().create_task(self._fill(cursor), name=f"depage-{cursor.queue.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill(self, cursor: PageCursor) -> None:
        paging = cursor.address_paging
        queue = cursor.queue
        try:
            while self._wants_more(cursor):
                store = paging.store
                if store is None:
                    break  # nothing written yet
                if cursor.page not in store.pages:
                    # the store began (or an older page went) after the cursor's position
                    following = paging.pages_after(cursor.page)
                    if following is None:
                        break
                    cursor.page, cursor.index = following, 0
                records = await paging.records(cursor.page)
                if queue.deleted:
                    return
                if cursor.index >= len(records):
                    following = paging.pages_after(cursor.page)
                    if following is None or (cursor.page, cursor.index) >= paging.end:
                        break
                    self._finished_page(paging, cursor.page)
                    cursor.page, cursor.index = following, 0
                    continue
                page = cursor.page
                acked = cursor.acked.get(page)
                queue_id = queue.queue_id
                committed = paging.committed
                while cursor.index < len(records) and self._wants_more(cursor):
                    index = cursor.index
                    record = records[index]
                    if queue_id not in record.queue_ids or (acked is not None and index in acked):
                        cursor.index += 1
                        continue
                    tx_id = record.tx_id
                    if tx_id is not None and tx_id not in committed:
                        if tx_id in paging.holds:
                            cursor.blocked_tx = tx_id  # read on when it ends (tx_done wakes us)
                            break
                        cursor.index += 1  # its transaction never committed
                        continue
                    cursor.index += 1
                    message = Message.decode(
                        record.message_id, record.data, self.codecs, self.post_office.large_messages
                    )
                    message.ref_count = 1
                    ref = MessageReference(message, queue)
                    ref.page = (page, index)
                    cursor.in_memory += 1
                    cursor.in_memory_bytes += message.size
                    if queue.paged_count > 0:
                        queue.paged_count -= 1
                    paging.pending[page] += 1
                    self.depaged += 1
                    self.post_office.account(message)
                    queue.add(ref, count=False)
                if cursor.index >= len(records) and page != paging.live_page:
                    following = paging.pages_after(page)
                    if following is not None:
                        self._finished_page(paging, page)
                        cursor.page, cursor.index = following, 0
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a cursor must not die silently
            log.exception("depaging queue %s failed", queue.name)
        finally:
            cursor.reading = False
        self._maybe_leave(paging)

    def store_ack_tx(self, tx_id: int, queue: Queue, ref: MessageReference) -> tuple[AddressPaging, int] | None:
        """Write the cursor record of depaged ``ref`` in transaction ``tx_id`` (the transaction
        then acknowledges it with ``write=False``) and pin its page until
        :meth:`tx_acks_committed`. None when there is nothing to write."""
        cursor = getattr(queue, "cursor", None)
        if cursor is None or not queue.durable:
            return None
        paging = cursor.address_paging
        page, index = ref.page  # type: ignore[misc]
        record_id = self.post_office.storage.store_page_ack_tx(tx_id, paging.address, queue.queue_id, page, index)
        paging.ack_records.setdefault(page, []).append(record_id)
        paging.pinned[page] += 1
        return paging, page

    def tx_acks_committed(self, pins: list[tuple[AddressPaging, int]]) -> None:
        """The COMMIT of the acks that pinned these pages is durable: they may go."""
        for paging, page in pins:
            paging.pinned[page] -= 1
            if paging.pinned[page] <= 0:
                del paging.pinned[page]
                self._maybe_delete_page(paging, page)

    def acknowledged(self, queue: Queue, ref: MessageReference, *, write: bool = True) -> None:
        """A depaged reference was acknowledged: record it (unless a transaction did, ``write``
        false); maybe delete its page."""
        page, index = ref.page  # type: ignore[misc]
        cursor = getattr(queue, "cursor", None)
        paging = cursor.address_paging if cursor is not None else None
        if paging is None:
            return
        cursor.in_memory -= 1
        cursor.in_memory_bytes -= ref.message.size
        paging.pending[page] -= 1
        if write and queue.durable:
            record_id = self.post_office.storage.store_page_ack(paging.address, queue.queue_id, page, index)
            if record_id:
                paging.ack_records.setdefault(page, []).append(record_id)
        if paging.pending[page] <= 0:
            self._maybe_delete_page(paging, page)
        if not cursor.reading and self._wants_more(cursor):
            self._schedule_fill(cursor)
        self._maybe_leave(paging)

    def _finished_page(self, paging: AddressPaging, page: int) -> None:
        self._maybe_delete_page(paging, page)

    def _maybe_delete_page(self, paging: AddressPaging, page: int) -> None:
        store = paging.store
        if store is None or page == store.current_page or paging.pending.get(page, 0) > 0 or page in paging.pinned:
            return
        if any(cursor.page <= page for cursor in paging.cursors.values()):
            return  # a cursor has not read all of it yet
        if page not in store.pages or page in paging.deleting:
            return
        paging.deleting.add(page)
        paging.pending.pop(page, None)
        paging._cache.pop(page, None)
        for cursor in paging.cursors.values():
            cursor.acked.pop(page, None)
        storage = self.post_office.storage

        async def delete() -> None:
            # the acks that free this page (a transaction's COMMIT included) reach the disk
            # before the page leaves it: a crash in between must not lose an unacked message
            durable = storage.durable()
            if durable is not None and not durable.done():
                await asyncio.wait([durable])  # not awaited directly: a cancel must not reach it
            try:
                if durable is not None and (durable.cancelled() or durable.exception() is not None):
                    return
                await store.delete_page(page)
            except Exception as error:  # noqa: BLE001
                log.warning("could not delete page %s of %s: %s", page, paging.address, error)
                return
            finally:
                paging.deleting.discard(page)
            for record_id in paging.ack_records.pop(page, ()):
                storage.delete_page_ack(record_id)
            remaining = store.pages
            for entry in list(paging.tx_records):
                _record_id, tx_id, first_page, last_page = entry
                if not any(first_page <= other <= last_page for other in remaining):
                    paging.tx_records.remove(entry)
                    paging.committed.discard(tx_id)
                    storage.delete_page_transaction(entry[0])
            _trim_heap()

        task = asyncio.get_running_loop().create_task(delete())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _maybe_leave(self, paging: AddressPaging) -> None:
        if not paging.paging or paging._waiting or paging._opening is not None:
            return
        end = paging.end
        if any((cursor.page, cursor.index) < end for cursor in paging.cursors.values()):
            return
        store = paging.store
        if store is not None and store.pending_bytes:
            return
        limits = self.post_office.limits
        if limits.full(limits.usage(paging.address)):
            return
        paging.paging = False
        log.info("AMQ221020-paging: Ending paging on address '%s'", paging.address)

    def is_paging(self, address: str) -> bool:
        paging = self.addresses.get(address)
        return paging is not None and paging.paging

    def queue_deleted(self, queue: Queue) -> None:
        cursor = getattr(queue, "cursor", None)
        if cursor is None:
            return
        paging = cursor.address_paging
        paging.cursors.pop(queue.queue_id, None)
        queue.cursor = None
