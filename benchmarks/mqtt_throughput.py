"""MQTT throughput: pybroker against the pure-Python amqtt broker, the C mosquitto broker and the
JVM broker ActiveMQ Classic, side by side, same clients.

    python benchmarks/mqtt_throughput.py                   # 20000 messages per run, all four
    python benchmarks/mqtt_throughput.py --brokers pybroker,mosquitto,activemq-classic
    python benchmarks/mqtt_throughput.py --messages 50000 --brokers pybroker
    python benchmarks/mqtt_throughput.py --brokers pybroker --qos 1 --profile /tmp/broker.prof

For each broker and QoS (1 and 0) one paho-mqtt publisher and one paho-mqtt subscriber, each in
its own process, move ``--messages`` 1 KiB payloads through one topic (MQTT 3.1.1, the only
version amqtt speaks; the publisher keeps up to ``--in-flight`` QoS 1 messages unacknowledged).
Each run prints one JSON line: messages/s (first publish to last message received) and the broker
process's CPU-µs per message (user + system time, psutil), plus what the broker was.

pybroker runs as ``python -m pybroker run --config <temp>/etc/broker.xml``: the built-in default
configuration (persistence enabled, as ``pybroker run`` has it) on a free port, data in a temp
directory. amqtt is installed with pip into a temporary virtual environment for the run (it is not
a project dependency); when that is impossible the JSON says why. mosquitto is the installed binary
(``mosquitto`` on the PATH or /usr/sbin/mosquitto, e.g. Debian's package) with a temporary
configuration: 127.0.0.1 only, anonymous, no persistence, logging to stderr, no limit on queued
messages (its default of 1000 would drop QoS 0 messages queued for a subscriber that falls behind)
and ``max_inflight_messages`` equal to ``--in-flight`` (its default of 20 unacknowledged QoS 1
messages towards the subscriber would throttle it). When it is not installed the JSON says so.

ActiveMQ Classic is the Debian package ``activemq`` (``/usr/share/activemq``, or
``$ACTIVEMQ_HOME``) on the machine's java, started by activemq_classic.py (shared with
stomp_throughput.py) from a temporary instance directory with one ``mqtt://127.0.0.1:PORT``
connector (the default, thread-per-connection TCP transport), ``persistent="false"`` (no KahaDB;
QoS 1 messages are kept in memory only, as mosquitto's are), JMX off; its CPU is the java
process's (psutil). Its MQTT connector needs FuseSource's mqtt-client jar, which Debian's
package lacks (every MQTT connection is refused without it): Debian's ``libmqtt-client-java``
has it, and the instance's lib/ links to it. No transport option is set: its defaults are no
handicap here (a clean-session subscription gets a prefetch of 32767 messages, more than a run
sends; the inactivity monitor follows the clients' 120 s keep-alive), and at its defaults it
delivered every message at QoS 0 and 1 (checked up to 60000 messages per run). The JVM starts
cold (~1 s): the QoS 1 run, first, also pays for the JIT's warm-up. When java, the broker's jar
or the mqtt-client jar is missing, the JSON says so, a line per QoS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from activemq_classic import activemq_classic, find_activemq_classic
from benchlib import free_port, run_server

TOPIC = "bench/throughput"
PAYLOAD = b"x" * 1024
ROOT = Path(__file__).resolve().parent.parent


# --- clients (each in its own process) ---------------------------------------------------------


def subscriber(port: int, qos: int, count: int, ready, done, result) -> None:  # type: ignore[no-untyped-def]
    import paho.mqtt.client as mqtt

    received = 0

    def on_connect(client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        client.subscribe(TOPIC, qos=qos)

    def on_subscribe(client, userdata, mid, reason_codes, properties):  # type: ignore[no-untyped-def]
        ready.set()

    def on_message(client, userdata, message):  # type: ignore[no-untyped-def]
        nonlocal received
        received += 1
        if received == count:
            result.value = time.monotonic()
            done.set()
            client.disconnect()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub",
                         protocol=mqtt.MQTTv311, clean_session=True)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=120)
    client.loop_forever()


def publisher(port: int, qos: int, count: int, in_flight: int, ready, started) -> None:  # type: ignore[no-untyped-def]
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub",
                         protocol=mqtt.MQTTv311, clean_session=True)
    client.max_inflight_messages_set(in_flight)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port, keepalive=120)
    client.loop_start()
    ready.wait(60)
    started.value = time.monotonic()
    info = None
    for _ in range(count):
        info = client.publish(TOPIC, PAYLOAD, qos=qos)
    if info is not None:
        info.wait_for_publish(timeout=300)
    client.disconnect()
    client.loop_stop()


def measure(port: int, broker_pid: int, qos: int, count: int, in_flight: int, timeout: float) -> dict:
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    started, finished = context.Value("d", 0.0), context.Value("d", 0.0)
    broker = psutil.Process(broker_pid)
    sub = context.Process(target=subscriber, args=(port, qos, count, ready, done, finished))
    sub.start()
    if not ready.wait(30):
        sub.terminate()
        raise RuntimeError("the subscriber did not subscribe within 30 s")
    before = broker.cpu_times()
    pub = context.Process(target=publisher, args=(port, qos, count, in_flight, ready, started))
    pub.start()
    completed = done.wait(timeout)
    after = broker.cpu_times()
    pub.join(30)
    for process in (pub, sub):
        if process.is_alive():
            process.terminate()
            process.join(5)
    if not completed:
        return {"error": f"the subscriber did not get {count} messages within {timeout} s"}
    elapsed = finished.value - started.value
    cpu = (after.user - before.user) + (after.system - before.system)
    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(count / elapsed, 1),
        "broker_cpu_us_per_message": round(cpu / count * 1e6, 1),
    }


# --- brokers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def pybroker_process(work: Path, profile: str | None = None):  # type: ignore[no-untyped-def]
    port = free_port()
    etc = work / "pybroker" / "etc"
    etc.mkdir(parents=True)
    default = (ROOT / "pybroker" / "config" / "default-broker.xml").read_text()
    (etc / "broker.xml").write_text(default.replace("${pybroker.default.port:61616}", str(port)))
    profiler = ["-m", "cProfile", "-o", str(Path(profile).resolve())] if profile else []
    command = [sys.executable, *profiler, "-m", "pybroker", "run", "--config", str(etc / "broker.xml"),
               "--log-level", "WARNING"]
    with run_server(command, port, timeout=60, log=work / "pybroker.log", cwd=work / "pybroker") as process:
        storage = "journal"
        try:
            import pybroker.storage.journal_storage  # noqa: F401
        except ImportError:
            storage = "memory (journal storage not available in this build)"
        yield port, process.pid, {"persistence_enabled": True, "storage": storage}


AMQTT_CONFIG = """\
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:{port}
    max_connections: 100
