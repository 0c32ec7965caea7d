"""The one error tree of pybroker.

Every error a user can see derives from :class:`PyBrokerError`. Messages name the object and
the place (file and line for configuration, file and offset for the journal).
"""

from __future__ import annotations


class PyBrokerError(Exception):
    """Base class of every pybroker error."""


class ConfigError(PyBrokerError):
    """A broker.xml (or users/roles file) that cannot be used.

    ``file``, ``line`` and ``element`` say where; ``str(error)`` reads
    ``broker.xml:12: <journal-file-size>: bad size 'ten'``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        element: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.element = element
        self.reason = message
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        elif line is not None:
            where = f"line {line}: "
        if element:
            where += f"<{element}>: "
        super().__init__(where + message)


class JournalError(PyBrokerError):
    """A journal that cannot be opened, read or written."""


class JournalCorruptError(JournalError):
    """Damage in the middle of a journal segment (not a torn tail)."""

    def __init__(self, message: str, *, file: str, offset: int) -> None:
        self.file = file
        self.offset = offset
        super().__init__(
            f"{file} at offset {offset}: {message}; run 'pybroker data recover' to salvage "
            "every valid record into a fresh journal"
        )


class JournalClosedError(JournalError):
    """An operation on a journal that is closed or failed."""


class StorageError(PyBrokerError):
    """The storage manager (messages, paging, large messages) failed."""


class AddressFullError(StorageError):
    """An address is over its limit and its policy refuses the message."""


class ProtocolError(PyBrokerError):
    """A peer broke its protocol; the connection is closed."""


class SecurityError(PyBrokerError):
    """Authentication or authorisation failed."""


class HAError(PyBrokerError):
    """High-availability (node manager, activation) failure."""


class LockTimeoutError(HAError):
    """A lock on the shared store was not obtained within journal-lock-acquisition-timeout."""


class LockLostError(HAError):
    """This broker lost its lock on the shared store (or was fenced by a newer epoch)."""


__all__ = [
    "AddressFullError",
    "ConfigError",
    "HAError",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalError",
    "LockLostError",
    "LockTimeoutError",
    "ProtocolError",
    "PyBrokerError",
    "SecurityError",
    "StorageError",
]
