"""A FileLockNodeManager in its own process, driven over stdin/stdout (test helper).

Usage: python ha_node_agent.py --dir DIR [--lock-class ofd|posix] [--check-period-ms N]
       [--poll-ms N] [--lock-timeout-ms N]

stdin: one JSON command per line, ``{"id": 1, "op": "start_primary", "args": {...}}``; commands
run concurrently, so a blocked ``await_primary`` does not hold up ``state``.
stdout: JSON lines. ``{"event": "ready", "pid": ...}`` once; a reply per command,
``{"id": 1, "ok": true, "result": ..., "t": <CLOCK_MONOTONIC ns>}`` or
``{"id": 1, "ok": false, "error": "LockTimeoutError", "message": "..."}``;
``{"event": "lost_lock", "reason": ...}``; ``{"event": "log", "level": ..., "message": ...}``
for every pybroker.ha log record.

Extra ops: ``drop_primary_lock`` (release serverlock.1 behind the manager's back, as an NFS
server that forgot the lock), ``cancel`` ``{"target": id}``, ``exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import fcntl
import json
import logging
import os
import sys
import time
from typing import Any

from pybroker.ha.file_lock import (
    FileLockNodeManager,
    OFDLock,
    PosixRecordLock,
    _unlockf,
    _whole_file,
)
from pybroker.ha.node_manager import LockName


def send(message: dict[str, Any]) -> None:
    message.setdefault("t", time.monotonic_ns())
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class EventHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        send({"event": "log", "level": record.levelname, "message": record.getMessage()})


def drop_primary_lock(manager: FileLockNodeManager) -> None:
    lock = manager._file_backend._locks[LockName.PRIMARY]
    if isinstance(lock, OFDLock):
        assert lock._held_fd is not None
        fcntl.fcntl(lock._held_fd, fcntl.F_OFD_SETLK, _whole_file(fcntl.F_UNLCK))
    else:
        assert isinstance(lock, PosixRecordLock) and lock.held
        _unlockf(lock.fileno())


def encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    return value


async def run_command(
    manager: FileLockNodeManager, command: dict[str, Any], tasks: dict[int, asyncio.Task[Any]]
) -> None:
    op, args, ident = command["op"], command.get("args", {}), command["id"]
    try:
        if op == "drop_primary_lock":
            result: Any = drop_primary_lock(manager)
        elif op == "cancel":
            tasks[args["target"]].cancel()
            result = None
        elif op in ("node_id", "phase", "epoch"):
            result = getattr(manager, op)
        else:
            result = getattr(manager, op)(**args)
            if asyncio.iscoroutine(result):
                result = await result
        send({"id": ident, "ok": True, "result": encode(result)})
    except asyncio.CancelledError:
        send({"id": ident, "ok": False, "error": "CancelledError", "message": "cancelled"})
    except Exception as error:
        send({"id": ident, "ok": False, "error": type(error).__name__, "message": str(error)})
    finally:
        tasks.pop(ident, None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--lock-class", choices=("ofd", "posix"), default="ofd")
    parser.add_argument("--check-period-ms", type=int, default=50)
    parser.add_argument("--poll-ms", type=int, default=20)
    parser.add_argument("--lock-timeout-ms", type=int, default=-1)
    options = parser.parse_args()
    logger = logging.getLogger("pybroker.ha")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(EventHandler())
    manager = FileLockNodeManager(
        options.dir,
        lock_acquisition_timeout_ms=options.lock_timeout_ms,
        lock_check_period_ms=options.check_period_ms,
        state_poll_interval_ms=options.poll_ms,
        lock_class=OFDLock if options.lock_class == "ofd" else PosixRecordLock,
    )
    manager.on_lost_lock(lambda reason: send({"event": "lost_lock", "reason": reason}))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    send({"event": "ready", "pid": os.getpid()})
    tasks: dict[int, asyncio.Task[Any]] = {}
    while line := await reader.readline():
        command = json.loads(line)
        if command["op"] == "exit":
            break
        tasks[command["id"]] = asyncio.create_task(run_command(manager, command, tasks))
    await manager.stop()


if __name__ == "__main__":
    asyncio.run(main())
