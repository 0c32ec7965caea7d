"""The StorageManager on two journals: bindings (addresses, queues, ids, key-values) and messages.

Record layout (user record types are Artemis's numbers, so ``pybroker data print`` reads
familiarly; the bodies are msgpack):

bindings journal (``bindings-directory``, 1 MiB files)
    21 QUEUE_BINDING   add/update  id = queue id    (name, address, routing type, filter, ...)
    44 ADDRESS_BINDING add/update  id = binding id  (name, routing types, auto-created)
    24 ID_COUNTER      add         the ceiling of the last reserved block of ids
    50 KEY_VALUE       add/update  (namespace, key, value) for protocols (MQTT sessions, ...)

message journal (``journal-directory``)
    45 ADD_MESSAGE           add     id = message id; the queues it was routed to and the
                                     encoded message (one record per durable send, so replay
                                     reads one record per message)
    32 ADD_REF               update  the message was routed to one more queue
    33 ACKNOWLEDGE_REF       update  one queue is done with it (the last ack deletes instead)
    34 UPDATE_DELIVERY_COUNT update  (queue, count) after a failed delivery
    37 DUPLICATE_ID          add     (address, duplicate id); deleted when it leaves the cache
    39 ACKNOWLEDGE_CURSOR    add     (address, queue, page, index): a paged message acknowledged;
                                     deleted with its page
    35 PAGE_TRANSACTION      add     (address, tx id, first page, last page), in the journal
                                     transaction whose sends were paged: page records carrying
                                     that tx id are visible only once it is committed; deleted
                                     with the last of those pages
    29 ADD_LARGE_MESSAGE_PENDING add message id of a large body being written; deleted once the
                                     message is stored (a restart deletes the files of the rest)

Every append that a client waits for is made with ``sync=True``: the journal's group commit
puts all of them in the batch being written, so this costs one fdatasync per batch, not per
record, and :meth:`durable` can hand out the future of the last append.

Ids come from blocks reserved in the bindings journal (ID_COUNTER, like Artemis's
BatchingIDGenerator); at load the next id is above every id either journal holds and above the
last reserved ceiling, so an id is never reused for a live record.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack

from pybroker.config.model import Configuration
from pybroker.errors import StorageError
from pybroker.journal import Journal, JournalOptions, LoadResult

from .manager import AddressRecord, QueueRecord, RecoveredMessage, RecoveredState

log = logging.getLogger("pybroker.storage")

LARGE_MESSAGE_PENDING = 29
QUEUE_BINDING = 21
ID_COUNTER = 24
ADDRESS_BINDING = 44
KEY_VALUE = 50
ADD_REF = 32
ACKNOWLEDGE_REF = 33
UPDATE_DELIVERY_COUNT = 34
DUPLICATE_ID = 37
ACKNOWLEDGE_CURSOR = 39
PAGE_TRANSACTION = 35
ADD_MESSAGE = 45

RECORD_TYPE_NAMES = {
    QUEUE_BINDING: "QUEUE_BINDING",
    ID_COUNTER: "ID_COUNTER",
    ADDRESS_BINDING: "ADDRESS_BINDING",
    KEY_VALUE: "KEY_VALUE",
    ADD_REF: "ADD_REF",
    ACKNOWLEDGE_REF: "ACKNOWLEDGE_REF",
    UPDATE_DELIVERY_COUNT: "UPDATE_DELIVERY_COUNT",
    DUPLICATE_ID: "DUPLICATE_ID",
    ACKNOWLEDGE_CURSOR: "ACKNOWLEDGE_CURSOR",
    PAGE_TRANSACTION: "PAGE_TRANSACTION",
    LARGE_MESSAGE_PENDING: "ADD_LARGE_MESSAGE_PENDING",
    ADD_MESSAGE: "ADD_MESSAGE",
}

ID_BLOCK = 10_000
BINDINGS_FILE_SIZE = 1_048_576

_pack = msgpack.Packer(use_bin_type=True).pack
_QUEUE_COUNT = struct.Struct(">H")


_QUEUE_IDS = [struct.Struct(f">H{count}Q") for count in range(17)]


def _queue_ids_struct(count: int) -> struct.Struct:
    return _QUEUE_IDS[count] if count < len(_QUEUE_IDS) else struct.Struct(f">H{count}Q")


def message_record(queue_ids: Sequence[int], data: bytes) -> bytes:
    """ADD_MESSAGE body: ``u16 count | count x u64 queue id | encoded message``."""
    count = len(queue_ids)
    return _queue_ids_struct(count).pack(count, *queue_ids) + data


def split_message_record(body: bytes) -> tuple[tuple[int, ...], bytes]:
    """Inverse of :func:`message_record`."""
    (count,) = _QUEUE_COUNT.unpack_from(body, 0)
    layout = _queue_ids_struct(count)
    end = layout.size
    if len(body) < end:
        raise StorageError(f"ADD_MESSAGE record of {len(body)} bytes is shorter than its {count} queue ids")
    return layout.unpack_from(body, 0)[1:], body[end:]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def journal_options(configuration: Configuration, *, bindings: bool = False) -> JournalOptions:
    """JournalOptions from ``<core>``'s journal-* elements. The bindings journal has 1 MiB
    files and no buffer timeout: Artemis writes it through an unbuffered NIO file factory."""
    config = configuration.journal
    return JournalOptions(
        file_size=BINDINGS_FILE_SIZE if bindings else config.file_size,
        min_files=2 if bindings else config.min_files,
        pool_files=config.pool_files,
        buffer_timeout_ns=0 if bindings else config.writer_buffer_timeout_ns,
        buffer_size=config.buffer_size,
        sync_transactional=config.sync_transactional,
        sync_non_transactional=config.sync_non_transactional,
        datasync=config.datasync,
        compact_min_files=config.compact_min_files,
        compact_percentage=config.compact_percentage,
        journal_type=config.type,
        name="bindings" if bindings else "data",
    )


class JournalStorageManager:
    """Persistent storage for one broker (see the module docstring for the records)."""

    persistent = True

    def __init__(
        self,
        configuration: Configuration,
        *,
        fence: Callable[[], None] | None = None,
        epoch: int = 0,
        files: Any = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.configuration = configuration
        self._fence = fence
        self._epoch = epoch
        self._files = files
        self.on_failure = on_failure
        self.bindings: Journal | None = None
        self.messages: Journal | None = None
        self._next_id = 1
        self._ceiling = 0
        self._counter_record: int | None = None
        self._key_ids: dict[tuple[str, str], int] = {}
        self._live_addresses: set[int] = set()
        self._last: asyncio.Future[None] | None = None
        self._last_bindings: asyncio.Future[None] | None = None
        self._failed: BaseException | None = None
        self.load_results: tuple[LoadResult, LoadResult] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        configuration = self.configuration
        bindings_dir = Path(configuration.bindings_directory)
        journal_dir = Path(configuration.journal_directory)
        for directory, create, element in (
            (bindings_dir, configuration.create_bindings_dir, "bindings-directory"),
            (journal_dir, configuration.create_journal_dir, "journal-directory"),
        ):
            if create:
                directory.mkdir(parents=True, exist_ok=True)
            elif not directory.is_dir():
                raise StorageError(f"{element} {directory} does not exist (create-*-dir is false)")
        journal = configuration.journal
        if journal.type == "ASYNCIO":
            log.info("AMQ221045: libaio is not available, switching the configuration into NIO "
                     "(journal-buffer-timeout %d ns%s)", journal.writer_buffer_timeout_ns,
                     "" if journal.buffer_timeout_set else ", the NIO default")
        self.bindings = await Journal.open(
            bindings_dir,
            journal_options(configuration, bindings=True),
            self._files,
            epoch=self._epoch,
            fence=self._fence,
        )
        try:
            self.messages = await Journal.open(
                journal_dir, journal_options(configuration), self._files, epoch=self._epoch, fence=self._fence
            )
        except BaseException:
            await self.bindings.close()
            self.bindings = None
            raise

    async def stop(self) -> None:
        for journal in (self.messages, self.bindings):
            if journal is None:
                continue
            try:
                await journal.close()
            except Exception as error:  # noqa: BLE001 - close what we can
                log.warning("closing journal %s: %s", journal.directory, error)
        self.messages = self.bindings = None

    # -- recovery ----------------------------------------------------------------------------
    async def load(self) -> RecoveredState:
        assert self.bindings is not None and self.messages is not None
        bindings_result = await self.bindings.load()
        messages_result = await self.messages.load()
        self.load_results = (bindings_result, messages_result)
        state = RecoveredState()
        max_id = 0
        queues: dict[int, QueueRecord] = {}
        addresses: dict[int, AddressRecord] = {}
        for record in bindings_result.records:
            max_id = max(max_id, record.id)
            kind = record.user_type
            if kind == QUEUE_BINDING:
                queues[record.id] = _queue_record(record.id, _unpack(record.body))
            elif kind == ADDRESS_BINDING:
                addresses[record.id] = _address_record(record.id, _unpack(record.body))
            elif kind == ID_COUNTER:
                ceiling = int(_unpack(record.body))
                max_id = max(max_id, ceiling)
                if self._counter_record is not None and self._counter_record != record.id:
                    self.bindings.delete(self._counter_record, sync=False)
                self._counter_record = record.id
            elif kind == KEY_VALUE:
                namespace, key, value = _unpack(record.body)
                state.key_values[(namespace, key)] = (record.id, value)
                self._key_ids[(namespace, key)] = record.id
            else:
                log.warning("bindings journal: unknown record type %d (id %d) ignored", kind, record.id)
        state.queues = list(queues.values())
        state.addresses = list(addresses.values())
        self._live_addresses = set(addresses)

        by_id: dict[int, RecoveredMessage] = {}
        for record in messages_result.records:
            record_id = record.id
            if record_id > max_id:
                max_id = record_id
            kind = record.user_type
            if kind == ADD_MESSAGE:
                queue_ids, data = split_message_record(record.body)
                recovered = RecoveredMessage(record_id, data, [(queue_id, 0) for queue_id in queue_ids])
                by_id[record_id] = recovered
                state.messages.append(recovered)
            elif kind == ADD_REF:
                message = by_id.get(record_id)
                if message is not None:
                    message.refs.append((int(_unpack(record.body)), 0))
            elif kind == ACKNOWLEDGE_REF:
                message = by_id.get(record_id)
                if message is not None:
                    queue_id = int(_unpack(record.body))
                    for index, (ref_queue, _count) in enumerate(message.refs):
                        if ref_queue == queue_id:
                            del message.refs[index]
                            break
            elif kind == UPDATE_DELIVERY_COUNT:
                message = by_id.get(record_id)
                if message is not None:
                    queue_id, count = _unpack(record.body)
                    message.refs = [
                        (ref_queue, count if ref_queue == queue_id else old)
                        for ref_queue, old in message.refs
                    ]
            elif kind == DUPLICATE_ID:
                address, duplicate = _unpack(record.body)
                state.duplicate_ids.setdefault(address, []).append((record_id, bytes(duplicate)))
            elif kind == LARGE_MESSAGE_PENDING:
                state.large_pending.append((record_id, int(_unpack(record.body))))
            elif kind == ACKNOWLEDGE_CURSOR:
                address, queue_id, page, index = _unpack(record.body)
                state.page_acks.append((record_id, address, queue_id, page, index))
            elif kind == PAGE_TRANSACTION:
                address, tx_id, first_page, last_page = _unpack(record.body)
                state.page_transactions.append((record_id, address, tx_id, first_page, last_page))
            else:
                log.warning("message journal: unknown record type %d (id %d) ignored", kind, record_id)
        state.prepared_transactions = list(messages_result.prepared)
        state.max_id = max_id
        self._next_id = max_id + 1
        self._ceiling = 0
        self._reserve()
        log.info(
            "loaded %d messages, %d queues, %d addresses from %s",
            len(state.messages),
            len(state.queues),
            len(state.addresses),
            self.configuration.journal_directory,
        )
        return state

    # -- ids ---------------------------------------------------------------------------------
    def _reserve(self) -> None:
        bindings = self.bindings
        assert bindings is not None
        ceiling = self._next_id + ID_BLOCK
        record_id = ceiling  # ids above the block are free: the counter record uses its ceiling
        bindings.append(record_id, ID_COUNTER, _pack(ceiling), sync=False)
        if self._counter_record is not None:
            bindings.delete(self._counter_record, sync=False)
        self._counter_record = record_id
        self._ceiling = ceiling

    def next_id(self) -> int:
        value = self._next_id
        if value >= self._ceiling - 1:
            self._next_id = self._ceiling + 1
            self._reserve()
            value = self._next_id
        self._next_id = value + 1
        return value

    # -- messages ----------------------------------------------------------------------------
    def _journal(self) -> Journal:
        journal = self.messages
        if journal is None:
            raise StorageError("storage is not started")
        return journal

    def store_message(self, message_id: int, data: bytes, queue_ids: Sequence[int]) -> None:
        self._last = self._journal().append(
            message_id, ADD_MESSAGE, message_record(queue_ids, data), sync=True
        )

    def store_ref(self, message_id: int, queue_id: int) -> None:
        self._last = self._journal().update(message_id, ADD_REF, _pack(queue_id), sync=True)

    def store_ack(self, message_id: int, queue_id: int, *, sync: bool = True) -> asyncio.Future[None]:
        future = self._journal().update(message_id, ACKNOWLEDGE_REF, _pack(queue_id), sync=sync)
        self._last = future
        return future

    def delete_message(self, message_id: int) -> None:
        self._last = self._journal().delete(message_id, sync=True)

    def update_delivery_count(self, message_id: int, queue_id: int, count: int) -> None:
        self._journal().update(message_id, UPDATE_DELIVERY_COUNT, _pack((queue_id, count)), sync=False)

    def store_duplicate_id(self, address: str, duplicate_id: bytes) -> int:
        record_id = self.next_id()
        self._last = self._journal().append(record_id, DUPLICATE_ID, _pack((address, duplicate_id)), sync=True)
        return record_id

    def delete_duplicate_id(self, record_id: int) -> None:
        if record_id:
            self._journal().delete(record_id, sync=False)

    # -- bindings ----------------------------------------------------------------------------
    def _bindings(self) -> Journal:
        journal = self.bindings
        if journal is None:
            raise StorageError("storage is not started")
        return journal

    def store_queue(self, record: QueueRecord) -> asyncio.Future[None]:
        body = _pack(
            {
                "name": record.name,
                "address": record.address,
                "routing_type": record.routing_type,
                "filter": record.filter,
                "durable": record.durable,
                "max_consumers": record.max_consumers,
                "exclusive": record.exclusive,
                "purge_on_no_consumers": record.purge_on_no_consumers,
                "auto_created": record.auto_created,
                "configuration_managed": record.configuration_managed,
                "user": record.user,
                "extra": record.extra,
            }
        )
        return self._bound(self._bindings().append(record.queue_id, QUEUE_BINDING, body, sync=True))

    def delete_queue(self, queue_id: int) -> asyncio.Future[None]:
        return self._bound(self._bindings().delete(queue_id, sync=True))

    def store_address(self, record: AddressRecord) -> asyncio.Future[None]:
        body = _pack(
            {"name": record.name, "routing_types": list(record.routing_types), "auto_created": record.auto_created}
        )
        bindings = self._bindings()
        if record.binding_id in self._live_addresses:
            return self._bound(bindings.update(record.binding_id, ADDRESS_BINDING, body, sync=True))
        self._live_addresses.add(record.binding_id)
        return self._bound(bindings.append(record.binding_id, ADDRESS_BINDING, body, sync=True))

    def delete_address(self, binding_id: int) -> asyncio.Future[None]:
        self._live_addresses.discard(binding_id)
        return self._bound(self._bindings().delete(binding_id, sync=True))

    def store_key_value(self, namespace: str, key: str, value: bytes) -> asyncio.Future[None]:
        bindings = self._bindings()
        body = _pack((namespace, key, value))
        record_id = self._key_ids.get((namespace, key))
        if record_id is None:
            record_id = self.next_id()
            self._key_ids[(namespace, key)] = record_id
            return self._bound(bindings.append(record_id, KEY_VALUE, body, sync=True))
        return self._bound(bindings.update(record_id, KEY_VALUE, body, sync=True))

    def delete_key_value(self, namespace: str, key: str) -> asyncio.Future[None] | None:
        record_id = self._key_ids.pop((namespace, key), None)
        if record_id is None:
            return None
        return self._bound(self._bindings().delete(record_id, sync=True))

    def _bound(self, future: asyncio.Future[None]) -> asyncio.Future[None]:
        """Remember the newest bindings-journal write (for :meth:`durable`)."""
        self._last_bindings = future
        return future

    # -- large messages ----------------------------------------------------------------------
    def store_large_pending(self, message_id: int) -> int:
        record_id = self.next_id()
        self._journal().append(record_id, LARGE_MESSAGE_PENDING, _pack(message_id), sync=True)
        return record_id

    def delete_large_pending(self, record_id: int) -> None:
        if record_id:
            self._journal().delete(record_id, sync=False)

    # -- paging ------------------------------------------------------------------------------
    def store_page_ack(self, address: str, queue_id: int, page: int, index: int) -> int:
        record_id = self.next_id()
        self._last = self._journal().append(
            record_id, ACKNOWLEDGE_CURSOR, _pack((address, queue_id, page, index)), sync=True
        )
        return record_id

    def delete_page_ack(self, record_id: int) -> None:
        self._journal().delete(record_id, sync=False)

    def store_page_ack_tx(self, tx_id: int, address: str, queue_id: int, page: int, index: int) -> int:
        record_id = self.next_id()
        self._journal().append_tx(tx_id, record_id, ACKNOWLEDGE_CURSOR, _pack((address, queue_id, page, index)))
        return record_id

    def store_page_transaction_tx(self, tx_id: int, address: str, first_page: int, last_page: int) -> int:
        record_id = self.next_id()
        self._journal().append_tx(tx_id, record_id, PAGE_TRANSACTION, _pack((address, tx_id, first_page, last_page)))
        return record_id

    def delete_page_transaction(self, record_id: int) -> None:
        self._journal().delete(record_id, sync=False)

    # -- transactions ------------------------------------------------------------------------
    def begin_tx(self) -> int:
        return self.next_id()

    def store_message_tx(self, tx_id: int, message_id: int, data: bytes, queue_ids: Sequence[int]) -> None:
        self._journal().append_tx(tx_id, message_id, ADD_MESSAGE, message_record(queue_ids, data))

    def store_ack_tx(self, tx_id: int, message_id: int, queue_id: int) -> None:
        self._journal().update_tx(tx_id, message_id, ACKNOWLEDGE_REF, _pack(queue_id))

    def delete_message_tx(self, tx_id: int, message_id: int) -> None:
        self._journal().delete_tx(tx_id, message_id)

    def commit_tx(self, tx_id: int) -> asyncio.Future[None]:
        future = self._journal().commit(tx_id, sync=True)
        self._last = future
        return future

    def rollback_tx(self, tx_id: int) -> None:
        self._journal().rollback(tx_id, sync=False)

    # -- durability --------------------------------------------------------------------------
    def durable(self) -> asyncio.Future[None] | None:
        """Resolved once every record written so far is on disk: the future of the last
        message-journal append (group commit resolves in order, so it covers every earlier
        record), joined with the last bindings-journal write while that one is pending or
        failed (queues, addresses and session records made on the fly go there)."""
        last = self._last
        bindings = self._last_bindings
        if bindings is None:
            return last
        if bindings.done() and not bindings.cancelled() and bindings.exception() is None:
            self._last_bindings = None
            return last
        if last is None or (last.done() and not last.cancelled() and last.exception() is None):
            return bindings
        return _joined(last, bindings)


def _joined(first: asyncio.Future[None], second: asyncio.Future[None]) -> asyncio.Future[None]:
    """A future resolved when both are (failed with the first failure); cancelling it leaves
    them alone (``asyncio.gather`` would cancel the journal's own futures)."""
    joined: asyncio.Future[None] = first.get_loop().create_future()
    remaining = [2]

    def done(future: asyncio.Future[None]) -> None:
        if joined.done():
            return
        if future.cancelled():
            joined.cancel()
        elif future.exception() is not None:
            joined.set_exception(future.exception())  # type: ignore[arg-type]
        else:
            remaining[0] -= 1
            if not remaining[0]:
                joined.set_result(None)

    first.add_done_callback(done)
    second.add_done_callback(done)
    return joined


def _queue_record(queue_id: int, data: dict[str, Any]) -> QueueRecord:
    return QueueRecord(
        queue_id=queue_id,
        name=data["name"],
        address=data["address"],
        routing_type=data["routing_type"],
        filter=data.get("filter"),
        durable=data.get("durable", True),
        max_consumers=data.get("max_consumers", -1),
        exclusive=data.get("exclusive", False),
        purge_on_no_consumers=data.get("purge_on_no_consumers", False),
        auto_created=data.get("auto_created", False),
        configuration_managed=data.get("configuration_managed", False),
        user=data.get("user"),
        extra=data.get("extra"),
    )


def _address_record(binding_id: int, data: dict[str, Any]) -> AddressRecord:
    return AddressRecord(
        binding_id=binding_id,
        name=data["name"],
        routing_types=tuple(data.get("routing_types", ())),
        auto_created=data.get("auto_created", False),
    )
