"""``pybroker status``: the shared store's node id, state byte, epoch and lock holders.

Reads the lock directory without taking any lock, so it is safe next to running brokers
(pybroker or Artemis). ``--dir`` is the ``node-manager-lock-directory`` (by default the
journal directory, ``<instance>/data/journal``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from pybroker.errors import HAError
from pybroker.ha.status import LockFileStatus, StoreStatus, read_status

_HOLDERS = {
    "serverlock.1": "the active broker",
    "serverlock.2": "the backup in line",
    "server.lock": "state lock (held only while the state byte is read or written)",
}


@click.command("status")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The node-manager lock directory (usually <instance>/data/journal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def status(directory: Path, as_json: bool) -> None:
    """Show the shared store: node id, state byte, epoch and who holds each lock."""
    try:
        store = read_status(directory)
    except HAError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(store.to_dict(), indent=2))
        return
    _print_tables(store, Console())


def _print_tables(store: StoreStatus, console: Console) -> None:
    summary = Table(title=f"Shared store {store.directory}", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
    summary.add_row("node id", store.node_id or "(none: no primary or backup has started here)")
    if store.state is None:
        summary.add_row("state", "(no server.lock)")
    else:
        summary.add_row("state", f"'{store.state}' {store.state_name}")
    if store.server_lock_mtime_ns is not None:
        when = datetime.fromtimestamp(store.server_lock_mtime_ns / 1e9, tz=UTC)
        summary.add_row("server.lock modified", when.isoformat(timespec="milliseconds"))
    summary.add_row("epoch", str(store.epoch) if store.epoch_error is None else store.epoch_error)
    console.print(summary)

    locks = Table(title="Locks")
    for column in ("file", "held", "holder pid", "kind", "meaning"):
        locks.add_column(column)
    for lock in store.locks:
        locks.add_row(
            lock.name, _held_text(lock), _pids_text(lock), lock.kind or "", _HOLDERS[lock.name]
        )
    console.print(locks)


def _held_text(lock: LockFileStatus) -> str:
    if not lock.exists:
        return "missing"
    if lock.held is None:
        return f"unknown ({lock.error})"
    return "yes" if lock.held else "no"


def _pids_text(lock: LockFileStatus) -> str:
    if not lock.held:
        return ""
    if not lock.pids:
        return "not on this host"
    return ", ".join(str(pid) for pid in lock.pids)
