"""Disk and journal speed measurements behind ``pybroker perf journal``.

:func:`raw_sync_rate` does what ``artemis perf-journal`` does: it writes ``writes`` blocks of
``block_size`` bytes into a pre-allocated file, each followed by an fdatasync (every journal
type here writes like NIO), ``tries`` times, and keeps the fastest try. The time per durable
write is the suggested ``journal-buffer-timeout``: a batch then never waits longer than the
disk needs for one sync.

:func:`journal_rate` measures the journal itself on the same disk: ``writers`` asyncio tasks
each append a durable record, await it, and append again, until ``records`` are written; group
commit lets one fdatasync cover many records.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .files import FileFactory, OSFileFactory
from .journal import Journal, JournalOptions

__all__ = ["JournalRate", "SyncRate", "journal_rate", "raw_sync_rate"]


@dataclass(frozen=True)
class SyncRate:
    """Result of :func:`raw_sync_rate`."""

    block_size: int
    writes: int
    tries: int
    sync: bool
    try_seconds: tuple[float, ...]  #: each try's duration

    @property
    def best_seconds(self) -> float:
        """The fastest try (what Artemis reports)."""
        return min(self.try_seconds)

    @property
    def writes_per_second(self) -> float:
        """Durable writes per second in the fastest try."""
        return self.writes / max(self.best_seconds, 1e-9)

    @property
    def writes_per_millisecond(self) -> float:
        """What ``Your system can execute N writes per millisecond`` prints."""
        return self.writes_per_second / 1000

    @property
    def suggested_buffer_timeout_ns(self) -> int:
        """Nanoseconds per durable write: the ``<journal-buffer-timeout>`` to configure."""
        return int(1e9 / self.writes_per_second)


def raw_sync_rate(directory: Path, *, block_size: int = 4096, writes: int = 250, tries: int = 5,
                  sync: bool = True, file_name: str = "pybroker-perf-journal.tmp",
                  files: FileFactory | None = None) -> SyncRate:
    """Time ``tries`` runs of ``writes`` x (write ``block_size`` bytes, fdatasync); blocking.

    The file is created in ``directory``, zero-filled to its full size first (like journal
    segments) and removed afterwards.
    """
    if block_size <= 0 or writes <= 0 or tries <= 0:
        raise ValueError("block size, writes and tries must be positive")
    files = files or OSFileFactory()
    directory = Path(directory)
    files.make_directory(directory)
    path = directory / file_name
    if files.exists(path):
        files.remove(path)
    handle = files.open(path, create=True)
    try:
        handle.allocate(block_size * writes)
        handle.fullsync()
        block = b"t" * block_size
        results = []
        for _ in range(tries):
            start = time.perf_counter()
            for index in range(writes):
                handle.pwrite(block, index * block_size)
                if sync:
                    handle.datasync()
            results.append(time.perf_counter() - start)
    finally:
        handle.close()
        files.remove(path)
    return SyncRate(block_size, writes, tries, sync, tuple(results))


@dataclass(frozen=True)
class JournalRate:
    """Result of :func:`journal_rate`."""

    records: int
    writers: int
    record_size: int
    seconds: float
    fsyncs: int
    batches: int
    cpu_seconds: float

    @property
    def records_per_second(self) -> float:
        """Durable records per second."""
        return self.records / max(self.seconds, 1e-9)

    @property
    def fsyncs_per_second(self) -> float:
        """fdatasyncs per second."""
        return self.fsyncs / max(self.seconds, 1e-9)

    @property
    def records_per_fsync(self) -> float:
        """How many records one fdatasync covered on average (the group commit)."""
        return self.records / max(self.fsyncs, 1)

    @property
    def cpu_us_per_record(self) -> float:
        """Process CPU time (all threads) per record, in µs."""
        return self.cpu_seconds / max(self.records, 1) * 1e6


async def journal_rate(directory: Path | None = None, *, records: int = 20_000,
                       writers: int = 100, record_size: int = 4096,
                       options: JournalOptions | None = None) -> JournalRate:
    """Durable appends by ``writers`` concurrent tasks until ``records`` are written.

    A fresh journal is created in a temporary directory under ``directory`` (default: the
    system temp dir) and removed afterwards.
    """
    if records <= 0 or writers <= 0:
        raise ValueError("records and writers must be positive")
    options = options or JournalOptions(buffer_timeout_ns=0)
    if options.file_size < record_size + 1024:
        options = replace(options, file_size=max(options.file_size, record_size * 4 + 4096))
    base = Path(tempfile.mkdtemp(prefix="pybroker-perf-", dir=directory))
    try:
        journal = await Journal.open(base, options)
        await journal.load()
        body = b"t" * record_size
        remaining = records
        next_id = 0

        async def writer() -> None:
            nonlocal remaining, next_id
            while remaining > 0:
                remaining -= 1
                next_id += 1
                await journal.append(next_id, 1, body, sync=True)

        before = journal.statistics()
        cpu_start = time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        after = journal.statistics()
        await journal.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return JournalRate(records, writers, record_size, seconds, after.fsyncs - before.fsyncs,
                       after.batches - before.batches, cpu)
