"""The file factories: one suite for both, then the memory file system's crash model."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pybroker.journal.files import FileFactory, JournalFile, MemoryFileFactory, OSFileFactory


@pytest.fixture(params=["os", "memory"])
def factory(request, tmp_path) -> tuple[FileFactory, Path]:
    if request.param == "os":
        return OSFileFactory(), tmp_path / "d"
    return MemoryFileFactory(), Path("/m/d")


def test_basic_operations(factory):
    files, directory = factory
    files.make_directory(directory)
    files.make_directory(directory)  # idempotent
    assert files.list_directory(directory) == []
    handle = files.open(directory / "a", create=True)
    assert isinstance(handle, JournalFile)
    with pytest.raises(FileExistsError):
        files.open(directory / "a", create=True)
    handle.allocate(10_000)
    assert handle.size() == 10_000
    assert handle.pread(10, 0) == bytes(10)
    handle.pwrite(b"hello", 9_998)
    assert handle.size() == 10_003
    assert handle.pread(100, 9_998) == b"hello"
    handle.pwrite(memoryview(b"abc"), 1)
    handle.pwrite(bytearray(b"Z"), 0)
    assert handle.pread(5, 0) == b"Zabc\x00"
    handle.datasync()
    handle.fullsync()
    handle.close()
    handle.close()
    assert files.exists(directory / "a")
    files.rename(directory / "a", directory / "b")
    assert files.list_directory(directory) == ["b"]
    files.sync_directory(directory)
    again = files.open(directory / "b")
    assert again.pread(3, 1) == b"abc"
    again.close()
    files.remove(directory / "b")
    assert not files.exists(directory / "b")
    with pytest.raises(FileNotFoundError):
        files.open(directory / "b")
    with pytest.raises(FileNotFoundError):
        files.remove(directory / "b")


def make(files: MemoryFileFactory, path: Path, data: bytes, *, sync_file: bool,
         sync_directory: bool) -> None:
    handle = files.open(path, create=True)
    handle.pwrite(data, 0)
    if sync_file:
        handle.datasync()
    if sync_directory:
        files.sync_directory(path.parent)
    handle.close()


def test_crash_keeps_only_what_was_synced():
    files = MemoryFileFactory()
    directory = Path("/d")
    files.make_directory(directory)
    make(files, directory / "synced", b"durable", sync_file=True, sync_directory=True)
    make(files, directory / "unsynced-data", b"lost", sync_file=False, sync_directory=True)
    make(files, directory / "unsynced-name", b"lost", sync_file=True, sync_directory=False)
    handle = files.open(directory / "synced")
    handle.pwrite(b"XX", 0)  # not synced
    rebooted = files.crash()
    assert rebooted.list_directory(directory) == ["synced", "unsynced-data"]
    assert rebooted.read_file(directory / "synced") == b"durable"
    assert rebooted.read_file(directory / "unsynced-data") == b""
    with pytest.raises(OSError) as stale:
        handle.pread(1, 0)
    assert stale.value.errno == errno.EIO
    with pytest.raises(OSError):
        files.open(directory / "synced")


def test_rename_and_remove_are_durable_only_after_a_directory_sync():
    files = MemoryFileFactory()
    directory = Path("/d")
    files.make_directory(directory)
    make(files, directory / "a.tmp", b"x", sync_file=True, sync_directory=True)
    make(files, directory / "gone", b"y", sync_file=True, sync_directory=True)
    files.rename(directory / "a.tmp", directory / "a")
    files.remove(directory / "gone")
    assert files.list_directory(directory) == ["a"]
    rebooted = files.crash()
    assert rebooted.list_directory(directory) == ["a.tmp", "gone"]
    rebooted.rename(directory / "a.tmp", directory / "a")
    rebooted.remove(directory / "gone")
    rebooted.sync_directory(directory)
    assert rebooted.crash().list_directory(directory) == ["a"]


def test_crash_can_keep_a_prefix_of_the_pending_writes_and_tear_the_next():
    files = MemoryFileFactory(sector_size=512)
    directory = Path("/d")
    files.make_directory(directory)
    make(files, directory / "f", bytes(4096), sync_file=True, sync_directory=True)
    handle = files.open(directory / "f")
    handle.pwrite(b"A" * 1000, 0)
    handle.pwrite(b"B" * 1000, 1000)
    handle.pwrite(b"C" * 1000, 2000)
    assert files.pending_operations == 3
    rebooted = files.crash(keep=1, torn_bytes=300)
    content = rebooted.read_file(directory / "f")
    assert content[:1000] == b"A" * 1000
    assert content[1000:1300] == b"B" * 300
    assert content[1300:] == bytes(4096 - 1300)


def test_a_write_inside_one_sector_is_not_torn():
    files = MemoryFileFactory(sector_size=512)
    directory = Path("/d")
    files.make_directory(directory)
    make(files, directory / "f", bytes(1024), sync_file=True, sync_directory=True)
    handle = files.open(directory / "f")
    handle.pwrite(b"H" * 64, 0)
    rebooted = files.crash(torn_bytes=30)
    assert rebooted.read_file(directory / "f")[:64] == bytes(64)
    handle = rebooted.open(directory / "f")
    handle.pwrite(b"H" * 64, 0)
    assert rebooted.crash(torn_bytes=64).read_file(directory / "f")[:64] == b"H" * 64


def test_injected_fault_fails_the_nth_operation_once_or_for_good():
    files = MemoryFileFactory()
    directory = Path("/d")
    files.make_directory(directory)
    handle = files.open(directory / "f", create=True)
    files.inject_fault(after=2)
    handle.pwrite(b"1", 0)
    handle.pwrite(b"2", 1)
    with pytest.raises(OSError) as fault:
        handle.pwrite(b"3", 2)
    assert fault.value.errno == errno.EIO
    assert files.fault_fired
    handle.pwrite(b"4", 3)  # a one-off fault
    assert handle.pread(4, 0) == b"12\x004"
    files.inject_fault(after=0, kinds={"datasync"}, permanent=True)
    handle.pwrite(b"5", 4)  # other kinds are not affected
    for _ in range(3):
        with pytest.raises(OSError):
            handle.datasync()
    handle.fullsync()
    files.clear_fault()
    handle.datasync()
    assert files.statistics.faults == 4


def test_a_failed_sync_leaves_the_data_pending():
    files = MemoryFileFactory()
    directory = Path("/d")
    files.make_directory(directory)
    make(files, directory / "f", b"", sync_file=True, sync_directory=True)
    handle = files.open(directory / "f")
    handle.pwrite(b"data", 0)
    files.inject_fault(kinds={"datasync"})
    with pytest.raises(OSError):
        handle.datasync()
    assert files.crash().read_file(directory / "f") == b""
