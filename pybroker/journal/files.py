"""The journal's only door to the disk: :class:`FileFactory` and :class:`JournalFile`.

Two implementations pass one test suite:

* :class:`OSFileFactory`: real files, ``pwrite``/``pread``/``fdatasync`` on descriptors.
* :class:`MemoryFileFactory`: an in-memory file system that models the page cache, so tests can
  crash it. Every mutation (write, pre-allocation, create, rename, remove) is first *pending*;
  ``datasync``/``fullsync`` of a file makes that file's pending writes durable and
  ``sync_directory`` makes the directory's pending name changes durable, as on a POSIX file
  system. :meth:`MemoryFileFactory.crash` then keeps the durable state plus, optionally, the
  first ``n`` pending operations in the order they were issued (ordered write-back cut at a
  point) and a prefix of the next write (a torn write). It can also fail the Nth operation
  (or every operation from the Nth on), to test error paths and crashes at every step.

All methods are blocking; the journal calls them from its writer thread or a worker thread,
never from the event loop. Both implementations are safe to use from several threads.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "FileFactory",
    "JournalFile",
    "MemoryFileFactory",
    "OSFileFactory",
]

_ZERO_CHUNK = bytes(1 << 20)


@runtime_checkable
class JournalFile(Protocol):
    """An open file: positional reads and writes, syncs, pre-allocation."""

    path: Path

    def pread(self, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
        ...

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset``."""
        ...

    def datasync(self) -> None:
        """Make the file's data durable (``fdatasync``)."""
        ...

    def fullsync(self) -> None:
        """Make the file's data and metadata durable (``fsync``)."""
        ...

    def allocate(self, size: int) -> None:
        """Grow the file to ``size`` bytes of zeros, writing them (not a sparse extent)."""
        ...

    def size(self) -> int:
        """Current size in bytes."""
        ...

    def close(self) -> None:
        """Release the descriptor; idempotent."""
        ...


@runtime_checkable
class FileFactory(Protocol):
    """Directory operations and opening files."""

    def list_directory(self, directory: Path) -> list[str]:
        """Names of the entries of ``directory`` (files only matter to the journal)."""
        ...

    def make_directory(self, directory: Path) -> None:
        """Create ``directory`` (and parents) if missing."""
        ...

    def exists(self, path: Path) -> bool:
        """Whether ``path`` exists."""
        ...

    def open(self, path: Path, *, create: bool = False) -> JournalFile:
        """Open ``path`` read-write; with ``create``, create it and fail if it exists."""
        ...

    def rename(self, source: Path, target: Path) -> None:
        """Atomically rename ``source`` to ``target`` (replacing it)."""
        ...

    def remove(self, path: Path) -> None:
        """Remove the file ``path``."""
        ...

    def sync_directory(self, directory: Path) -> None:
        """Make the names in ``directory`` durable (``fsync`` on the directory)."""
        ...


# --------------------------------------------------------------------------------------------
# Real files


