"""``pybroker perf journal`` and the measurements behind it (tiny runs: no timing asserted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from pybroker.cli.main import cli
from pybroker.cli.perf import perf
from pybroker.journal import JournalOptions, MemoryFileFactory
from pybroker.journal.perf import SyncRate, journal_rate, raw_sync_rate


def test_perf_journal_prints_the_rate_and_the_buffer_timeout(tmp_path):
    directory = tmp_path / "data" / "journal"
    result = CliRunner().invoke(cli, [
        "perf", "journal", "--directory", str(directory), "--writes", "20", "--tries", "2",
        "--block-size", "512", "--records", "300", "--writers", "10"])
    assert result.exit_code == 0, result.output
    output = result.output
    assert "Performing 2 tests writing 20 blocks of 512 on each test, sync=true" in output
    assert re.search(r"Your system can execute [\d.]+ writes per millisecond", output)
    timeout = int(re.search(r"<journal-buffer-timeout>(\d+)</journal-buffer-timeout>",
                            output).group(1))
    assert timeout > 0
    assert f"Your journal-buffer-timeout should be: {timeout}" in output
    assert "10 writers" in output and "records/s" in output and "fdatasyncs" in output
    assert list(directory.iterdir()) == []  # the test file and the journal are gone


def test_perf_journal_without_sync_and_without_the_journal_run(tmp_path):
    result = CliRunner().invoke(perf, [
        "journal", "--directory", str(tmp_path), "--writes", "5", "--tries", "1",
        "--no-sync", "--records", "0", "--journal-type", "asyncio", "--file", "probe.tmp"])
    assert result.exit_code == 0, result.output
    assert "sync=false with journalType = ASYNCIO" in result.output
    assert "writers" not in result.output
    assert "<journal-buffer-timeout>" in result.output
    assert not (tmp_path / "probe.tmp").exists()


def test_perf_journal_rejects_bad_arguments(tmp_path):
    result = CliRunner().invoke(perf, ["journal", "--directory", str(tmp_path),
                                       "--writes", "0"])
    assert result.exit_code != 0
    assert "--writes" in result.output


def test_raw_sync_rate_writes_and_syncs_each_block():
    files = MemoryFileFactory()
    directory = Path("/perf")
    rate = raw_sync_rate(directory, block_size=100, writes=7, tries=3, files=files)
    assert len(rate.try_seconds) == 3
    assert files.statistics.by_kind["write"] == 7 * 3
    assert files.statistics.by_kind["datasync"] == 7 * 3
    assert files.list_directory(directory) == []
    unsynced = raw_sync_rate(directory, block_size=100, writes=7, tries=1, sync=False,
                             files=files)
    assert not unsynced.sync
    assert files.statistics.by_kind["datasync"] == 7 * 3


def test_sync_rate_arithmetic():
    rate = SyncRate(block_size=4096, writes=250, tries=2, sync=True, try_seconds=(0.05, 0.025))
    assert rate.best_seconds == 0.025
    assert rate.writes_per_second == pytest.approx(10_000)
    assert rate.writes_per_millisecond == pytest.approx(10)
    assert rate.suggested_buffer_timeout_ns == 100_000
    with pytest.raises(ValueError):
        raw_sync_rate(Path("/x"), writes=0, files=MemoryFileFactory())


async def test_journal_rate_group_commits(tmp_path):
    rate = await journal_rate(tmp_path, records=400, writers=20, record_size=256,
                              options=JournalOptions(buffer_timeout_ns=0))
    assert rate.records == 400 and rate.writers == 20
    assert rate.fsyncs >= 1 and rate.records_per_fsync >= 1
    assert rate.records_per_second > 0 and rate.cpu_us_per_record > 0
    assert list(tmp_path.iterdir()) == []