sys_interval: 0
auth:
  allow-anonymous: true
  plugins:
    - auth_anonymous
topic-check:
  enabled: false
"""


def install_amqtt(work: Path) -> tuple[Path | None, str]:
    """A temporary venv with amqtt; (its amqtt executable, version) or (None, why not)."""
    venv = work / "amqtt-venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True,
                       timeout=120)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "amqtt"], check=True,
                       capture_output=True, timeout=600)
        version = subprocess.run(
            [str(venv / "bin" / "python"), "-c",
             "import importlib.metadata as m; print(m.version('amqtt'))"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout.strip()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", b"") or b""
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        return None, f"amqtt could not be installed: {error} {detail[-300:]}".strip()
    return venv / "bin" / "amqtt", version


@contextlib.contextmanager
def amqtt_process(work: Path, executable: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    config = work / "amqtt.yaml"
    config.write_text(AMQTT_CONFIG.format(port=port))
    with run_server([str(executable), "-c", str(config)], port, timeout=60, log=work / "amqtt.log",
                    cwd=work) as process:
        yield port, process.pid, {}


MOSQUITTO_CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
sys_interval 0
max_queued_messages 0
max_inflight_messages {in_flight}
"""


def find_mosquitto() -> tuple[str | None, str]:
    """The mosquitto executable and its version, or (None, why not)."""
    executable = shutil.which("mosquitto")
    if executable is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        executable = "/usr/sbin/mosquitto"
    if executable is None:
        return None, "mosquitto is not installed (not on the PATH, no /usr/sbin/mosquitto)"
    try:  # "mosquitto version 2.0.11" heads the help text (which exits with 3)
        output = subprocess.run([executable, "-h"], capture_output=True, text=True, timeout=30).stdout
    except (subprocess.TimeoutExpired, OSError) as error:
        return None, f"mosquitto could not be run: {error}"
    words = output.split("\n", 1)[0].split()
    return executable, words[-1] if words[:2] == ["mosquitto", "version"] else "unknown"


