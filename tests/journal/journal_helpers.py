"""Helpers of the journal suite: a journal directory on real or memory files, small options."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

from support import TIMEOUT, FilePlace, bounded  # noqa: F401 - bounded is re-exported for the journal tests

from pybroker.journal import Journal, JournalOptions, LoadResult, MemoryFileFactory
from pybroker.journal.segment import HEADER_SIZE, decode_header, parse_segment_name

#: Small files so that rollover, reuse and compaction happen within a few records.
SMALL = JournalOptions(file_size=4096, min_files=2, buffer_timeout_ns=0, compact_min_files=0)

#: Every wait in the suite is bounded by this (seconds).


class Store(FilePlace):
    """A journal directory on one file factory, with helpers to look at and damage files."""

    def names(self, stem: str = "data") -> list[str]:
        """Segment file names of the journal ``stem``, sorted by number."""
        names = [name for name in self.files.list_directory(self.directory)
                 if parse_segment_name(stem, name) is not None]
        return sorted(names, key=lambda name: parse_segment_name(stem, name))

    def all_names(self) -> list[str]:
        return self.files.list_directory(self.directory)

    def read(self, name: str) -> bytes:
        handle = self.files.open(self.directory / name)
        try:
            return handle.pread(handle.size(), 0)
        finally:
            handle.close()

    def damage(self, name: str, offset: int, data: bytes) -> None:
        """Overwrite bytes of a file, durably."""
        path = self.directory / name
        if isinstance(self.files, MemoryFileFactory):
            self.files.write_file_durably(path, offset, data)
        else:
            with open(path, "r+b") as handle:
                handle.seek(offset)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

    def header(self, name: str):
        return decode_header(self.read(name)[:HEADER_SIZE], name)

    def data_files(self, stem: str = "data") -> list[tuple[int, str]]:
        """(file id, name) of the DATA files, by file id."""
        found = []
        for name in self.names(stem):
            header = self.header(name)
            if header.state.name == "DATA":
                found.append((header.file_id, name))
        return sorted(found)

    async def open(self, options: JournalOptions = SMALL, **keywords) -> Journal:
        return await Journal.open(self.directory, options, self.files, **keywords)

    async def open_loaded(self, options: JournalOptions = SMALL,
                          **keywords) -> tuple[Journal, LoadResult]:
        journal = await self.open(options, **keywords)
        result = await asyncio.wait_for(journal.load(), TIMEOUT)
        return journal, result


def options(**changes) -> JournalOptions:
    """:data:`SMALL` with changes."""
    return replace(SMALL, **changes)


def state_of(result: LoadResult) -> tuple:
    """A comparable summary of a load result."""
    return (
        [tuple(record) for record in result.records],
        [(tx.tx_id, tx.extra, [tuple(record) for record in tx.records], list(tx.deletes))
         for tx in result.prepared],
    )





async def quiesce(journal: Journal) -> None:
    """Wait until everything appended is written and the spare-file thread is idle, so that
    a test can count (and fail) the I/O operations that follow."""
    await bounded(journal.sync())
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, journal._wait_spare_idle, TIMEOUT)
