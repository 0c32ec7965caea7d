"""``pybroker data print | verify | recover``: the journal tools of ``artemis data``.

They read the journals of a *stopped* broker: each command first looks at the lock files next
to the journal (without taking any lock) and refuses when a live broker holds ``serverlock.1``
(``--force`` overrides, as Artemis's ``--f``).

``print``   every record (``operation@AddRecord;recordID=...;userRecordType=...``), then the
            surviving-records summary, prepared and failed transactions and the message counts
            per queue; ``--json`` prints one JSON object instead.
``verify``  checks every record (length, CRC32C, file id, epoch); exit code 1 on any damage.
``recover`` salvages every valid record into a fresh journal and reports what was lost.

Directories default to the instance's broker.xml (``--config``, or ``$PYBROKER_INSTANCE``), else
``./data/journal`` and ``./data/bindings``.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from pybroker.errors import ConfigError, JournalError

EXIT_DAMAGE = 1
EXIT_REFUSED = 4


def _configuration(config: str | None) -> Any:
    from pybroker.config.parse import default_config, load_config

    if config is not None:
        return load_config(Path(config))
    instance = os.environ.get("PYBROKER_INSTANCE")
    if instance:
        return load_config(Path(instance) / "etc" / "broker.xml")
    return default_config(instance_dir=Path.cwd())


def _directories(config: str | None, journal: str | None, bindings: str | None) -> tuple[Any, Path, Path]:
    configuration = _configuration(config)
    journal_dir = Path(journal) if journal else Path(configuration.journal_directory)
    bindings_dir = Path(bindings) if bindings else Path(configuration.bindings_directory)
    return configuration, journal_dir, bindings_dir


def _lock_directory(configuration: Any, journal_dir: Path, journal_option: str | None) -> Path:
    """Where the lock files are: next to an explicitly given journal, else the configured
    node-manager-lock-directory."""
    if journal_option:
        return journal_dir
    return Path(configuration.node_manager_lock_directory or journal_dir)


def _refuse_if_live(lock_directory: Path, force: bool) -> None:
    from pybroker.ha.status import read_status

    if force or not (lock_directory / "serverlock.1").exists():
        return
    try:
        status = read_status(lock_directory)
        held = status.lock("serverlock.1").held
    except Exception:  # noqa: BLE001 - an unreadable status does not block an offline tool
        return
    if held:
        pids = status.lock("serverlock.1").pids
        click.echo(
            f"pybroker data: a live broker holds {lock_directory / 'serverlock.1'}"
            f"{' (pid ' + ','.join(map(str, pids)) + ')' if pids else ''}; stop it first, "
            "or use --force to read a journal that is being written",
            err=True,
        )
        sys.exit(EXIT_REFUSED)


def _options(configuration: Any, *, bindings: bool) -> Any:
    from pybroker.storage.journal_storage import journal_options

    return journal_options(configuration, bindings=bindings)


def _common(function: Any) -> Any:
    for option in reversed(
        [
            click.option("--config", type=click.Path(dir_okay=False), help="broker.xml naming the directories"),
            click.option("--journal", type=click.Path(file_okay=False), help="message journal directory"),
            click.option("--bindings", type=click.Path(file_okay=False), help="bindings journal directory"),
            click.option("--force", "-f", is_flag=True, help="run even if a live broker holds the journal"),
        ]
    ):
        function = option(function)
    return function


@click.group()
def data() -> None:
    """Print, verify and recover journals (like 'artemis data')."""


def _describe_body(user_type: int | None, body: bytes | None) -> str:
    from pybroker.storage import journal_storage as js

    if body is None:
        return ""
    try:
        if user_type == js.ADD_MESSAGE:
            queues, message = js.split_message_record(body)
            return f"queues={list(queues)};messageSize={len(message)}"
        if user_type in (js.ADD_REF, js.ACKNOWLEDGE_REF):
            return f"queueID={js._unpack(body)}"
        if user_type in (js.QUEUE_BINDING, js.ADDRESS_BINDING):
            value = js._unpack(body)
            return ";".join(f"{k}={v}" for k, v in value.items() if v not in (None, False, -1))
        if user_type in (js.ID_COUNTER, js.UPDATE_DELIVERY_COUNT, js.DUPLICATE_ID, js.KEY_VALUE):
            value = js._unpack(body)
            return f"value={value!r}"[:200]
    except Exception as error:  # noqa: BLE001 - a print tool shows what it cannot decode
        return f"undecodable body ({error})"
    return f"size={len(body)}"


_OPERATIONS = {
    "add": "AddRecord",
    "update": "Update",
    "delete": "DeleteRecord",
    "add_tx": "AddRecordTX",
    "update_tx": "UpdateTX",
    "delete_tx": "DeleteRecordTX",
    "prepare": "Prepare",
    "commit": "Commit",
    "rollback": "Rollback",
}


def _record_line(view: Any) -> str:
    from pybroker.journal.framing import RecordKind
    from pybroker.storage.journal_storage import RECORD_TYPE_NAMES

    kind = RecordKind(view.kind).name.lower()
    operation = _OPERATIONS.get(kind, kind)
    parts = [f"operation@{operation}"]
    if view.tx_id is not None:
        parts.append(f"txID={view.tx_id}")
    if view.record_id is not None:
        parts.append(f"recordID={view.record_id}")
    if view.user_type is not None:
        parts.append(f"userRecordType={view.user_type} {RECORD_TYPE_NAMES.get(view.user_type, '')}".rstrip())
    description = _describe_body(view.user_type, view.body) if kind not in ("prepare", "commit", "rollback") else ""
    if description:
        parts.append(description)
    parts.append(f"file={Path(view.file).name}@{view.offset}")
    return ";".join(parts)


@data.command("print")
@_common
@click.option("--json", "as_json", is_flag=True, help="one JSON object (summary and records)")
@click.option("--summary-only", is_flag=True, help="only the summaries")
def print_command(config: str | None, journal: str | None, bindings: str | None, force: bool,
                  as_json: bool, summary_only: bool) -> None:
    """Print journal records and a summary (like 'artemis data print')."""
    import asyncio

    from pybroker.journal.tools import iterate_records

    try:
        configuration, journal_dir, bindings_dir = _directories(config, journal, bindings)
    except ConfigError as error:
        click.echo(f"pybroker data: {error}", err=True)
        sys.exit(2)
    _refuse_if_live(_lock_directory(configuration, journal_dir, journal), force)
    records: dict[str, list[str]] = {"bindings": [], "messages": []}
    if not summary_only:
        for name, directory, bindings_journal in (("bindings", bindings_dir, True), ("messages", journal_dir, False)):
            if not directory.is_dir():
                continue
            try:
                for view in iterate_records(directory, _options(configuration, bindings=bindings_journal)):
                    records[name].append(_record_line(view))
            except JournalError as error:
                click.echo(f"pybroker data: {error}", err=True)
                sys.exit(EXIT_DAMAGE)

    # the summary comes from a real load, on a copy so nothing is appended to the original
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pybroker-data-") as tmp:
        copy_journal = Path(tmp) / "journal"
        copy_bindings = Path(tmp) / "bindings"
        for source, target in ((journal_dir, copy_journal), (bindings_dir, copy_bindings)):
            if source.is_dir():
                shutil.copytree(source, target)
        copied = configuration.replace(journal_directory=copy_journal, bindings_directory=copy_bindings)
        summary = asyncio.run(_summarise(copied))
    if as_json:
        click.echo(json.dumps({"records": records, **summary}, default=str, indent=2))
        return
    for name in ("bindings", "messages"):
        if records[name]:
            click.echo(f"********************************************\n{name.upper()} JOURNAL\n********************************************")
            for line in records[name]:
                click.echo(line)
    click.echo("\n### Surviving Records Summary ###")
    click.echo(f"messages: {summary['surviving_messages']}  queues: {len(summary['queues'])}  "
               f"addresses: {len(summary['addresses'])}")
    click.echo("\n### Prepared TX ###")
    for tx in summary["prepared_transactions"]:
        click.echo(f"txID={tx}")
    click.echo("\n### Failed Transactions (Missing commit/prepare/rollback record) ###")
    click.echo(f"incomplete: {summary['incomplete_transactions']}  discarded: {summary['discarded_transactions']}")
    click.echo("\n### Message Counts ###")
    for queue, count in summary["message_counts"].items():
        click.echo(f"queue {queue}: {count}")


async def _summarise(configuration: Any) -> dict[str, Any]:
    from pybroker.storage.journal_storage import JournalStorageManager

    storage = JournalStorageManager(configuration, epoch=2**62)
    await storage.start()
    try:
        state = await storage.load()
    finally:
        await storage.stop()
    bindings_result, messages_result = storage.load_results
    names = {queue.queue_id: queue.name for queue in state.queues}
    counts: Counter[str] = Counter()
    for message in state.messages:
        for queue_id, _count in message.refs:
            counts[names.get(queue_id, f"<deleted queue {queue_id}>")] += 1
    return {
        "surviving_messages": len(state.messages),
        "queues": sorted(names.values()),
        "addresses": sorted(address.name for address in state.addresses),
        "message_counts": dict(sorted(counts.items())),
        "prepared_transactions": [tx.tx_id for tx in state.prepared_transactions],
        "incomplete_transactions": messages_result.incomplete_transactions + bindings_result.incomplete_transactions,
        "discarded_transactions": messages_result.discarded_transactions + bindings_result.discarded_transactions,
    }


@data.command()
@_common
def verify(config: str | None, journal: str | None, bindings: str | None, force: bool) -> None:
    """Check every record; exit 1 on damage."""
    from pybroker.journal.tools import verify as verify_journal

    configuration, journal_dir, bindings_dir = _directories(config, journal, bindings)
    _refuse_if_live(_lock_directory(configuration, journal_dir, journal), force)
    damaged = False
    for name, directory, bindings_journal in (("bindings", bindings_dir, True), ("messages", journal_dir, False)):
        if not directory.is_dir():
            click.echo(f"{name}: {directory} does not exist")
            continue
        report = verify_journal(directory, _options(configuration, bindings=bindings_journal))
        click.echo(f"{name}: {len(report.files)} files, {report.records} valid records in {directory}")
        for problem in report.problems:
            damaged = True
            click.echo(f"  problem: {problem}")
        for region in report.damage:
            if region.torn_tail:
                click.echo(f"  torn tail (a crash; truncated at the next start): {Path(region.file).name} "
                           f"offset {region.offset}, {region.length} bytes: {region.detail}")
            else:
                damaged = True
                click.echo(f"  DAMAGE: {Path(region.file).name} offset {region.offset}, {region.length} bytes "
                           f"({region.kind}): {region.detail}")
    if damaged:
        click.echo("damage found: run 'pybroker data recover' to salvage every valid record", err=True)
        sys.exit(EXIT_DAMAGE)
    click.echo("OK")


@data.command()
@_common
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="directory for the recovered journal (a fresh 'journal' and 'bindings' inside)")
def recover(config: str | None, journal: str | None, bindings: str | None, force: bool, output: str) -> None:
    """Salvage every valid record into a fresh journal and report what was lost."""
    from pybroker.journal.tools import recover as recover_journal

    configuration, journal_dir, bindings_dir = _directories(config, journal, bindings)
    _refuse_if_live(_lock_directory(configuration, journal_dir, journal), force)
    destination = Path(output)
    lost = 0
    for name, directory, bindings_journal in (("bindings", bindings_dir, True), ("journal", journal_dir, False)):
        if not directory.is_dir():
            continue
        target = destination / name
        report = recover_journal(directory, target, _options(configuration, bindings=bindings_journal))
        lost += len(report.damaged_regions)
        click.echo(
            f"{name}: salvaged {report.records_salvaged} records into {target}; "
            f"{len(report.damaged_regions)} damaged regions ({report.bytes_lost} bytes lost), "
            f"{report.transactions_dropped} transactions dropped"
        )
    click.echo(
        f"point journal-directory and bindings-directory at {destination}/journal and "
        f"{destination}/bindings (or copy them back) and start the broker"
    )
    if lost:
        sys.exit(EXIT_DAMAGE)
