"""Helpers shared by the test suite (on sys.path through pytest's ``pythonpath``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from proton import Message, symbol
from proton.handlers import MessagingHandler, TransactionHandler
from proton.reactor import LinkOption
from proton.utils import BlockingConnection

#: the suite's bound on one wait for storage or broker work
TIMEOUT = 10.0


async def bounded(awaitable: Any, timeout: float = TIMEOUT) -> Any:
    """Await with the suite's timeout."""
    return await asyncio.wait_for(awaitable, timeout)


class FilePlace:
    """A directory on one file factory (the OS, or the crashable in-memory one)."""

    def __init__(self, kind: str, files: Any, directory: Path) -> None:
        self.kind = kind
        self.files = files
        self.directory = directory

    @property
    def memory(self) -> bool:
        return self.kind == "memory"

    def crash(self, *, keep: int = 0, torn_bytes: int | None = None) -> None:
        """The machine dies: the in-memory files keep ``keep`` unsynced operations."""
        from pybroker.journal import MemoryFileFactory

        assert isinstance(self.files, MemoryFileFactory)
        self.files = self.files.crash(keep=keep, torn_bytes=torn_bytes)


class GatedFiles:
    """A FileFactory whose file writes wait for ``gate``; records the writing threads and counts
    the writes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.threads: set[int] = set()
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def open(self, path: Path, *, create: bool = False) -> Any:
        return _GatedFile(self, self.inner.open(path, create=create))


class _GatedFile:
    def __init__(self, owner: GatedFiles, inner: Any) -> None:
        self._owner = owner
        self._inner = inner
        self.path = inner.path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def pwrite(self, data: Any, offset: int) -> None:
        self._owner.threads.add(threading.get_ident())
        self._owner.entered.set()
        assert self._owner.gate.wait(TIMEOUT), "the test never opened the gate"
        self._inner.pwrite(data, offset)
        self._owner.writes += 1


async def wait_thread_event(event: threading.Event) -> None:
    """Await a ``threading.Event`` set by another thread (bounded by TIMEOUT)."""
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, TIMEOUT)


async def until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Await a condition the broker reaches through its own callbacks (polled, bounded):
    TimeoutError when it is not reached within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval)


async def started(server: Any) -> Any:
    """A :class:`~pybroker.broker.server.BrokerServer` through its start sequence (storage
    open, state loaded, active), as the embedded broker starts it."""
    await server.open_storage()
    await server.load_state()
    await server.activate()
    return server


class Capability(LinkOption):
    """Put a capability (``queue``/``topic``) on the link's terminus, as qpid-jms does."""

    def __init__(self, capability: str) -> None:
        self.capability = capability

    def apply(self, link: Any) -> None:
        terminus = link.target if link.is_sender else link.source
        terminus.capabilities.put_object(symbol(self.capability))


class TransactionOutcomes(TransactionHandler):
    """Records how the handler's AMQP transaction ended (``outcome``), then closes
    ``self.connection``."""

    outcome: str | None = None

    def _ended(self, outcome: str) -> None:
        self.outcome = outcome
        self.connection.close()

    def on_transaction_committed(self, event: Any) -> None:
        self._ended("committed")

    def on_transaction_aborted(self, event: Any) -> None:
        self._ended("aborted")

    def on_transaction_declare_failed(self, event: Any) -> None:
        self._ended("declare-failed")

    def on_transaction_commit_failed(self, event: Any) -> None:
        self._ended("commit-failed")


class TransactedSender(MessagingHandler, TransactionOutcomes):
    """Sends ``bodies`` (durable) to queue ``address`` in one transaction, then commits or
    aborts."""

    def __init__(self, port: int, bodies: list[Any], *, commit: bool, address: str = "txq") -> None:
        super().__init__()
        self.port, self.bodies, self.commit, self.address = port, bodies, commit, address

    def on_start(self, event: Any) -> None:
        self.connection = event.container.connect(f"amqp://127.0.0.1:{self.port}")
        self.sender = event.container.create_sender(self.connection, self.address, options=Capability("queue"))
        event.container.declare_transaction(self.connection, handler=self)

    def on_transaction_declared(self, event: Any) -> None:
        for body in self.bodies:
            event.transaction.send(self.sender, Message(body=body, durable=True))
        if self.commit:
            event.transaction.commit()
        else:
            event.transaction.abort()


