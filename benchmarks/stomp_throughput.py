"""STOMP throughput: pybroker against ActiveMQ Classic (a JVM broker), side by side in the same
run, same clients, same counts.

    python benchmarks/stomp_throughput.py                     # 50000 1 KiB messages, both brokers
    python benchmarks/stomp_throughput.py --repeat 3
    python benchmarks/stomp_throughput.py --durable --messages 20000
    python benchmarks/stomp_throughput.py --producers 2 --consumers 3 --size 4096
    python benchmarks/stomp_throughput.py --peers none        # pybroker only (no JVM needed)
    python benchmarks/stomp_throughput.py --warmup 20000      # untimed messages first (JIT)

Each run starts each broker afresh on a free port (pybroker with a temporary broker.xml, STOMP
only, security off, persistence only with ``--durable``; ActiveMQ Classic from a temporary
instance directory with one ``stomp://`` connector, ``persistent`` only with ``--durable``, then
KahaDB) and moves N messages of S bytes through the anycast queue ``bench`` (destination
``/queue/bench`` on both: ActiveMQ Classic's own syntax, and pybroker's acceptor strips the
``anycastPrefix=/queue/`` it is given, as Artemis does) with P producer and C consumer processes.
It prints one JSON line per broker: messages/s (go to the last consumer's last ACK) and the broker
process's CPU microseconds per message (user + system time of the process and its children,
psutil; so client speed does not inflate it), then one line with pybroker's figures as ratios to
ActiveMQ Classic's in the same run.

The clients are lean raw-socket STOMP 1.2 clients (not stomp.py, whose receiver thread per
connection would set the pace). A producer writes one pre-built SEND frame (``content-length``,
``persistent:true`` only with ``--durable``) over and over, pipelined, and asks for a ``receipt``
on every 100th, with at most 4 receipts outstanding: the broker's receipts pace it and at most
400 messages are in flight. A consumer subscribes with ``ack:client-individual``,
``activemq.prefetchSize:1000`` (ActiveMQ Classic's prefetch, in messages) and
``consumer-window-size`` of 1000 messages' worth of frame bytes (pybroker's and Artemis's
window, in bytes), ACKs every MESSAGE by its ``ack`` header, stops at its share (what it got
beyond it it leaves unacknowledged, so the broker redelivers it to the others when it
disconnects), then DISCONNECTs. After the clients a drain subscriber checks that the queue is
empty (a duplicate would be left there). A run fails when a count is short, a client dies or a
broker sends an ERROR.

Besides the figures each line has ``deliveries`` (MESSAGE frames the consumers read: every
message once, plus those read beyond a consumer's share, which come back to another consumer),
``redelivered`` (frames marked ``redelivered:true``: such returns),
``message_frame_bytes`` (bytes the consumers read per MESSAGE: the body plus the broker's
headers) and ``producer_cpu_share`` / ``consumer_cpu_share`` (the busiest client process's CPU
time over the timed seconds: near 1.0 it, not the broker, set the pace).

ActiveMQ Classic is the Debian package ``activemq`` (``/usr/share/activemq``, or
``$ACTIVEMQ_HOME``), run as ``java -jar bin/activemq.jar start xbean:file:...`` by
activemq_classic.py (shared with mqtt_throughput.py); when java or the jar is missing, one JSON
line says it was skipped and why, and pybroker runs alone (the project never needs a JVM). The
JVM starts cold in each run: ``--warmup`` lets the same clients move that many untimed messages
through each broker first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
from activemq_classic import activemq_classic, find_activemq_classic
from benchlib import free_port, run_broker, wait_all, write_broker_xml

DESTINATION = "/queue/bench"
RECEIPT_EVERY = 100  # a producer asks for a receipt on every 100th SEND ...
RECEIPTS_OUTSTANDING = 4  # ... and waits when 4 are outstanding
PREFETCH = 1000  # messages a consumer may hold unacknowledged
FRAME_OVERHEAD = 256  # bytes of a MESSAGE frame beyond its body (pybroker's are ~230)

PEERS = ("activemq-classic",)
# --- the clients (each in its own process) -----------------------------------------------------


class StompError(ConnectionError):
    """The broker sent an ERROR frame (or closed the connection)."""


def parse_frames(buffer: bytearray) -> tuple[list[tuple[bytes, dict[bytes, bytes], bytes]], int]:
    """The complete frames at the start of ``buffer`` as (command, headers, body), and how many
    bytes they took. EOLs between frames (heart-beats, the EOLs after a NUL) are skipped;
    headers are left escaped (an ``ack`` value goes back to the broker as it came); the first
    of repeated headers wins (STOMP 1.2); only an ERROR's body is copied out."""
    frames = []
    find = buffer.find
    pos, size = 0, len(buffer)
    while pos < size:
        byte = buffer[pos]
        if byte == 10:  # LF
            pos += 1
            continue
        if byte == 13:  # CRLF
            if pos + 1 == size:
                break
            pos += 2
            continue
        head_end = find(b"\n\n", pos)
        crlf = find(b"\n\r\n", pos, size if head_end < 0 else head_end)
        if crlf >= 0:
            head_end, body_start = crlf, crlf + 3
        elif head_end >= 0:
            body_start = head_end + 2
        else:
            break
        lines = bytes(buffer[pos:head_end]).split(b"\n")
        command = lines[0].rstrip(b"\r")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.rstrip(b"\r").partition(b":")
            headers.setdefault(name, value)
        length = headers.get(b"content-length")
        if length is not None:
            end = body_start + int(length)
            if end >= size:
                break
            if buffer[end] != 0:
                raise StompError(f"a {command.decode()} frame's body does not end with NUL "
                                 f"after its content-length {int(length)}")
        else:
            end = find(b"\0", body_start)
            if end < 0:
                break
        body = bytes(buffer[body_start:end]) if command == b"ERROR" else b""
        frames.append((command, headers, body))
        pos = end + 1
    return frames, pos


