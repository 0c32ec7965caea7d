"""HA pairs for users' tests: a primary and a backup on one temporary shared directory.

::

    from pybroker.testing.ha import HAPair

    async with HAPair() as pair:             # both in this process (the file locks still
        port = pair.primary.port             # exclude each other: they are OFD locks)
        ...send durable messages...
        await pair.fail_primary()            # the primary goes away without a state write
        await pair.wait_backup_active()
        port = pair.backup.port              # every durable message is there

``ProcessHAPair`` runs both as ``pybroker run`` subprocesses, for a real ``kill -9``
(``kill_primary()``) or a SIGINT/SIGTERM stop (``stop_primary()``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pybroker.config.parse import parse_config
from pybroker.embedded import Broker

_TEMPLATE = """<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
  <name>{name}</name>
  <persistence-enabled>true</persistence-enabled>
  <security-enabled>false</security-enabled>
  <paging-directory>{shared}/paging</paging-directory>
  <bindings-directory>{shared}/bindings</bindings-directory>
  <journal-directory>{shared}/journal</journal-directory>
  <large-messages-directory>{shared}/large-messages</large-messages-directory>
  <journal-file-size>1M</journal-file-size>
  <acceptors><acceptor name="artemis">tcp://127.0.0.1:{port}</acceptor></acceptors>
  <ha-policy><shared-store>{policy}</shared-store></ha-policy>
</core></configuration>
"""


def pair_config_xml(name: str, shared: Path, port: int, *, backup: bool, failover_on_shutdown: bool = True,
                    allow_failback: bool = True) -> str:
    """broker.xml text for one node of a shared-store pair on ``shared``."""
    if backup:
        policy = (
            f"<backup><allow-failback>{str(allow_failback).lower()}</allow-failback>"
            f"<failover-on-shutdown>{str(failover_on_shutdown).lower()}</failover-on-shutdown></backup>"
        )
    else:
        policy = f"<primary><failover-on-shutdown>{str(failover_on_shutdown).lower()}</failover-on-shutdown></primary>"
    return _TEMPLATE.format(name=name, shared=shared, port=port, policy=policy)


class HAPair:
    """A primary and a backup in this process on one shared directory."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        failover_on_shutdown: bool = True,
        allow_failback: bool = True,
    ) -> None:
        self._own_directory = directory is None
        self.directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="pybroker-ha-"))
        self.shared = self.directory / "shared"
        self.failover_on_shutdown = failover_on_shutdown
        self.allow_failback = allow_failback
        self.primary = self._node("primary", backup=False)
        self.backup = self._node("backup", backup=True)

    def _node(self, name: str, *, backup: bool) -> Broker:
        xml = pair_config_xml(
            name, self.shared, 0, backup=backup,
            failover_on_shutdown=self.failover_on_shutdown, allow_failback=self.allow_failback,
        )
        instance = self.directory / name
        instance.mkdir(parents=True, exist_ok=True)
        return Broker(parse_config(xml, file=f"{name}.xml", instance_dir=instance))

    async def start(self) -> None:
        """Start the primary (active), then the backup (passive)."""
        await self.primary.start()
        await self.backup.start()

    async def fail_primary(self) -> None:
        """The primary goes away as after a crash: no state write, the backup takes over."""
        await self.primary.stop(failover=True)

    async def stop_primary(self, *, failover: bool | None = None) -> None:
        """A graceful stop with ``failover-on-shutdown`` (or the given override)."""
        await self.primary.stop(failover=failover)

    async def restart_primary(self) -> None:
        """Start a new primary on the same store (fails back when the backup allows it)."""
        self.primary = self._node("primary", backup=False)
        await self.primary.start()

    async def wait_backup_active(self, timeout: float = 10.0) -> None:
        await self.backup.wait_active(timeout)

    async def stop(self) -> None:
        for node in (self.backup, self.primary):
            with contextlib.suppress(Exception):
                await node.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def __aenter__(self) -> HAPair:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessHAPair:
    """A primary and a backup as ``pybroker run`` subprocesses (stopped by PID)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, failover_on_shutdown: bool = True,
                 allow_failback: bool = True) -> None:
        self._own_directory = directory is None
        self.directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="pybroker-ha-"))
        self.shared = self.directory / "shared"
        self.primary_port = _free_port()
        self.backup_port = _free_port()
        self.processes: dict[str, subprocess.Popen[Any]] = {}
        self.logs: dict[str, Path] = {}
        for name, port, backup in (("primary", self.primary_port, False), ("backup", self.backup_port, True)):
            etc = self.directory / name / "etc"
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "broker.xml").write_text(
                pair_config_xml(name, self.shared, port, backup=backup,
                                failover_on_shutdown=failover_on_shutdown, allow_failback=allow_failback)
            )

    def start_node(self, name: str) -> None:
        log = self.directory / f"{name}-{len([k for k in self.logs if k.startswith(name)])}.log"
        self.logs[name] = log
        handle = open(log, "wb")  # noqa: SIM115 - handed to the child
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "pybroker", "run", "--config", str(self.directory / name / "etc" / "broker.xml")],
            stdout=handle, stderr=subprocess.STDOUT,
        )
        handle.close()

    def wait_log(self, name: str, pattern: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        log = self.logs[name]
        while time.monotonic() < deadline:
            if log.exists() and pattern in log.read_text(errors="replace"):
                return
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text()[-2000:]}")
            time.sleep(0.02)
        raise TimeoutError(f"{name} did not log {pattern!r} within {timeout} s")

    def start(self) -> None:
        self.start_node("primary")
        self.wait_log("primary", "AMQ221007")
        self.start_node("backup")
        self.wait_log("backup", "AMQ221109")

    def kill_primary(self) -> None:
        process = self.processes["primary"]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_primary(self, signum: int = signal.SIGTERM) -> int:
        process = self.processes["primary"]
        os.kill(process.pid, signum)
        return process.wait(20)

    def wait_backup_active(self, timeout: float = 20.0) -> None:
        self.wait_log("backup", "AMQ221010", timeout)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ProcessHAPair:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


__all__ = ["HAPair", "ProcessHAPair", "pair_config_xml"]