def connect(port: int, *, user: str | None = None, password: str | None = None, timeout: float = 10,
            container: str | None = None) -> BlockingConnection:
    kwargs: dict[str, Any] = {"timeout": timeout}
    if user is not None:
        kwargs.update(user=user, password=password or "", allowed_mechs="PLAIN")
    if container is not None:
        kwargs["container"] = container  # ignored by older proton
    return BlockingConnection(f"amqp://127.0.0.1:{port}", **kwargs)


def send(port: int, address: str, bodies: list[Any], *, capability: str | None = "queue",
         durable: bool = False, properties: dict[str, Any] | None = None, **connect_kwargs: Any) -> None:
    send_messages(port, address, [Message(body=body, durable=durable, properties=properties) for body in bodies],
                  capability=capability, **connect_kwargs)


def send_messages(port: int, address: str, messages: list[Message], *, capability: str | None = "queue",
                  **connect_kwargs: Any) -> None:
    """Send each message in turn on one connection (each waits for its outcome)."""
    connection = connect(port, **connect_kwargs)
    try:
        sender = connection.create_sender(address, options=Capability(capability) if capability else None)
        for message in messages:
            sender.send(message)
    finally:
        connection.close()


def receive(port: int, address: str, count: int, *, capability: str | None = "queue", timeout: float = 10,
            credit: int = 100, **connect_kwargs: Any) -> list[Any]:
    connection = connect(port, **connect_kwargs)
    try:
        receiver = connection.create_receiver(
            address, credit=credit, options=Capability(capability) if capability else None
        )
        bodies = []
        for _ in range(count):
            message = receiver.receive(timeout=timeout)
            body = message.body
            # proton hands binary bodies out as views into its buffer: copy them now
            bodies.append(bytes(body) if isinstance(body, memoryview) else body)
            receiver.accept()
        return bodies
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"broker process exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class BrokerProcess:
    """A broker run as ``python -m pybroker ...`` in a subprocess, stopped by PID."""

    def __init__(self, args: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
                 log_path: str | None = None) -> None:
        self.args = args
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> BrokerProcess:
        if self.log_path:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait/kill
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pybroker", *self.args],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log or subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 20) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        finally:
            if self._log is not None and self.process.poll() is not None:
                self._log.close()

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                return self.wait(timeout)
        return self.process.returncode

    def output(self) -> str:
        if self.log_path:
            with open(self.log_path, "rb") as handle:
                return handle.read().decode(errors="replace")
        assert self.process is not None
        if self.process.stdout is not None and self.process.poll() is not None:
            return self.process.stdout.read().decode(errors="replace")
        return ""


@contextlib.contextmanager
def broker_process(args: list[str], **kwargs: Any) -> Iterator[BrokerProcess]:
    process = BrokerProcess(args, **kwargs).start()
    try:
        yield process
    finally:
        process.stop()


def wait_for_log(path: str, pattern: str, *, timeout: float = 20.0, start: int = 0,
                 process: subprocess.Popen | None = None) -> int:
    """Wait until ``pattern`` appears in the file at ``path`` after byte ``start``; returns the
    offset just past the line that matched (to wait for a later occurrence next)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as handle:
                handle.seek(start)
                data = handle.read().decode(errors="replace")
        except FileNotFoundError:
            data = ""
        index = data.find(pattern)
        if index >= 0:
            end = data.find("\n", index)
            return start + len(data[: end if end >= 0 else len(data)].encode())
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}) before logging {pattern!r}:\n{data[-3000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"{pattern!r} not logged in {path} within {timeout} s:\n{data[-3000:]}")


def run_cli(*args: str, cwd: str | None = None, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m pybroker <args>`` and return the completed process (stdout+stderr text)."""
    result = subprocess.run(
        [sys.executable, "-m", "pybroker", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"pybroker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result