class Connection:
    """A raw-socket STOMP 1.2 client connection: frames go out as prepared bytes, come in parsed
    incrementally from one buffer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.bytes_received = 0
        self.sock.sendall(b"CONNECT\naccept-version:1.2\nhost:127.0.0.1\nheart-beat:0,0\n\n\0")
        command, headers, _ = self.receive()[0]
        if command != b"CONNECTED" or headers.get(b"version") != b"1.2":
            raise StompError(f"expected a STOMP 1.2 CONNECTED frame, got {command!r} {headers!r}")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
        """Read from the socket until at least one frame is complete; the complete frames."""
        buffer = self.buffer
        while True:
            data = self.sock.recv(1 << 18)
            if not data:
                raise StompError("the broker closed the connection")
            self.bytes_received += len(data)
            buffer += data
            frames, used = parse_frames(buffer)
            if used:
                del buffer[:used]
            if frames:
                for command, headers, body in frames:
                    if command == b"ERROR":
                        message = headers.get(b"message", b"").decode(errors="replace")
                        raise StompError(f"the broker sent an ERROR: {message} "
                                         f"{body.decode(errors='replace')}".strip())
                return frames

    def wait_receipt(self, receipt: bytes) -> None:
        while True:
            for command, headers, _ in self.receive():
                if command == b"RECEIPT" and headers.get(b"receipt-id") == receipt:
                    return

    def disconnect(self) -> None:
        """DISCONNECT, waiting for its RECEIPT (frames before it, such as MESSAGEs beyond a
        consumer's share, are dropped unacknowledged: the broker redelivers them)."""
        self.send(b"DISCONNECT\nreceipt:bye\n\n\0")
        with contextlib.suppress(StompError, OSError):
            self.wait_receipt(b"bye")
        self.sock.close()


def producer(port: int, count: int, size: int, durable: bool, ready, go, stats) -> None:
    connection = Connection(port)
    head = b"SEND\ndestination:%s\ncontent-length:%d\n" % (DESTINATION.encode(), size)
    if durable:
        head += b"persistent:true\n"
    body = b"x" * size + b"\0"
    frame = head + b"\n" + body
    batch = frame * (RECEIPT_EVERY - 1)  # then one SEND asking for a receipt
    ready.set()
    go.wait()
    cpu = time.process_time()
    sent = outstanding = receipts = 0
    while sent < count:
        plain = min(RECEIPT_EVERY, count - sent) - 1
        receipts += 1
        connection.send((batch if plain == RECEIPT_EVERY - 1 else frame * plain)
                        + head + b"receipt:%d\n\n" % receipts + body)
        sent += plain + 1
        outstanding += 1
        while outstanding >= RECEIPTS_OUTSTANDING or (sent == count and outstanding):
            for command, _, _ in connection.receive():
                if command == b"RECEIPT":
                    outstanding -= 1
    stats[0] = round((time.process_time() - cpu) * 1e6)
    connection.disconnect()


def consumer(port: int, count: int, size: int, ready, done, stats) -> None:
    connection = Connection(port)
    window = PREFETCH * (size + FRAME_OVERHEAD)
    connection.send(b"SUBSCRIBE\nid:0\ndestination:%s\nack:client-individual\n"
                    b"activemq.prefetchSize:%d\nconsumer-window-size:%d\nreceipt:subscribed\n\n\0"
                    % (DESTINATION.encode(), PREFETCH, window))
    connection.wait_receipt(b"subscribed")
    ready.set()
    cpu = time.process_time()
    received = deliveries = redelivered = 0
    received_before = connection.bytes_received
    while received < count:
        acks = []
        for command, headers, _ in connection.receive():
            if command != b"MESSAGE":
                continue
            deliveries += 1
            if headers.get(b"redelivered") == b"true":
                redelivered += 1
            if received < count:
                acks.append(b"ACK\nid:" + headers[b"ack"] + b"\n\n\0")
                received += 1
        if acks:
            connection.send(b"".join(acks))
    stats[:] = [deliveries, redelivered, connection.bytes_received - received_before,
                round((time.process_time() - cpu) * 1e6)]
    done.set()
    connection.disconnect()


def drain(port: int, wait: float = 0.5) -> int:
    """How many messages are left on the queue (auto-acknowledged, so it ends empty)."""
    connection = Connection(port)
    connection.send(b"SUBSCRIBE\nid:drain\ndestination:%s\nack:auto\nreceipt:drain\n\n\0"
                    % DESTINATION.encode())
    connection.wait_receipt(b"drain")
    left = 0
    connection.sock.settimeout(wait)
    with contextlib.suppress(TimeoutError):
        while True:
            left += sum(command == b"MESSAGE" for command, _, _ in connection.receive())
    connection.sock.settimeout(None)
    connection.disconnect()
    return left


def _cpu(process: psutil.Process) -> tuple[float, float]:
    """User and system CPU seconds of ``process`` and its live descendants."""
    user = system = 0.0
    for each in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = each.cpu_times()
            user += times.user
            system += times.system
    return user, system


def move(port: int, pid: int, messages: int, size: int, producers: int, consumers: int,
         durable: bool) -> dict:
    """The clients move ``messages`` through the broker on ``port`` (process ``pid``); the
    figures of the timed section."""
    process = psutil.Process(pid)
    context = multiprocessing.get_context("spawn")
    per_producer = messages // producers
    total = per_producer * producers
    per_consumer = total // consumers
    extra = total - per_consumer * consumers
    go = context.Event()
    readies, consumers_done, stats, producer_stats, workers = [], [], [], [], []
    for index in range(consumers):
        ready, done, numbers = context.Event(), context.Event(), context.Array("q", 4)
        readies.append(ready)
        consumers_done.append(done)
        stats.append(numbers)
        count = per_consumer + (extra if index == 0 else 0)
        workers.append(context.Process(target=consumer, args=(port, count, size, ready, done, numbers)))
    for _ in range(producers):
        ready, numbers = context.Event(), context.Array("q", 1)
        readies.append(ready)
        producer_stats.append(numbers)
        workers.append(context.Process(target=producer, args=(port, per_producer, size, durable, ready, go,
                                                              numbers)))
    for worker in workers:
        worker.start()
    try:
        wait_all(readies, workers, 60, "a client did not connect and subscribe")
        user_before, system_before = _cpu(process)
        start = time.perf_counter()
        go.set()
        wait_all(consumers_done, workers, 600, "consumers did not receive every message")
        elapsed = time.perf_counter() - start
        user_after, system_after = _cpu(process)
        for worker in workers:
            worker.join(60)
        failed = [worker.exitcode for worker in workers if worker.exitcode != 0]
        if failed:
            raise RuntimeError(f"a client process ended with code {failed[0]}")
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(10)
    left = drain(port)
    if left:
        raise RuntimeError(f"{left} messages were left on the queue after {total} were received "
                           f"(the broker duplicated messages)")
    user, system = user_after - user_before, system_after - system_before
    deliveries = sum(numbers[0] for numbers in stats)
    return {
        "messages": total,
        "size": size,
        "producers": producers,
        "consumers": consumers,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(total / elapsed),
        "broker_cpu_us_per_message": round((user + system) / total * 1e6, 2),
        "broker_cpu_share": round((user + system) / elapsed, 2),
        "broker_user_us_per_message": round(user / total * 1e6, 2),
        "broker_system_us_per_message": round(system / total * 1e6, 2),
        "deliveries": deliveries,
        "redelivered": sum(numbers[1] for numbers in stats),
        "message_frame_bytes": round(sum(numbers[2] for numbers in stats) / max(deliveries, 1)),
        # the busiest client process's CPU time over the seconds: near 1, it set the pace
        "producer_cpu_share": round(max(numbers[0] for numbers in producer_stats) / 1e6 / elapsed, 2),
        "consumer_cpu_share": round(max(numbers[3] for numbers in stats) / 1e6 / elapsed, 2),
    }


# --- the brokers -------------------------------------------------------------------------------


@contextlib.contextmanager
def pybroker(tmp: Path, port: int, durable: bool) -> Iterator[subprocess.Popen]:
    config = tmp / "broker.xml"
    write_broker_xml(config, port=port, data=tmp, persistent=durable,
                     query="protocols=STOMP;anycastPrefix=/queue/;multicastPrefix=/topic/")
    with run_broker(config, port) as broker:
        yield broker


def run_once(broker: str, args: argparse.Namespace, java: str | None) -> dict:
    """One run against a fresh ``broker`` process."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="stomp-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        started = time.perf_counter()
        server = (pybroker(Path(tmp), port, args.durable) if broker == "pybroker"
                  else activemq_classic(Path(tmp), port, java or "java", scheme="stomp",
                                        persistent=args.durable))
        with server as process:
            startup = time.perf_counter() - started
            if args.warmup:
                move(port, process.pid, args.warmup, args.size, args.producers, args.consumers,
                     args.durable)
            result = move(port, process.pid, args.messages, args.size, args.producers,
                          args.consumers, args.durable)
    return {"benchmark": "stomp_throughput", "broker": broker, "durable": args.durable,
            **result, "warmup_messages": args.warmup, "receipt_every": RECEIPT_EVERY,
            "receipts_outstanding": RECEIPTS_OUTSTANDING, "prefetch_messages": PREFETCH,
            "consumer_window_bytes": PREFETCH * (args.size + FRAME_OVERHEAD),
            "startup_s": round(startup, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024, help="body bytes")
    parser.add_argument("--producers", type=int, default=1)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--durable", action="store_true",
                        help="persistent:true messages; pybroker with persistence enabled, "
                        "ActiveMQ Classic persistent (KahaDB)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--peers", default="all",
                        help="comma-separated brokers to run beside pybroker, of "
                        f"{', '.join(PEERS)}; 'all' (the default: those installed) or 'none'")
    parser.add_argument("--warmup", type=int, default=0, metavar="N",
                        help="the clients first move N untimed messages through each broker")
    args = parser.parse_args()
    if min(args.messages, args.size, args.producers, args.consumers, args.repeat) < 1 or args.warmup < 0:
        parser.error("--messages, --size, --producers, --consumers and --repeat must be positive")
    if args.messages < args.producers:
        parser.error("--messages must be at least --producers")
    peers = (list(PEERS) if args.peers == "all" else [] if args.peers == "none"
             else [name.strip() for name in args.peers.split(",") if name.strip()])
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer {unknown[0]!r}: expected {', '.join(PEERS)}, all or none")
    from pybroker.version import VERSION

    versions = {"pybroker": VERSION}
    java = None
    if "activemq-classic" in peers:
        java, versions["activemq-classic"] = find_activemq_classic()
        if java is None:
            print(json.dumps({"benchmark": "stomp_throughput", "broker": "activemq-classic",
                              "skipped": versions["activemq-classic"]}), flush=True)
            peers.remove("activemq-classic")
    for run in range(args.repeat):
        # alternate who goes first, so a drift of the machine's load does not favour one side
        brokers = ["pybroker", *peers] if run % 2 == 0 else [*peers, "pybroker"]
        results = {}
        for broker in brokers:
            results[broker] = {**run_once(broker, args, java), "broker_version": versions[broker],
                               "run": run}
            print(json.dumps(results[broker]), flush=True)
        ours = results["pybroker"]
        for peer in peers:
            theirs = results[peer]
            print(json.dumps({
                "benchmark": "stomp_pybroker_over_peer",
                "peer": peer,
                "durable": args.durable,
                "run": run,
                "messages_per_s_ratio": round(ours["messages_per_s"] / theirs["messages_per_s"], 3),
                # process CPU time advances in clock ticks (10 ms): a short run can read 0
                "broker_cpu_us_per_message_ratio": (
                    round(ours["broker_cpu_us_per_message"] / theirs["broker_cpu_us_per_message"], 3)
                    if theirs["broker_cpu_us_per_message"] > 0 else None),
            }), flush=True)


if __name__ == "__main__":
    main()
