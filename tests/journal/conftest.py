"""Fixtures for the journal suite: one journal directory on real files or on memory files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pybroker.journal import MemoryFileFactory, OSFileFactory

sys.path.insert(0, str(Path(__file__).parent))  # journal_helpers beside this file
from journal_helpers import Store  # noqa: E402


@pytest.fixture(params=["os", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The journal directory, on real files and on the memory file system."""
    if request.param == "os":
        return Store("os", OSFileFactory(), tmp_path / "journal")
    files = MemoryFileFactory()
    files.make_directory(Path("/memory/journal"))
    return Store("memory", files, Path("/memory/journal"))


@pytest.fixture
def memory_store() -> Store:
    """A journal directory on the memory file system only (crash and fault tests)."""
    files = MemoryFileFactory()
    files.make_directory(Path("/memory/journal"))
    return Store("memory", files, Path("/memory/journal"))
