"""The append-only record journal (write-ahead log) under all durable storage.

It knows nothing of messages: records are ``(id, user type, bytes)`` with add/update/delete,
transactions (add/update/delete in a transaction, prepare, commit, rollback), group-committed
by one writer thread. See :mod:`pybroker.journal.journal` for the theory of operation.
"""

from .files import FileFactory, JournalFile, MemoryFileFactory, OSFileFactory
from .journal import (
    Journal,
    JournalOptions,
    JournalStatistics,
    LoadResult,
    PreparedTransaction,
    RecordInfo,
    TruncationInfo,
)

__all__ = [
    "FileFactory",
    "Journal",
    "JournalFile",
    "JournalOptions",
    "JournalStatistics",
    "LoadResult",
    "MemoryFileFactory",
    "OSFileFactory",
    "PreparedTransaction",
    "RecordInfo",
    "TruncationInfo",
]