@contextlib.contextmanager
def mosquitto_process(work: Path, executable: str, in_flight: int):  # type: ignore[no-untyped-def]
    port = free_port()
    config = work / "mosquitto.conf"
    config.write_text(MOSQUITTO_CONFIG.format(port=port, in_flight=in_flight))
    with run_server([executable, "-c", str(config)], port) as process:
        yield port, process.pid, {"persistence_enabled": False}


# transport options for ActiveMQ Classic's mqtt:// connector's URI (``transport.x``): none is
# needed (see the module docstring)
ACTIVEMQ_OPTIONS: dict[str, str] = {}


@contextlib.contextmanager
def activemq_classic_process(work: Path, java: str):  # type: ignore[no-untyped-def]
    port = free_port()
    with activemq_classic(work / "activemq-classic", port, java, scheme="mqtt", persistent=False,
                          options=ACTIVEMQ_OPTIONS) as process:
        yield port, process.pid, {"persistence_enabled": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=500,
                        help="publisher's QoS 1 window (and mosquitto's max_inflight_messages)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--brokers", default="pybroker,amqtt,mosquitto,activemq-classic",
                        help="comma-separated, of pybroker, amqtt, mosquitto, activemq-classic")
    parser.add_argument("--qos", default="1,0")
    parser.add_argument("--profile", metavar="PATH", help="run pybroker under cProfile, stats to PATH")
    arguments = parser.parse_args()
    brokers = arguments.brokers.split(",")
    levels = [int(q) for q in arguments.qos.split(",")]
    work = Path(tempfile.mkdtemp(prefix="mqtt-bench-"))
    try:
        for name in brokers:
            if name == "pybroker":
                manager = pybroker_process(work, arguments.profile)
                info: dict = {}
            elif name == "amqtt":
                executable, version = install_amqtt(work)
                if executable is None:
                    for qos in levels:
                        print(json.dumps({"benchmark": "mqtt_throughput", "broker": "amqtt", "qos": qos,
                                          "error": version}), flush=True)
                    continue
                manager = amqtt_process(work, executable)
                info = {"amqtt_version": version}
            elif name == "mosquitto":
                executable, version = find_mosquitto()
                if executable is None:
                    for qos in levels:
                        print(json.dumps({"benchmark": "mqtt_throughput", "broker": "mosquitto",
                                          "qos": qos, "error": version}), flush=True)
                    continue
                manager = mosquitto_process(work, executable, arguments.in_flight)
                info = {"mosquitto_version": version}
            elif name == "activemq-classic":
                java, version = find_activemq_classic("mqtt")
                if java is None:
                    for qos in levels:
                        print(json.dumps({"benchmark": "mqtt_throughput", "broker": name,
                                          "qos": qos, "error": version}), flush=True)
                    continue
                manager = activemq_classic_process(work, java)
                info = {"activemq_classic_version": version}
            else:
                raise SystemExit(f"unknown broker {name!r}")
            with manager as (port, pid, details):
                for qos in levels:
                    result = measure(port, pid, qos, arguments.messages, arguments.in_flight,
                                     arguments.timeout)
                    print(json.dumps({"benchmark": "mqtt_throughput", "broker": name, "qos": qos,
                                      "payload_bytes": len(PAYLOAD), **info, **details, **result}),
                          flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
