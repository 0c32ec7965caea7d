"""``pybroker perf journal``: how fast this disk syncs, and what that means for the journal.

Like ``artemis perf-journal``: writes ``--writes`` blocks of ``--block-size`` bytes, each
followed by an fdatasync, ``--tries`` times in the journal directory, prints "Your system can
execute N writes per millisecond" and the ``<journal-buffer-timeout>`` to configure. Then
(unless ``--records 0``) it measures pybroker's journal on the same disk with ``--writers``
concurrent durable writers, where group commit lets one fdatasync cover many records.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..journal import JournalOptions
from ..journal.perf import journal_rate, raw_sync_rate

__all__ = ["perf"]


@click.group()
def perf() -> None:
    """Performance measurements."""


@perf.command("journal")
@click.option("--block-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="The block size for each write.")
@click.option("--writes", type=click.IntRange(min=1), default=250, show_default=True,
              help="The number of writes to be performed.")
@click.option("--tries", type=click.IntRange(min=1), default=5, show_default=True,
              help="The number of tries for the test.")
@click.option("--sync/--no-sync", "sync", default=True, show_default=True,
              help="Enable or disable syncs (journal-datasync).")
@click.option("--sync-writes", is_flag=True, default=False,
              help="Perform each write synchronously, as a single producer would (pybroker's "
              "journal types all write like NIO, where this is always the case).")
@click.option("--journal-type", type=click.Choice(["NIO", "ASYNCIO", "MAPPED"],
                                                  case_sensitive=False),
              default="NIO", show_default=True,
              help="Journal type (pybroker writes all of them with pwrite + fdatasync).")
@click.option("--file", "file_name", default="pybroker-perf-journal.tmp", show_default=True,
              help="The file name to be used (created in --directory, removed afterwards).")
@click.option("--directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("data/journal"), show_default=True,
              help="The journal directory to test (created if missing).")
@click.option("--records", type=click.IntRange(min=0), default=20_000, show_default=True,
              help="Durable records for the group-commit measurement (0 skips it).")
@click.option("--writers", type=click.IntRange(min=1), default=100, show_default=True,
              help="Concurrent writers for the group-commit measurement.")
def journal(block_size: int, writes: int, tries: int, sync: bool, sync_writes: bool,
            journal_type: str, file_name: str, directory: Path, records: int,
            writers: int) -> None:
    """Calculate the journal-buffer-timeout to use with this journal directory."""
    console = Console(highlight=False, soft_wrap=True)  # the text lines are for grep: no wrap
    journal_type = journal_type.upper()
    console.print()
    console.print("Auto tuning journal ...")
    console.print(f"Performing {tries} tests writing {writes} blocks of {block_size} on each "
                  f"test, sync={str(sync).lower()} with journalType = {journal_type}")
    raw = raw_sync_rate(directory, block_size=block_size, writes=writes, tries=tries,
                        sync=sync, file_name=file_name)
    timeout_ns = raw.suggested_buffer_timeout_ns
    table = Table(title=f"Journal performance in {directory}")
    table.add_column("Measurement")
    table.add_column("Result", justify="right")
    table.add_row(f"write{' + fdatasync' if sync else ''} of {block_size} bytes, best of "
                  f"{tries} x {writes}",
                  f"{raw.writes_per_second:,.0f} writes/s ({1e6 / raw.writes_per_second:,.1f} µs"
                  " each)")
    table.add_row("tries (seconds)", ", ".join(f"{seconds:.3f}" for seconds in raw.try_seconds))
    if records:
        options = JournalOptions(buffer_timeout_ns=timeout_ns, datasync=sync,
                                 journal_type=journal_type)
        rate = asyncio.run(journal_rate(directory, records=records, writers=writers,
                                        record_size=block_size, options=options))
        table.add_row(f"journal: {writers} writers, {records:,} {'durable ' if sync else ''}"
                      f"records of {block_size} bytes",
                      f"{rate.records_per_second:,.0f} records/s")
        table.add_row("journal: fdatasyncs", f"{rate.fsyncs_per_second:,.0f} /s, "
                      f"{rate.records_per_fsync:,.1f} records each")
        table.add_row("journal: CPU per record", f"{rate.cpu_us_per_record:,.1f} µs")
    console.print(table)
    console.print(f"Your system can execute {raw.writes_per_millisecond:.2f} writes per "
                  "millisecond")
    console.print(f"Your journal-buffer-timeout should be: {timeout_ns}")
    console.print("You should use this following configuration:")
    console.print()
    console.print(f"<journal-buffer-timeout>{timeout_ns}</journal-buffer-timeout>",
                  markup=False)