class OSFile:
    """A real file descriptor (see :class:`JournalFile`)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def pread(self, size: int, offset: int) -> bytes:
        chunks = []
        while size > 0:
            chunk = os.pread(self._fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        written = os.pwrite(self._fd, data, offset)
        if written == len(data):
            return
        view = memoryview(data)
        while written < len(view):
            count = os.pwrite(self._fd, view[written:], offset + written)
            if count <= 0:
                raise OSError(errno.EIO, f"short write to {self.path}")
            written += count

    def datasync(self) -> None:
        os.fdatasync(self._fd)

    def fullsync(self) -> None:
        os.fsync(self._fd)

    def allocate(self, size: int) -> None:
        # Zero-fill rather than fallocate: on ext4 an fallocated (unwritten) extent makes every
        # later write + fdatasync pay for an extent conversion (measured ~1.5x slower).
        position = os.fstat(self._fd).st_size
        while position < size:
            count = min(len(_ZERO_CHUNK), size - position)
            self.pwrite(memoryview(_ZERO_CHUNK)[:count], position)
            position += count

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        return f"OSFile({str(self.path)!r})"


class OSFileFactory:
    """Real files through ``os`` (see :class:`FileFactory`)."""

    def list_directory(self, directory: Path) -> list[str]:
        return sorted(os.listdir(directory))

    def make_directory(self, directory: Path) -> None:
        os.makedirs(directory, exist_ok=True)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def open(self, path: Path, *, create: bool = False) -> OSFile:
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        return OSFile(Path(path), os.open(path, flags, 0o644))

    def rename(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def remove(self, path: Path) -> None:
        os.unlink(path)

    def sync_directory(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# In-memory files with a page-cache model and fault injection


class _Inode:
    __slots__ = ("data", "durable", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.data = bytearray()  # what reads see (the page cache)
        self.durable = bytearray()  # what survives a crash


@dataclass
class _Pending:
    """A mutation not yet durable: ('write', inode, offset, bytes) or a name change."""

    kind: str  # "write" | "link" | "unlink" | "rename"
    inode: _Inode | None = None
    offset: int = 0
    data: bytes = b""
    directory: str = ""
    name: str = ""
    target: str = ""


@dataclass
class _Fault:
    countdown: int
    kinds: frozenset[str] | None
    permanent: bool
    fired: bool = False


@dataclass
class MemoryStatistics:
    """Counters of a :class:`MemoryFileFactory` (mutable, for tests)."""

    operations: int = 0  #: mutating operations issued (writes, syncs, name changes)
    writes: int = 0
    syncs: int = 0
    faults: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class MemoryFile:
    """A handle on an in-memory inode (see :class:`JournalFile`)."""

    def __init__(self, factory: MemoryFileFactory, path: Path, inode: _Inode) -> None:
        self.path = path
        self._factory = factory
        self._disk = factory._disk
        self._inode = inode
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: file is closed")
        self._factory._check_alive(self.path)

    def pread(self, size: int, offset: int) -> bytes:
        with self._disk.lock:
            self._check()
            return bytes(self._inode.data[offset:offset + size])

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        disk = self._disk
        with disk.lock:
            self._check()
            disk.operation("write", self.path)
            payload = bytes(data)
            _apply_write(self._inode.data, offset, payload)
            disk.pending.append(_Pending("write", self._inode, offset, payload))
            disk.statistics.writes += 1

    def datasync(self) -> None:
        with self._disk.lock:
            self._check()
            self._disk.operation("datasync", self.path)
            self._disk.sync_inode(self._inode)

    def fullsync(self) -> None:
        with self._disk.lock:
            self._check()
            self._disk.operation("fullsync", self.path)
            self._disk.sync_inode(self._inode)

    def allocate(self, size: int) -> None:
        disk = self._disk
        with disk.lock:
            self._check()
            current = len(self._inode.data)
            if size <= current:
                return
            disk.operation("allocate", self.path)
            zeros = bytes(size - current)
            _apply_write(self._inode.data, current, zeros)
            disk.pending.append(_Pending("write", self._inode, current, zeros))

    def size(self) -> int:
        with self._disk.lock:
            self._check()
            return len(self._inode.data)

    def close(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        return f"MemoryFile({str(self.path)!r})"


def _apply_write(target: bytearray, offset: int, data: bytes) -> None:
    if offset > len(target):
        target.extend(bytes(offset - len(target)))
    target[offset:offset + len(data)] = data


class _Disk:
    """The state behind the memory factories of one simulated machine (survives crashes)."""

    def __init__(self, sector_size: int) -> None:
        self.lock = threading.RLock()
        self.sector_size = sector_size
        self.names: dict[str, dict[str, _Inode]] = {}  # directory -> name -> inode (current)
        self.durable_names: dict[str, dict[str, _Inode]] = {}
        self.pending: list[_Pending] = []
        self.inode_numbers = 0
        self.generation = 0
        self.fault: _Fault | None = None
        self.statistics = MemoryStatistics()

    def operation(self, kind: str, path: Path | str) -> None:
        statistics = self.statistics
        statistics.operations += 1
        statistics.by_kind[kind] = statistics.by_kind.get(kind, 0) + 1
        fault = self.fault
        if fault is None:
            return
        if fault.kinds is not None and kind not in fault.kinds:
            return
        if fault.fired:
            if fault.permanent:
                statistics.faults += 1
                raise OSError(errno.EIO, f"injected fault ({kind} {path}): device gone")
            return
        if fault.countdown > 0:
            fault.countdown -= 1
            return
        fault.fired = True
        statistics.faults += 1
        raise OSError(errno.EIO, f"injected fault ({kind} {path})")

    def sync_inode(self, inode: _Inode) -> None:
        self.statistics.syncs += 1
        keep = []
        for pending in self.pending:
            if pending.kind == "write" and pending.inode is inode:
                _apply_write(inode.durable, pending.offset, pending.data)
            else:
                keep.append(pending)
        self.pending = keep

    def apply_name_change(self, pending: _Pending) -> None:
        names = self.durable_names.setdefault(pending.directory, {})
        if pending.kind == "link":
            assert pending.inode is not None
            names[pending.name] = pending.inode
        elif pending.kind == "unlink":
            names.pop(pending.name, None)
        elif pending.kind == "rename":
            names.pop(pending.name, None)
            assert pending.inode is not None
            names[pending.target] = pending.inode


class MemoryFileFactory:
    """An in-memory file system with a page cache that can crash (see the module docstring).

    ``sector_size``: a write that fits inside one aligned sector is atomic when torn (all or
    nothing), as on real disks; larger writes tear at any byte. :meth:`crash` returns the
    factory to use after the "reboot"; this one (and every handle from it) is dead from then
    on, so threads of a crashed journal can never touch the rebooted file system.
    """

    def __init__(self, *, sector_size: int = 512, _disk: _Disk | None = None) -> None:
        self._disk = _disk if _disk is not None else _Disk(sector_size)
        self._generation = self._disk.generation

    @property
    def statistics(self) -> MemoryStatistics:
        """Operation counters (shared by the factories of one simulated machine)."""
        return self._disk.statistics

    def _check_alive(self, path: Path | str) -> None:
        if self._generation != self._disk.generation:
            raise OSError(errno.EIO, f"{path}: the machine crashed (stale file factory)")

    @staticmethod
    def _split(path: Path) -> tuple[str, str]:
        path = Path(path)
        return str(path.parent), path.name

    def _directory(self, directory: str) -> dict[str, _Inode]:
        names = self._disk.names.get(directory)
        if names is None:
            raise FileNotFoundError(errno.ENOENT, "no such directory", directory)
        return names

    # -- FileFactory

    def list_directory(self, directory: Path) -> list[str]:
        with self._disk.lock:
            self._check_alive(directory)
            return sorted(self._directory(str(directory)))

    def make_directory(self, directory: Path) -> None:
        disk = self._disk
        with disk.lock:
            self._check_alive(directory)
            path = Path(directory)
            for part in [*reversed(path.parents), path]:
                disk.names.setdefault(str(part), {})
                disk.durable_names.setdefault(str(part), {})

    def exists(self, path: Path) -> bool:
        with self._disk.lock:
            self._check_alive(path)
            directory, name = self._split(path)
            return str(Path(path)) in self._disk.names or name in self._disk.names.get(
                directory, {})

    def open(self, path: Path, *, create: bool = False) -> MemoryFile:
        disk = self._disk
        with disk.lock:
            self._check_alive(path)
            directory, name = self._split(path)
            names = self._directory(directory)
            if create:
                if name in names:
                    raise FileExistsError(errno.EEXIST, "file exists", str(path))
                disk.operation("create", path)
                disk.inode_numbers += 1
                inode = _Inode(disk.inode_numbers)
                names[name] = inode
                disk.pending.append(_Pending("link", inode, directory=directory, name=name))
            else:
                inode = names.get(name)
                if inode is None:
                    raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
            return MemoryFile(self, Path(path), inode)

    def rename(self, source: Path, target: Path) -> None:
        disk = self._disk
        with disk.lock:
            self._check_alive(source)
            directory, name = self._split(source)
            target_directory, target_name = self._split(target)
            if directory != target_directory:
                raise OSError(errno.EXDEV, "rename across directories is not modelled")
            names = self._directory(directory)
            inode = names.get(name)
            if inode is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", str(source))
            disk.operation("rename", source)
            del names[name]
            names[target_name] = inode
            disk.pending.append(_Pending("rename", inode, directory=directory, name=name,
                                         target=target_name))

    def remove(self, path: Path) -> None:
        disk = self._disk
        with disk.lock:
            self._check_alive(path)
            directory, name = self._split(path)
            names = self._directory(directory)
            if name not in names:
                raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
            disk.operation("remove", path)
            del names[name]
            disk.pending.append(_Pending("unlink", directory=directory, name=name))

    def sync_directory(self, directory: Path) -> None:
        disk = self._disk
        with disk.lock:
            self._check_alive(directory)
            key = str(Path(directory))
            self._directory(key)
            disk.operation("sync_directory", directory)
            disk.statistics.syncs += 1
            keep = []
            for pending in disk.pending:
                if pending.kind != "write" and pending.directory == key:
                    disk.apply_name_change(pending)
                else:
                    keep.append(pending)
            disk.pending = keep

    # -- test controls

    def inject_fault(self, after: int = 0, *, kinds: set[str] | frozenset[str] | None = None,
                     permanent: bool = False) -> None:
        """Fail the operation that comes ``after`` operations from now (0 = the next one).

        ``kinds`` limits counting and failing to those operation kinds ("write", "datasync",
        "fullsync", "allocate", "create", "rename", "remove", "sync_directory"). With
        ``permanent`` every later matching operation fails too (a device that went away).
        The failing operation has no effect. Reads never fail.
        """
        with self._disk.lock:
            self._disk.fault = _Fault(after, frozenset(kinds) if kinds is not None else None,
                                      permanent)

    def clear_fault(self) -> None:
        """Remove any injected fault."""
        with self._disk.lock:
            self._disk.fault = None

    @property
    def fault_fired(self) -> bool:
        """Whether the injected fault has triggered."""
        with self._disk.lock:
            return self._disk.fault is not None and self._disk.fault.fired

    @property
    def pending_operations(self) -> int:
        """Mutations issued but not yet durable."""
        with self._disk.lock:
            return len(self._disk.pending)

    def crash(self, *, keep: int = 0, torn_bytes: int | None = None) -> MemoryFileFactory:
        """Simulate a power loss; return the factory of the rebooted machine.

        The first ``keep`` pending operations survive (in issue order), then, when
        ``torn_bytes`` is given and the next pending operation is a write, its first
        ``torn_bytes`` bytes survive too (a write inside one sector survives whole or not at
        all); everything else pending is lost. This factory and its handles stop working;
        faults are cleared.
        """
        disk = self._disk
        with disk.lock:
            survivors = disk.pending[:keep]
            for pending in survivors:
                if pending.kind == "write":
                    assert pending.inode is not None
                    _apply_write(pending.inode.durable, pending.offset, pending.data)
                else:
                    disk.apply_name_change(pending)
            if torn_bytes is not None and keep < len(disk.pending):
                torn = disk.pending[keep]
                if torn.kind == "write" and torn_bytes > 0:
                    assert torn.inode is not None
                    count = min(torn_bytes, len(torn.data))
                    sector = disk.sector_size
                    if torn.offset // sector == (torn.offset + len(torn.data) - 1) // sector:
                        count = len(torn.data) if count == len(torn.data) else 0
                    if count:
                        _apply_write(torn.inode.durable, torn.offset, torn.data[:count])
            disk.pending = []
            disk.names = {}
            for directory, names in disk.durable_names.items():
                disk.names[directory] = dict(names)
                for inode in names.values():
                    inode.data = bytearray(inode.durable)
            disk.generation += 1
            disk.fault = None
            return MemoryFileFactory(_disk=disk)

    # -- direct access for tests (no fault counting, immediately durable)

    def read_file(self, path: Path) -> bytes:
        """The current (page cache) content of ``path``."""
        with self._disk.lock:
            directory, name = self._split(path)
            return bytes(self._directory(directory)[name].data)

    def write_file_durably(self, path: Path, offset: int, data: bytes) -> None:
        """Overwrite bytes of an existing file, durably, bypassing faults (damage tests)."""
        with self._disk.lock:
            directory, name = self._split(path)
            inode = self._directory(directory)[name]
            _apply_write(inode.data, offset, data)
            _apply_write(inode.durable, offset, data)
