"""The seed lab end to end, with subprocesses and only the CLI (issue 4).

Two (or three) instances made by ``pybroker create``, the lab's broker.xml edits applied verbatim
(shared directories ../sharedstore/data/..., connectors, cluster user/password, static cluster,
ha-policy master/slave), started with their own ``bin/pybroker run``. Brokers are stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import free_port, run_cli, wait_for_log, wait_for_port

from pybroker.testing.lab import apply_lab_edits

pytestmark = pytest.mark.slow

NO_EXTRA_ACCEPTORS = ["--no-amqp-acceptor", "--no-stomp-acceptor", "--no-mqtt-acceptor", "--no-hornetq-acceptor"]


class Node:
    """One instance and its broker process."""

    def __init__(self, root: Path, name: str, port: int) -> None:
        self.root = root
        self.name = name
        self.port = port
        self.directory = root / "brokers" / name
        self.process: subprocess.Popen | None = None
        self.log = root / f"{name}-{{n}}.log"
        self.runs = 0
        self.log_path = ""

    def create(self) -> None:
        run_cli(
            "create", str(self.directory), "--name", self.name, "--user", "admin", "--password", "admin",
            "--allow-anonymous", "--default-port", str(self.port), *NO_EXTRA_ACCEPTORS,
        )

    @property
    def broker_xml(self) -> Path:
        return self.directory / "etc" / "broker.xml"

    def start(self) -> None:
        self.runs += 1
        self.log_path = str(self.root / f"{self.name}-{self.runs}.log")
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [str(self.directory / "bin" / "pybroker"), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def wait_log(self, pattern: str, timeout: float = 20.0) -> None:
        wait_for_log(self.log_path, pattern, timeout=timeout, process=self.process)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)

    def logged(self, pattern: str) -> bool:
        return pattern in Path(self.log_path).read_text(errors="replace")


@pytest.fixture
def lab(tmp_path):
    ports = (free_port(), free_port())
    master = Node(tmp_path, "master", ports[0])
    slave = Node(tmp_path, "slave", ports[1])
    master.create()
    slave.create()
    apply_lab_edits(master.broker_xml, "master", ports=ports)
    apply_lab_edits(slave.broker_xml, "slave", ports=ports)
    nodes = [master, slave]
    yield master, slave, nodes
    for node in nodes:
        node.stop()


def produce(port: int, count: int) -> None:
    result = run_cli("producer", "--message-count", str(count), "--url", f"tcp://localhost:{port}")
    assert f"Produced: {count} messages" in result.stdout, result.stdout + result.stderr


def consume(port: int, count: int) -> str:
    result = run_cli(
        "consumer", "--message-count", str(count), "--url", f"tcp://localhost:{port}", "--break-on-null",
        "--receive-timeout", "5000",
    )
    return result.stdout


def store_status(node: Node) -> dict:
    journal = node.root / "brokers" / "sharedstore" / "data" / "journal"
    return json.loads(run_cli("status", "--dir", str(journal), "--json").stdout)


def test_the_lab_failover_on_sigint_and_failback(lab):
    master, slave, _ = lab
    master.start()
    master.wait_log("AMQ221007")
    wait_for_port(master.port, process=master.process)
    slave.start()
    slave.wait_log("AMQ221109")
    produce(master.port, 100)

    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0
    slave.wait_log("AMQ221010")
    wait_for_port(slave.port, process=slave.process)
    output = consume(slave.port, 100)
    assert "Consumed: 100 messages" in output

    # the master comes back: the slave fails back and becomes a backup again
    master.start()
    slave.wait_log("AMQ221008")
    master.wait_log("AMQ221007")
    wait_for_port(master.port, process=master.process)
    produce(master.port, 10)
    assert "Consumed: 10 messages" in consume(master.port, 10)
    slave.wait_log("AMQ221109: pybroker Backup Server", timeout=20)
    assert store_status(master)["state"] == "L"


def test_the_lab_failover_on_sigkill(lab):
    master, slave, _ = lab
    master.start()
    master.wait_log("AMQ221007")
    slave.start()
    slave.wait_log("AMQ221109")
    produce(master.port, 100)
    master.signal(signal.SIGKILL)
    master.wait_exit()
    slave.wait_log("AMQ221010")
    wait_for_port(slave.port, process=slave.process)
    assert "Consumed: 100 messages" in consume(slave.port, 100)


def test_sigterm_without_failover_on_shutdown_keeps_the_backup_passive(lab):
    master, slave, _ = lab
    text = master.broker_xml.read_text().replace(
        "<failover-on-shutdown>true</failover-on-shutdown>", "<failover-on-shutdown>false</failover-on-shutdown>"
    )
    master.broker_xml.write_text(text)
    master.start()
    master.wait_log("AMQ221007")
    slave.start()
    slave.wait_log("AMQ221109")
    produce(master.port, 5)
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0
    status = store_status(master)
    assert status["state"] == "P"
    # the backup sees 'P' and keeps waiting: give it several of its state polls
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert not slave.logged("AMQ221010"), "the backup activated after a clean stop without failover"
        assert slave.process.poll() is None
        time.sleep(0.1)
    # the master restarts with every message
    master.start()
    master.wait_log("AMQ221007")
    wait_for_port(master.port, process=master.process)
    assert "Consumed: 5 messages" in consume(master.port, 5)


def test_the_backup_started_first_waits_for_a_primary(lab):
    master, slave, _ = lab
    slave.start()
    slave.wait_log("AMQ221109")
    assert store_status(slave)["state"] in ("0", "N")
    master.start()
    master.wait_log("AMQ221007")
    produce(master.port, 3)
    master.signal(signal.SIGKILL)
    master.wait_exit()
    slave.wait_log("AMQ221010")
    wait_for_port(slave.port, process=slave.process)
    assert "Consumed: 3 messages" in consume(slave.port, 3)


def test_two_backups_take_over_one_after_the_other(lab, tmp_path):
    master, slave, nodes = lab
    third = Node(tmp_path, "slave2", free_port())
    third.create()
    apply_lab_edits(third.broker_xml, "slave", ports=(master.port, third.port))
    nodes.append(third)
    master.start()
    master.wait_log("AMQ221007")
    slave.start()
    slave.wait_log("AMQ221109")
    third.start()
    third.wait_log("AMQ221032")  # waiting for the backup lock the first slave holds
    assert not third.logged("AMQ221033")
    produce(master.port, 4)
    master.signal(signal.SIGKILL)
    master.wait_exit()
    slave.wait_log("AMQ221010")
    third.wait_log("AMQ221109")  # the second backup is now the one in line
    assert "Consumed: 2 messages" in consume(slave.port, 2)
    slave.signal(signal.SIGKILL)
    slave.wait_exit()
    third.wait_log("AMQ221010")
    wait_for_port(third.port, process=third.process)
    assert "Consumed: 2 messages" in consume(third.port, 2)
