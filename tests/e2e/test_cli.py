"""The CLI as a user runs it: create an instance, run it, send and receive, stop it (issue 2), and
the durability promise across kill -9 (issue 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import free_port, run_cli, wait_for_log, wait_for_port

pytestmark = pytest.mark.slow


def _create(directory: Path, port: int, *extra: str) -> None:
    run_cli(
        "create", str(directory), "--name", directory.name, "--user", "admin", "--password", "admin",
        "--default-port", str(port), "--no-amqp-acceptor", "--no-stomp-acceptor", "--no-mqtt-acceptor",
        "--no-hornetq-acceptor", *extra,
    )


def _start(directory: Path, log: Path) -> subprocess.Popen:
    handle = open(log, "wb")  # noqa: SIM115
    process = subprocess.Popen([str(directory / "bin" / "pybroker"), "run"], stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return process


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


def test_instance_run_produce_consume_and_stop(tmp_path):
    port = free_port()
    instance = tmp_path / "brokers" / "master"
    _create(instance, port, "--allow-anonymous")
    log = tmp_path / "run.log"
    process = _start(instance, log)
    try:
        # AMQ221001 ("started") is the last start line, logged just after AMQ221007
        wait_for_log(str(log), "AMQ221001", process=process)
        for code in ("AMQ221000", "AMQ221007"):
            assert code in log.read_text()
        wait_for_port(port, process=process)
        produced = run_cli("producer", "--verbose", "--user", "admin", "--password", "admin",
                           "--message-count", "100", "--url", f"tcp://localhost:{port}")
        assert "Producer ActiveMQQueue[TEST], thread=0 Sent: test message: 0" in produced.stdout
        assert "Producer ActiveMQQueue[TEST], thread=0 Produced: 100 messages" in produced.stdout
        consumed = run_cli("consumer", "--verbose", "--message-count", "100", "--url", f"tcp://localhost:{port}")
        assert "Received test message: 99" in consumed.stdout
        assert "Consumed: 100 messages" in consumed.stdout
        # with --allow-anonymous both login modules are "sufficient": a wrong password falls
        # through to the guest login, as in Artemis (the require-login test checks refusal)
        # the instance's log folder gets the log too
        assert "AMQ221007" in (instance / "log" / "artemis.log").read_text()
        # pybroker stop creates etc/STOP_ME; the broker takes it and exits 0
        stopped = run_cli("stop", "--instance", str(instance))
        assert "took the stop request" in stopped.stdout
        assert process.wait(20) == 0
        assert not (instance / "etc" / "STOP_ME").exists()
    finally:
        _kill(process)


def test_require_login_refuses_anonymous_clients(tmp_path):
    port = free_port()
    instance = tmp_path / "secure"
    _create(instance, port, "--require-login")
    log = tmp_path / "run.log"
    process = _start(instance, log)
    try:
        wait_for_log(str(log), "AMQ221007", process=process)
        wait_for_port(port, process=process)
        anonymous = run_cli("producer", "--message-count", "1", "--url", f"tcp://localhost:{port}", check=False)
        assert anonymous.returncode != 0
        assert "unauthorized" in anonymous.stderr.lower() or "auth" in anonymous.stderr.lower()
        wrong = run_cli("producer", "--user", "admin", "--password", "wrong", "--message-count", "1",
                        "--url", f"tcp://localhost:{port}", check=False)
        assert wrong.returncode != 0
        ok = run_cli("producer", "--user", "admin", "--password", "admin", "--message-count", "3",
                     "--url", f"tcp://localhost:{port}")
        assert "Produced: 3 messages" in ok.stdout
    finally:
        _kill(process)


def test_bad_broker_xml_exits_2_naming_file_line_and_element(tmp_path):
    config = tmp_path / "broker.xml"
    config.write_text(
        '<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">\n'
        "  <persistence-enabled>false</persistence-enabled>\n"
        "  <journal-min-filez>2</journal-min-filez>\n"
        "</core></configuration>\n"
    )
    result = run_cli("run", "--config", str(config), check=False, timeout=30)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert f"{config}:3" in output
    assert "journal-min-filez" in output and "journal-min-files" in output  # did you mean


def test_embedded_default_runs_with_data_in_the_working_directory(tmp_path):
    # the README's first command: `pybroker run` on the embedded default (localhost:61616);
    # here the default port may be taken, so this runs the same default through --config-less
    # start in a directory and checks the data folder and the log lines
    env = {**os.environ}
    process = subprocess.Popen(
        [sys.executable, "-c",
         "import asyncio\n"
         "from pybroker.config.parse import default_config\n"
         "from pybroker.embedded import Broker\n"
         "async def main():\n"
         "    b = Broker.embedded(port=0, persistence=True, instance_dir='.')\n"
         "    await b.start(); print('PORT', b.port, flush=True); await b.stop()\n"
         "asyncio.run(main())\n"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "PORT" in output
    assert (tmp_path / "data" / "journal").is_dir()
    assert (tmp_path / "data" / "bindings").is_dir()


def test_kill_9_while_sending_durable_messages_loses_nothing_accepted(tmp_path):
    """A subprocess broker is killed while clients send durable messages; every message the
    broker accepted (settled accepted) is delivered exactly once after the restart."""
    from proton import Message
    from proton.handlers import MessagingHandler
    from proton.reactor import Container
    from support import Capability

    port = free_port()
    instance = tmp_path / "durable"
    _create(instance, port, "--allow-anonymous")
    log = tmp_path / "run1.log"
    process = _start(instance, log)
    accepted: list[int] = []
    lock = threading.Lock()
    started = threading.Event()

    class Sender(MessagingHandler):
        def __init__(self) -> None:
            super().__init__()
            self.sent = 0

        def on_start(self, event):
            conn = event.container.connect(f"amqp://127.0.0.1:{port}", reconnect=False)
            event.container.create_sender(conn, "durable.q", options=Capability("queue"))

        def on_sendable(self, event):
            while event.sender.credit and self.sent < 200_000:
                delivery = event.sender.send(Message(body=self.sent, durable=True))
                delivery.number = self.sent  # type: ignore[attr-defined]
                self.sent += 1

        def on_accepted(self, event):
            with lock:
                accepted.append(event.delivery.number)  # type: ignore[attr-defined]
                if len(accepted) >= 500:
                    started.set()

        def on_transport_error(self, event):
            event.container.stop()

        def on_disconnected(self, event):
            event.container.stop()

    try:
        wait_for_log(str(log), "AMQ221007", process=process)
        wait_for_port(port, process=process)
        container = Container(Sender())
        thread = threading.Thread(target=container.run, daemon=True)
        thread.start()
        assert started.wait(60), "the broker accepted nothing"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        thread.join(30)
        with lock:
            confirmed = sorted(accepted)
        assert len(confirmed) >= 500

        log2 = tmp_path / "run2.log"
        process = _start(instance, log2)
        wait_for_log(str(log2), "AMQ221007", process=process)
        wait_for_port(port, process=process)

        class Drain(MessagingHandler):
            def __init__(self) -> None:
                super().__init__(prefetch=500)
                self.bodies: list[int] = []

            def on_start(self, event):
                self.conn = event.container.connect(f"amqp://127.0.0.1:{port}")
                event.container.create_receiver(self.conn, "durable.q", options=Capability("queue"))
                self.timer = event.container.schedule(5, self)

            def on_message(self, event):
                self.bodies.append(event.message.body)
                self.timer.cancel()
                self.timer = event.container.schedule(1.5, self)

            def on_timer_task(self, event):
                self.conn.close()

        drain = Drain()
        Container(drain).run()
        received = drain.bodies
        assert len(received) == len(set(received)), "a message was delivered twice"
        missing = set(confirmed) - set(received)
        assert not missing, f"{len(missing)} accepted messages were lost, e.g. {sorted(missing)[:5]}"
        assert received == sorted(received), "queue order was not kept"
    finally:
        _kill(process)
