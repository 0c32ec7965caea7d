"""Helpers shared by the benchmarks (run them from the repository root: ``python benchmarks/x.py``)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30, process: subprocess.Popen | None = None) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (and ``process``, if given, has not
    exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before "
                               f"listening on 127.0.0.1:{port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def queue_capability() -> Any:
    """A proton link option marking the terminus as a queue (anycast), as qpid-jms does."""
    from proton import symbol
    from proton.reactor import LinkOption

    class Capability(LinkOption):
        def apply(self, link: Any) -> None:
            terminus = link.target if link.is_sender else link.source
            terminus.capabilities.put_object(symbol("queue"))

    return Capability()


BROKER_XML = """<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
  <persistence-enabled>{persistent}</persistence-enabled>
  <security-enabled>false</security-enabled>
  <journal-directory>{data}/journal</journal-directory>
  <bindings-directory>{data}/bindings</bindings-directory>
  <paging-directory>{data}/paging</paging-directory>
  <large-messages-directory>{data}/large</large-messages-directory>{extra}
  <acceptors><acceptor name="bench">tcp://127.0.0.1:{port}?{query}</acceptor></acceptors>
</core></configuration>
"""


def write_broker_xml(path: Path, *, port: int, data: Path | str, persistent: bool, query: str,
                     extra: str = "") -> Path:
    """A broker.xml for a benchmark's pybroker: security off, every store under ``data``, one
    acceptor on 127.0.0.1:``port`` with the URL query ``query`` (e.g. ``protocols=AMQP``);
    ``extra`` goes into ``<core>`` as it is."""
    path.write_text(BROKER_XML.format(persistent="true" if persistent else "false", data=data,
                                      port=port, query=query, extra=extra))
    return path


@contextlib.contextmanager
def run_broker(config: Path, port: int) -> Iterator[subprocess.Popen]:
    """``pybroker run --config config`` as a subprocess, until something listens on ``port``;
    stopped (SIGTERM, then SIGKILL after 60 s) on exit."""
    with run_server([sys.executable, "-m", "pybroker", "run", "--config", str(config),
                     "--log-level", "WARNING"], port) as broker:
        yield broker


@contextlib.contextmanager
def run_server(command: list[str], port: int, *, timeout: float = 30, log: Path | None = None,
               cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """``command`` as a subprocess (in ``cwd``), until something listens on ``port`` (at most
    ``timeout`` s); stopped by its PID (SIGTERM, then SIGKILL after 60 s) on exit. Its stderr
    goes to a temporary file (a pipe nobody reads would stall a server that logs much), or its
    stdout and stderr to ``log`` when given; the end of it is quoted when it fails to start."""
    with contextlib.ExitStack() as stack:
        if log is None:
            output = stack.enter_context(tempfile.TemporaryFile())
            server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=output, cwd=cwd)
        else:
            output = stack.enter_context(open(log, "w+b"))
            server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            try:
                wait_port(port, timeout, process=server)
            except (RuntimeError, TimeoutError) as error:
                output.seek(0)
                tail = output.read()[-3000:].decode(errors="replace")
                raise RuntimeError(f"{error}; its output ends with:\n{tail}") from None
            yield server
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)


def wait_all(events: list, workers: list, timeout: float, what: str) -> None:
    """Wait for every ``multiprocessing`` event; fail at once when one of the client processes
    ``workers`` died (its traceback is on stderr) rather than after the whole timeout."""
    deadline = time.monotonic() + timeout
    for event in events:
        while not event.wait(0.2):
            failed = [worker.exitcode for worker in workers if worker.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"{what}: a client process exited with code {failed[0]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} in {timeout} s")


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every live thread of ``pid`` (Linux; 0
    elsewhere). GIL hand-offs between the loop thread and the journal writer show up here."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if "ctxt_switches:" in line:
                        total += int(line.split()[-1])
        except (OSError, ValueError):
            continue
    return total


class RssSampler(threading.Thread):
    """Samples the RSS of process ``pid`` every ``interval`` seconds until :meth:`finish`;
    ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stopped = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._stopped.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.interval)

    def finish(self) -> int:
        """Stop sampling; the peak."""
        self._stopped.set()
        self.join(2)
        return self.peak


def send_durable(port: int, address: str, count: int, size: int) -> float:
    """Send ``count`` durable messages of ``size`` bytes to queue ``address`` (pipelined up to
    the broker's credit); the seconds until the last was accepted."""
    from proton import Message
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    body = b"x" * size

    class Send(MessagingHandler):
        def __init__(self) -> None:
            super().__init__()
            self.sent = self.accepted = 0

        def on_start(self, event):
            self.connection = event.container.connect(f"amqp://127.0.0.1:{port}")
            event.container.create_sender(self.connection, address, options=queue_capability())

        def on_sendable(self, event):
            while event.sender.credit and self.sent < count:
                event.sender.send(Message(body=body, durable=True))
                self.sent += 1

        def on_accepted(self, event):
            self.accepted += 1
            if self.accepted == count:
                self.connection.close()

    started = time.perf_counter()
    Container(Send()).run()
    return time.perf_counter() - started
