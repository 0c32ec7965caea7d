"""Journal benchmark: durable 1 KiB appends with 1, 10 and 100 writers, and the replay rate.

Each configuration prints one JSON line::

    python benchmarks/journal.py                  # temp dir under /tmp (same disk as /work)
    python benchmarks/journal.py --directory DIR --seconds 3 --replay-records 300000

For the append runs, every writer is an asyncio task that appends a 1 KiB record with
``sync=True``, awaits its future, and appends again. Reported: records/s, fdatasyncs/s,
records per fsync, process CPU-µs per record, and the raw limit of the same disk measured in
the same run: ``pwrite`` + ``fdatasync`` of batches of the same size (records per fsync x
framed record size) into a pre-allocated file, so ``ratio_to_raw`` says how close the journal
gets to what the disk allows at that batch size.

The 100-writer runs start with ``--precreate-mb`` of journal files already made
(``journal-min-files``, zero-filled at open, before the timing), as the raw and ceiling runs
write into a pre-allocated file and a broker that deletes what it consumed reuses its files.
One more 100-writer run keeps the default ``journal-min-files`` (2), so the journal makes
its files during the run (``files_precreated`` 0): zero-filling 10 MiB per 10,000 records on a
thread, which competes with the fdatasyncs.

The 100-writer run also reports ``ceiling_records_per_s``: the same writer tasks awaiting
futures that a thread resolves after ``pwrite`` + ``fdatasync`` of their bytes (group commit,
no framing, no bookkeeping). It is what asyncio and the GIL allow on this machine for one
future per record, measured in the same run; ``ratio_to_ceiling`` compares the journal to it.

Every append run also reports CPU-µs per record for each thread: ``loop`` (the event loop:
the writer tasks, framing, resolving futures), ``writer`` (pwrite + fdatasync) and ``files``
(pre-filling new journal files with zeros; the benchmark never deletes, so no file is reused),
and ``loop_busy``, the share of the wall time the loop thread was on a CPU. A loop that is idle
about half the time is waiting for the group commit its writers are all in.

The replay run writes ``--replay-records`` records (non-durably, then one sync), closes the
journal, and times ``load()`` of a fresh journal object (the files are in the page cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil

from pybroker.journal import Journal, JournalOptions
from pybroker.journal.perf import raw_sync_rate

RECORD_BODY = b"r" * 1024


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process's live threads, by role."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    main = threading.main_thread().native_id
    roles: dict[str, float] = {}
    for thread in psutil.Process().threads():
        name = names.get(thread.id, "")
        role = ("loop" if thread.id == main else "files" if name.endswith("-files")
                else "writer" if name.startswith("pybroker-journal") or name == "ceiling-writer"
                else "other")
        roles[role] = roles.get(role, 0.0) + thread.user_time + thread.system_time
    return roles


async def _timed_writers(write_one: Callable[[], Awaitable[object]], writers: int,
                         seconds: float) -> tuple[int, float, float, dict]:
    """``writers`` tasks awaiting ``write_one()`` in a loop for ``seconds``: (records, wall
    seconds, process CPU seconds, per-thread figures)."""
    stop = False

    async def writer() -> int:
        count = 0
        while not stop:
            await write_one()
            count += 1
        return count

    threads_start = _thread_cpu()
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    tasks = [asyncio.create_task(writer()) for _ in range(writers)]
    await asyncio.sleep(seconds)
    stop = True
    counts = await asyncio.gather(*tasks)
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start
    records = sum(counts)
    threads_end = _thread_cpu()
    per_thread = {
        f"{role}_cpu_us_per_record": round((used - threads_start.get(role, 0.0))
                                           / max(1, records) * 1e6, 2)
        for role, used in sorted(threads_end.items()) if role != "other"
    }
    per_thread["loop_busy"] = round((threads_end.get("loop", 0.0) - threads_start.get("loop", 0.0))
                                    / wall, 2)
    return records, wall, cpu, per_thread


async def _append_run(directory: Path, writers: int, seconds: float,
                      options: JournalOptions) -> dict:
    journal = await Journal.open(directory, options)
    await journal.load()
    next_id = 0

    def write_one() -> asyncio.Future[None]:
        nonlocal next_id
        next_id += 1
        return journal.append(next_id, 1, RECORD_BODY, sync=True)

    # warm up: create the files ahead, let the first claims happen
    for _ in range(200):
        next_id += 1
        journal.append(next_id, 1, RECORD_BODY, sync=False)
    await journal.sync()
    before = journal.statistics()
    records, wall, cpu, per_thread = await _timed_writers(write_one, writers, seconds)
    after = journal.statistics()
    await journal.close()
    fsyncs = after.fsyncs - before.fsyncs
    record_size = (after.bytes_written - before.bytes_written) / max(
        1, after.records_written - before.records_written)
    return {
        "records": records,
        "seconds": round(wall, 3),
        "records_per_s": round(records / wall),
        "fdatasyncs_per_s": round(fsyncs / wall),
        "records_per_fsync": round(records / max(1, fsyncs), 1),
        "cpu_us_per_record": round(cpu / max(1, records) * 1e6, 2),
        "framed_record_bytes": round(record_size),
        **per_thread,
    }


def _zeroed_file(directory: Path, size: int) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "ceiling.dat", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, bytes(size), 0)
    os.fsync(fd)
    return fd


async def _ceiling_run(directory: Path, writers: int, seconds: float, record_bytes: int) -> dict:
    """The writers of _append_run against a minimal group commit: one lock, one buffer, one
    writer thread doing pwrite + fdatasync, futures resolved on the loop."""
    loop = asyncio.get_running_loop()
    file_size = 64 << 20
    fd = _zeroed_file(directory, file_size)
    record = b"c" * record_bytes
    lock = threading.Condition()
    pending: list[asyncio.Future[None]] = []
    buffer = bytearray()
    state = {"idle": False, "stop": False, "syncs": 0}

    def resolve(futures: list[asyncio.Future[None]]) -> None:
        for future in futures:
            future.set_result(None)

    def write_loop() -> None:
        nonlocal pending, buffer
        offset = 0
        while True:
            with lock:
                while not pending and not state["stop"]:
                    state["idle"] = True
                    lock.wait()
                if state["stop"] and not pending:
                    return
                futures, data = pending, buffer
                pending, buffer = [], bytearray()
            if offset + len(data) > file_size:
                offset = 0
            os.pwrite(fd, data, offset)
            os.fdatasync(fd)
            offset += len(data)
            state["syncs"] += 1
            loop.call_soon_threadsafe(resolve, futures)

    def append() -> asyncio.Future[None]:
        future = loop.create_future()
        with lock:
            buffer.extend(record)
            pending.append(future)
            if state["idle"]:
                state["idle"] = False
                lock.notify()
        return future

    thread = threading.Thread(target=write_loop, daemon=True, name="ceiling-writer")
    thread.start()
    records, wall, cpu, per_thread = await _timed_writers(append, writers, seconds)
    with lock:
        state["stop"] = True
        lock.notify()
    thread.join()
    os.close(fd)
    return {
        "ceiling_records_per_s": round(records / wall),
        "ceiling_records_per_fsync": round(records / max(1, state["syncs"]), 1),
        "ceiling_cpu_us_per_record": round(cpu / max(1, records) * 1e6, 2),
        **{f"ceiling_{key}": value for key, value in per_thread.items()},
    }


async def _replay_run(directory: Path, count: int, options: JournalOptions) -> dict:
    journal = await Journal.open(directory, options)
    await journal.load()
    write_start = time.perf_counter()
    for record_id in range(1, count + 1):
        journal.append(record_id, 1, RECORD_BODY, sync=False)
        if record_id % 5000 == 0:
            await journal.sync()  # keep the queued batches bounded
    await journal.sync()
    write_seconds = time.perf_counter() - write_start
    files = journal.statistics().data_files
    await journal.close()
    journal = await Journal.open(directory, options)
    cpu_start = time.process_time()
    start = time.perf_counter()
    result = await journal.load()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    await journal.close()
    assert len(result.records) == count, (len(result.records), count)
    return {
        "benchmark": "journal-replay",
        "records": count,
        "files": files,
        "load_seconds": round(seconds, 3),
        "records_per_s": round(count / seconds),
        "cpu_us_per_record": round(cpu / count * 1e6, 2),
        "nondurable_append_records_per_s": round(count / write_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", type=Path, default=None,
                        help="where to create the temp dirs (default: the system temp dir)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per append configuration")
    parser.add_argument("--writers", type=int, nargs="*", default=[1, 10, 100])
    parser.add_argument("--buffer-timeout-ns", type=int, default=0,
                        help="journal-buffer-timeout for the append runs (default 0: write at "
                        "once; Artemis's NIO default is 3333333)")
    parser.add_argument("--buffer-size", type=int, nargs="*", default=[490 * 1024, 64 * 1024],
                        help="journal-buffer-size values for the 100-writer run (default: "
                        "Artemis's 490 KiB, and 64 KiB: two group commits in flight)")
    parser.add_argument("--precreate-mb", type=int, default=512,
                        help="journal files made before the 100-writer runs are timed "
                        "(journal-min-files x journal-file-size; default 512 MiB)")
    parser.add_argument("--replay-records", type=int, default=300_000)
    arguments = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pybroker-journal-bench-", dir=arguments.directory))
    defaults = JournalOptions()
    precreated = max(defaults.min_files, math.ceil((arguments.precreate_mb << 20)
                                                   / defaults.file_size))
    try:
        # (writers, journal-buffer-size, files made before the timing: 0 = the default min-files)
        runs = [(writers, 490 * 1024, 0) for writers in arguments.writers if writers != 100]
        if 100 in arguments.writers:
            runs += [(100, size, precreated) for size in arguments.buffer_size]
            runs.append((100, 490 * 1024, 0))
        for writers, buffer_size, files_precreated in runs:
            options = JournalOptions(buffer_timeout_ns=arguments.buffer_timeout_ns,
                                     buffer_size=buffer_size,
                                     min_files=files_precreated or defaults.min_files)
            directory = base / f"append-{writers}-{buffer_size}-{files_precreated}"
            result = asyncio.run(_append_run(directory, writers, arguments.seconds, options))
            batch_bytes = max(1, round(result["records_per_fsync"] * result["framed_record_bytes"]))
            raw = raw_sync_rate(base, block_size=batch_bytes, writes=400, tries=3)
            raw_records = raw.writes_per_second * result["records_per_fsync"]
            ceiling: dict = {}
            if writers == 100:
                ceiling = asyncio.run(_ceiling_run(base / f"ceiling-{buffer_size}", writers,
                                                   arguments.seconds, result["framed_record_bytes"]))
                ceiling["ratio_to_ceiling"] = round(
                    result["records_per_s"] / ceiling["ceiling_records_per_s"], 3)
            line = {
                "benchmark": "journal-append",
                "writers": writers,
                "record_bytes": len(RECORD_BODY),
                "buffer_timeout_ns": options.buffer_timeout_ns,
                "buffer_size": options.buffer_size,
                "files_precreated": files_precreated,
                **result,
                "raw_batch_bytes": batch_bytes,
                "raw_fdatasyncs_per_s": round(raw.writes_per_second),
                "raw_records_per_s": round(raw_records),
                "ratio_to_raw": round(result["records_per_s"] / raw_records, 3),
                **ceiling,
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
            }
            print(json.dumps(line), flush=True)
            shutil.rmtree(directory, ignore_errors=True)
        if arguments.replay_records:
            directory = base / "replay"
            line = asyncio.run(_replay_run(directory, arguments.replay_records,
                                           JournalOptions(buffer_timeout_ns=0)))
            print(json.dumps(line), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
