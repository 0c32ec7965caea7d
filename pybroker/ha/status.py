"""What the shared store says, read without taking any lock (``pybroker status``).

The state byte and node id are read from ``server.lock`` directly (not under the state lock,
so a value being written may be one write old). Lock holders are found with
``F_OFD_GETLK``, which reports a conflicting holder without taking the lock, and, for
open-file-description locks (whose pid the kernel does not report), ``/proc/*/fdinfo``.
Works next to a running Artemis as well as pybroker.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pybroker.errors import HAError
from pybroker.ha.file_lock import (
    SERVER_LOCK_NAME,
    borrow_descriptor,
    probe_holder,
    read_epoch_file,
)
from pybroker.ha.node_manager import LockName, NodeState

LOCK_FILES = (LockName.PRIMARY.value, LockName.BACKUP.value, SERVER_LOCK_NAME)


@dataclass(frozen=True)
class LockFileStatus:
    """One lock file: whether it exists and who holds its lock.

    ``held`` is None when it could not be determined (``error`` says why). ``pids`` is empty
    for a lock held from another host (network file system).
    """

    name: str
    exists: bool
    held: bool | None
    kind: str | None = None
    pids: tuple[int, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class StoreStatus:
    """The shared store's node id, state byte, epoch and lock holders."""

    directory: str
    node_id: str | None
    state: str | None
    state_name: str | None
    epoch: int | None
    epoch_error: str | None
    server_lock_mtime_ns: int | None
    locks: tuple[LockFileStatus, ...]

    def lock(self, name: str) -> LockFileStatus:
        """The status of lock file ``name`` (``serverlock.1``, ``serverlock.2``, ``server.lock``)."""
        for lock in self.locks:
            if lock.name == name:
                return lock
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return dataclasses.asdict(self)


def read_status(lock_directory: Path) -> StoreStatus:
    """Read the state of the lock directory without taking any lock."""
    directory = Path(lock_directory)
    if not directory.is_dir():
        raise HAError(f"{directory}: no such directory")
    server_lock = directory / SERVER_LOCK_NAME
    node_id = state = state_name = None
    mtime = None
    try:
        with borrow_descriptor(server_lock) as fd:
            content = os.pread(fd, 19, 0)
            mtime = os.fstat(fd).st_mtime_ns
    except FileNotFoundError:
        content = b""
    if content:
        state = chr(content[0])
        try:
            state_name = NodeState(state).name
        except ValueError:
            state_name = "UNKNOWN"
    elif mtime is not None:
        state, state_name = NodeState.NOT_STARTED.value, NodeState.NOT_STARTED.name
    if len(content) == 19:
        node_id = str(uuid.UUID(bytes=content[3:19]))
    epoch: int | None = None
    epoch_error = None
    try:
        epoch = read_epoch_file(directory)
    except (HAError, OSError) as error:
        epoch_error = str(error)
    locks = tuple(_lock_status(directory / name) for name in LOCK_FILES)
    return StoreStatus(
        directory=str(directory),
        node_id=node_id,
        state=state,
        state_name=state_name,
        epoch=epoch,
        epoch_error=epoch_error,
        server_lock_mtime_ns=mtime,
        locks=locks,
    )


def _lock_status(path: Path) -> LockFileStatus:
    try:
        with borrow_descriptor(path) as fd:
            holder = probe_holder(fd, path)
    except FileNotFoundError:
        return LockFileStatus(path.name, exists=False, held=False)
    except (HAError, OSError) as error:
        return LockFileStatus(path.name, exists=path.exists(), held=None, error=str(error))
    if holder is None:
        return LockFileStatus(path.name, exists=True, held=False)
    return LockFileStatus(path.name, exists=True, held=True, kind=holder.kind, pids=holder.pids)


__all__ = ["LockFileStatus", "StoreStatus", "read_status"]
