"""Drivers that run one node-manager scenario on the file store or on the in-memory store.

File-lock managers run in their own processes (``ha_node_agent.py``) because locks belong to
processes and a real kill -9 is the point; in-memory managers run in the test's event loop.
Both drivers offer the same calls, so a scenario is written once (see
``test_node_manager_scenarios.py``). Every wait has a timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pybroker.ha.file_lock import SERVER_LOCK_NAME, OFDLock, read_epoch_file, write_epoch_file
from pybroker.ha.node_manager import InMemoryNodeManager, InMemorySharedStore, LockName
from pybroker.ha.status import read_status

AGENT = Path(__file__).with_name("ha_node_agent.py")
CHECK_PERIOD_MS = 50
POLL_MS = 20
DEFAULT_TIMEOUT = 10.0


class NodeError(Exception):
    """A node-manager call failed; ``error_type`` is the exception's class name."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class Pending:
    """A call in progress (a lock wait, say)."""

    def __init__(self, node: Node, ident: int, future: asyncio.Future[dict[str, Any]]) -> None:
        self.node = node
        self.ident = ident
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    async def reply(self, within: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        return await asyncio.wait_for(asyncio.shield(self.future), within)

    async def result(self, within: float = DEFAULT_TIMEOUT) -> Any:
        reply = await self.reply(within)
        if not reply["ok"]:
            raise NodeError(reply["error"], reply["message"])
        return reply["result"]

    async def still_pending_after(self, seconds: float) -> bool:
        """True if the call has not finished within ``seconds`` (a bounded negative check)."""
        await asyncio.wait({self.future}, timeout=seconds)
        return not self.future.done()

    async def cancel(self) -> None:
        await self.node.cancel(self)


class Node:
    """What a test can do with one broker's node manager."""

    name: str
    pid: int | None
    killed_at_ns: int | None = None

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._next_id = 0

    def submit(self, op: str, **args: Any) -> Pending:
        raise NotImplementedError

    async def call(self, op: str, within: float = DEFAULT_TIMEOUT, **args: Any) -> Any:
        return await self.submit(op, **args).result(within)

    async def cancel(self, pending: Pending) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _record(self, event: dict[str, Any]) -> None:
        async with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self._events if event["event"] == kind]

    async def wait_event(
        self,
        kind: str,
        match: Callable[[dict[str, Any]], bool] | None = None,
        within: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        async with asyncio.timeout(within), self._changed:
            while True:
                for event in self._events:
                    if event["event"] == kind and (match is None or match(event)):
                        return event
                await self._changed.wait()


def _encode(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


class ProcessNode(Node):
    """A FileLockNodeManager in a child process."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.name = name
        self.process = process
        self.pid = process.pid
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(
        cls,
        name: str,
        directory: Path,
        *,
        lock_class: str = "ofd",
        check_period_ms: int = CHECK_PERIOD_MS,
        poll_ms: int = POLL_MS,
        lock_timeout_ms: int = -1,
    ) -> ProcessNode:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(AGENT),
            "--dir",
            str(directory),
            "--lock-class",
            lock_class,
            "--check-period-ms",
            str(check_period_ms),
            "--poll-ms",
            str(poll_ms),
            "--lock-timeout-ms",
            str(lock_timeout_ms),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        node = cls(name, process)
        try:
            await node.wait_event("ready", within=DEFAULT_TIMEOUT)
        except BaseException:
            node.kill()
            await node.close()
            raise
        return node

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if "id" in message:
                future = self._replies.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                await self._record(message)
        exited = {"ok": False, "error": "ProcessExited", "message": f"{self.name} exited"}
        for future in self._replies.values():
            if not future.done():
                future.set_result(exited)
        self._replies.clear()
        await self._record({"event": "exited"})

    def _send(self, op: str, args: dict[str, Any]) -> Pending:
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._next_id] = future
        assert self.process.stdin is not None
        line = json.dumps({"id": self._next_id, "op": op, "args": args}) + "\n"
        self.process.stdin.write(line.encode())
        return Pending(self, self._next_id, future)

    def submit(self, op: str, **args: Any) -> Pending:
        return self._send(op, args)

    async def cancel(self, pending: Pending) -> None:
        await self._send("cancel", {"target": pending.ident}).result()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.killed_at_ns = time.monotonic_ns()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                self._send("exit", {})
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.kill()
                await self.process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)


class MemoryNode(Node):
    """An InMemoryNodeManager in the test's event loop."""

    def __init__(self, name: str, store: InMemorySharedStore, **options: Any) -> None:
        super().__init__()
        self.name = name
        self.pid = None
        self.store = store
        self.manager = InMemoryNodeManager(
            store,
            name=name,
            lock_check_period_ms=options.get("check_period_ms", CHECK_PERIOD_MS),
            state_poll_interval_ms=options.get("poll_ms", POLL_MS),
        )
        self.manager.on_lost_lock(self._lost_lock)
        self._tasks: dict[int, asyncio.Task[dict[str, Any]]] = {}

    def _lost_lock(self, reason: str) -> None:
        asyncio.get_running_loop().create_task(
            self._record({"event": "lost_lock", "reason": reason, "t": time.monotonic_ns()})
        )

    async def _run(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            if op == "drop_primary_lock":
                self.store.steal_lock(LockName.PRIMARY)
                result: Any = None
            elif op in ("node_id", "phase", "epoch"):
                result = getattr(self.manager, op)
            else:
                result = getattr(self.manager, op)(**args)
                if asyncio.iscoroutine(result):
                    result = await result
            return {"ok": True, "result": _encode(result), "t": time.monotonic_ns()}
        except asyncio.CancelledError:
            return {"ok": False, "error": "CancelledError", "message": "cancelled"}
        except Exception as error:
            return {"ok": False, "error": type(error).__name__, "message": str(error)}

    def submit(self, op: str, **args: Any) -> Pending:
        self._next_id += 1
        task = asyncio.get_running_loop().create_task(self._run(op, args))
        self._tasks[self._next_id] = task
        return Pending(self, self._next_id, task)

    async def cancel(self, pending: Pending) -> None:
        self._tasks[pending.ident].cancel()

    def kill(self) -> None:
        self.killed_at_ns = time.monotonic_ns()
        self.manager.simulate_process_death()

    async def close(self) -> None:
        await self.manager.stop()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


class FileStore:
    """The shared directory, inspected and damaged the way an operator or a peer would."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server_lock = directory / SERVER_LOCK_NAME

    def state(self) -> str | None:
        return read_status(self.directory).state

    def node_id(self) -> str | None:
        return read_status(self.directory).node_id

    def epoch(self) -> int:
        return read_epoch_file(self.directory)

    def set_epoch(self, epoch: int) -> None:
        write_epoch_file(self.directory, epoch)

    def mtime(self) -> int:
        return os.stat(self.server_lock).st_mtime_ns

    def is_locked(self, name: LockName) -> bool:
        return bool(read_status(self.directory).lock(name.value).held)

    def delete_server_lock(self) -> None:
        os.unlink(self.server_lock)

    def touch_server_lock(self) -> None:
        # A whole second ahead, so the coarse file-system clock cannot make it look older.
        future = time.time_ns() + 1_000_000_000
        os.utime(self.server_lock, ns=(future, future))

    def write_state(self, state: str) -> None:
        """Write the state byte under the state lock, as another broker would."""
        with OFDLock(self.server_lock) as lock:
            lock.acquire(5.0)
            os.pwrite(lock.fileno(), state.encode("ascii"), 0)
            os.fsync(lock.fileno())


class MemoryStore:
    """The same operations on an InMemorySharedStore."""

    def __init__(self, store: InMemorySharedStore) -> None:
        self.memory = store

    def state(self) -> str | None:
        return self.memory.state()

    def node_id(self) -> str | None:
        return self.memory.node_id()

    def epoch(self) -> int:
        return self.memory.epoch

    def set_epoch(self, epoch: int) -> None:
        self.memory.set_epoch(epoch)

    def mtime(self) -> int:
        mtime = self.memory.server_lock_mtime()
        assert mtime is not None
        return mtime

    def is_locked(self, name: LockName) -> bool:
        return self.memory.is_locked(name)

    def delete_server_lock(self) -> None:
        self.memory.delete_server_lock()

    def touch_server_lock(self) -> None:
        self.memory.touch_server_lock()

    def write_state(self, state: str) -> None:
        self.memory.write_state(state)


class _Collect(logging.Handler):
    def __init__(self, harness: Harness) -> None:
        super().__init__(logging.DEBUG)
        self.harness = harness

    def emit(self, record: logging.LogRecord) -> None:
        self.harness.memory_logs.append(
            {"event": "log", "level": record.levelname, "message": record.getMessage()}
        )


class Harness:
    """Nodes of one kind ("memory", "ofd" or "posix") on one shared store."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.nodes: list[Node] = []
        self.memory_logs: list[dict[str, Any]] = []
        self._logger = logging.getLogger("pybroker.ha")
        self._saved_level = self._logger.level
        self._handler: _Collect | None = None
        if kind == "memory":
            self.memory_store = InMemorySharedStore()
            self.store: FileStore | MemoryStore = MemoryStore(self.memory_store)
            self._handler = _Collect(self)
            self._logger.addHandler(self._handler)
            self._logger.setLevel(logging.DEBUG)
        else:
            self.directory = tmp_path / "shared"
            self.store = FileStore(self.directory)

    @property
    def is_file(self) -> bool:
        return self.kind != "memory"

    async def node(self, name: str, *, start: bool = True, **options: Any) -> Node:
        node: Node
        if self.kind == "memory":
            node = MemoryNode(name, self.memory_store, **options)
        else:
            node = await ProcessNode.spawn(name, self.directory, lock_class=self.kind, **options)
        self.nodes.append(node)
        if start:
            await node.call("start")
        return node

    async def active_primary(self, name: str = "primary", **options: Any) -> Node:
        node = await self.node(name, **options)
        await node.call("start_primary")
        await node.call("activation_successful")
        return node

    async def waiting_backup(self, name: str = "backup", **options: Any) -> tuple[Node, Pending]:
        node = await self.node(name, **options)
        await node.call("start_backup")
        return node, node.submit("await_primary")

    def logs(self) -> list[dict[str, Any]]:
        if self.kind == "memory":
            return list(self.memory_logs)
        return [event for node in self.nodes for event in node.events("log")]

    async def close(self) -> None:
        try:
            await asyncio.gather(*(node.close() for node in self.nodes), return_exceptions=True)
        finally:
            for node in self.nodes:  # never leave a child behind
                node.kill()
            if self._handler is not None:
                self._logger.removeHandler(self._handler)
                self._logger.setLevel(self._saved_level)
