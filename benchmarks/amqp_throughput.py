"""AMQP throughput: N messages of S bytes through one queue, P producer and C consumer processes.

Starts ``pybroker run`` as a subprocess on a free port with a temporary configuration, runs the
clients (python-qpid-proton, pipelined with a credit window), and prints one JSON line:
messages/s end to end and the broker process's CPU microseconds per message (from its own CPU
time, so client speed does not inflate it).

The clients (``--clients``):

- ``engine`` (the default): proton's engine over a plain socket, driven through proton's C
  functions. The producer encodes its message once and sends those bytes in every transfer
  (each its own delivery, unsettled, waiting for the broker's accept); the consumer accepts and
  settles every transfer without decoding it. The broker then sets the pace (about three
  quarters of a core busy with one producer and one consumer on a 2-core machine).
- ``container``: proton's Container and MessagingHandler, which build, encode and decode a
  Message for every transfer. These clients set the pace: the broker idles most of the time
  and wakes for a few messages at a time, so its CPU per message includes its per-wake-up
  costs (epoll, recv, send, the loop) spread over few messages.

    python benchmarks/amqp_throughput.py --messages 50000 --size 1024 --producers 1 --consumers 1
    python benchmarks/amqp_throughput.py --durable          # durable messages (journal)
    python benchmarks/amqp_throughput.py --compare-durable  # both, and the durable/non-durable ratio

Target on the reference machine (issue 2): 1 KiB non-durable messages at <= 25 broker CPU-us per
message; durable/non-durable throughput >= 0.8 (issue 3).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import psutil
from benchlib import (
    context_switches,
    free_port,
    queue_capability,
    run_broker,
    run_server,
    wait_all,
    write_broker_xml,
)
from cproton import (
    PN_ACCEPTED,
    PN_DELIVERY,
    PN_RELEASED,
    pn_collector_peek,
    pn_collector_pop,
    pn_delivery_partial,
    pn_delivery_pending,
    pn_delivery_readable,
    pn_delivery_remote_state,
    pn_delivery_settle,
    pn_delivery_update,
    pn_event_delivery,
    pn_event_type,
    pn_link_advance,
    pn_link_credit,
    pn_link_current,
    pn_link_flow,
)
from cproton_ffi import ffi, lib
from proton import Message

RELAY = Path(__file__).with_name("amqp_relay.py")
CREDIT = 1000  # the consumers' credit window, topped up at half

class _Engine:
    """A client connection on proton's engine over a plain socket: the benchmark's lean client.
    It encodes nothing per message and keeps no per-message Python objects beyond proton's own
    delivery, so a client process moves several times more messages than a Container client
    and the broker, not the clients, sets the pace."""

    def __init__(self, port: int, name: str, *, events: bool) -> None:
        import socket

        from proton import Collector, Connection, Transport

        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection = Connection()
        self.transport = Transport()
        self.collector = Collector() if events else None
        if self.collector is not None:
            self.connection.collect(self.collector)
        self.transport.bind(self.connection)
        self.transport.sasl().allowed_mechs("ANONYMOUS")
        self.connection.container = f"{name}-{os.getpid()}"
        self.connection.hostname = "127.0.0.1"
        self.connection.open()
        self.session = self.connection.session()
        self.session.open()

    def terminus(self, link, address: str):
        from proton import symbol

        terminus = link.target if link.is_sender else link.source
        terminus.address = address
        terminus.capabilities.put_object(symbol("queue"))
        link.open()
        return link

    def flush(self) -> None:
        transport = self.transport
        while True:
            pending = transport.pending()
            if pending <= 0:
                return
            self.sock.sendall(transport.peek(pending))
            transport.pop(pending)

    def read(self) -> None:
        """Wait for bytes from the broker and hand them to the engine."""
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionError("the broker closed the connection")
        transport = self.transport
        while data:
            capacity = transport.capacity()
            if capacity < 0:
                raise ConnectionError(f"transport closed: {transport.condition}")
            transport.push(data[:capacity])
            data = data[capacity:]

    def wait_open(self, link) -> None:
        from proton import Endpoint

        while not link.state & Endpoint.REMOTE_ACTIVE:
            self.flush()
            self.read()
            self.drain()
        if link.remote_source is None and link.remote_target is None:
            raise ConnectionError("the broker refused the link")

    def drain(self) -> None:
        collector = self.collector
        if collector is not None:
            while collector.peek() is not None:
                collector.pop()

    def close(self) -> None:
        self.connection.close()
        try:
            self.flush()
        finally:
            self.sock.close()


def engine_producer(port: int, address: str, count: int, size: int, durable: bool, ready, go) -> None:
    client = _Engine(port, "bench-producer", events=True)
    sender = client.terminus(client.session.sender("bench-producer"), address)
    client.wait_open(sender)
    client.drain()
    ready.set()
    go.wait()
    payload = bytes(Message(body=b"x" * size, durable=durable).encode())
    length = len(payload)
    tag_chars = ffi.new("char[8]")
    tag = ffi.new("pn_bytes_t *", (8, tag_chars))[0]
    tag_buffer = ffi.buffer(tag_chars)
    pack_tag = struct.Struct(">Q").pack_into
    link = sender._impl
    collector = client.collector._impl
    sent = settled = 0
    while settled < count:
        credit = pn_link_credit(link)
        while sent < count and credit > 0:
            pack_tag(tag_buffer, 0, sent)
            lib.pn_delivery(link, tag)
            lib.pn_link_send(link, payload, length)
            pn_link_advance(link)
            sent += 1
            credit -= 1
        client.flush()
        client.read()
        while True:
            event = pn_collector_peek(collector)
            if not event:
                break
            if pn_event_type(event) == PN_DELIVERY:
                delivery = pn_event_delivery(event)
                state = pn_delivery_remote_state(delivery)
                if state:  # the broker's outcome (it settles as it tells); settled here too
                    if state != PN_ACCEPTED:
                        raise RuntimeError(f"the broker refused a message (outcome {state:#x})")
                    pn_delivery_settle(delivery)
                    settled += 1
            pn_collector_pop(collector)
    client.close()


def engine_consumer(port: int, address: str, count: int, ready, done) -> None:
    client = _Engine(port, "bench-consumer", events=False)
    receiver = client.terminus(client.session.receiver("bench-consumer"), address)
    receiver.flow(CREDIT)
    client.wait_open(receiver)
    ready.set()
    link = receiver._impl
    buffer = ffi.new("char[]", 1 << 16)
    received = 0
    while received < count:
        client.read()
        delivery = pn_link_current(link)
        while delivery and pn_delivery_readable(delivery) and not pn_delivery_partial(delivery):
            pending = pn_delivery_pending(delivery)
            if pending > len(buffer):
                buffer = ffi.new("char[]", pending)
            lib.pn_link_recv(link, buffer, pending)
            pn_link_advance(link)
            if received < count:
                pn_delivery_update(delivery, PN_ACCEPTED)
                received += 1
            else:  # beyond this consumer's share: give it back for the others
                pn_delivery_update(delivery, PN_RELEASED)
            pn_delivery_settle(delivery)
            delivery = pn_link_current(link)
        credit = pn_link_credit(link)
        if credit < CREDIT // 2:
            pn_link_flow(link, CREDIT - credit)
        client.flush()
    done.set()
    client.close()


def producer(port: int, address: str, count: int, size: int, durable: bool, ready, go) -> None:
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    body = b"x" * size

    class Send(MessagingHandler):
        def __init__(self) -> None:
            super().__init__()
            self.sent = 0
            self.confirmed = 0

        def on_start(self, event):
            conn = event.container.connect(f"amqp://127.0.0.1:{port}")
            self.sender = event.container.create_sender(conn, address, options=queue_capability())

        def on_link_opened(self, event):
            ready.set()
            go.wait()

        def on_sendable(self, event):
            while event.sender.credit and self.sent < count:
                event.sender.send(Message(body=body, durable=durable))
                self.sent += 1

        def on_settled(self, event):
            self.confirmed += 1
            if self.confirmed == count:
                event.connection.close()

    Container(Send()).run()


def consumer(port: int, address: str, count: int, ready, done) -> None:
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    class Receive(MessagingHandler):
        def __init__(self) -> None:
            super().__init__(prefetch=1000, auto_accept=False)
            self.received = 0

        def on_start(self, event):
            conn = event.container.connect(f"amqp://127.0.0.1:{port}")
            event.container.create_receiver(conn, address, options=queue_capability())

        def on_link_opened(self, event):
            ready.set()

        def on_message(self, event):
            if self.received >= count:
                # prefetched beyond this consumer's share: give it back for the others
                self.release(event.delivery, delivered=False)
                return
            self.accept(event.delivery)
            self.received += 1
            if self.received == count:
                done.set()
                event.connection.close()

    Container(Receive()).run()


CLIENTS = {"engine": (engine_producer, engine_consumer), "container": (producer, consumer)}


def run_once(messages: int, size: int, producers: int, consumers: int, durable: bool,
             buffer_timeout: int | None = None, *, relay: bool = False, clients: str = "engine") -> dict:
    """One run against pybroker, or with ``relay`` against amqp_relay.py (the floor)."""
    port = free_port()
    journal = ("" if buffer_timeout is None
               else f"\n  <journal-buffer-timeout>{buffer_timeout}</journal-buffer-timeout>")
    with tempfile.TemporaryDirectory(prefix="pybroker-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        config = Path(tmp) / "broker.xml"
        write_broker_xml(config, port=port, data=tmp, persistent=durable, query="protocols=AMQP",
                         extra=journal)
        server = (run_server([sys.executable, str(RELAY), "--port", str(port)], port) if relay
                  else run_broker(config, port))
        with server as broker:
            process = psutil.Process(broker.pid)
            context = multiprocessing.get_context("spawn")
            produce, consume = CLIENTS[clients]
            per_producer = messages // producers
            total = per_producer * producers
            per_consumer = total // consumers
            extra = total - per_consumer * consumers
            go = context.Event()
            consumers_done = []
            readies = []
            workers = []
            for index in range(consumers):
                ready, done = context.Event(), context.Event()
                readies.append(ready)
                consumers_done.append(done)
                count = per_consumer + (extra if index == 0 else 0)
                workers.append(context.Process(target=consume, args=(port, "bench", count, ready, done)))
            for _ in range(producers):
                ready = context.Event()
                readies.append(ready)
                workers.append(context.Process(target=produce, args=(port, "bench", per_producer, size, durable, ready, go)))
            for worker in workers:
                worker.start()
            wait_all(readies, workers, 60, "a client did not attach")
            cpu_before = process.cpu_times()
            switches_before = context_switches(process.pid)
            start = time.perf_counter()
            go.set()
            wait_all(consumers_done, workers, 600, "consumers did not receive every message")
            elapsed = time.perf_counter() - start
            cpu_after = process.cpu_times()
            switches = context_switches(process.pid) - switches_before
            for worker in workers:
                worker.join(60)
            cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
            return {
                "benchmark": "amqp_relay_floor" if relay else "amqp_throughput",
                "durable": durable,
                "messages": total,
                "size": size,
                "producers": producers,
                "consumers": consumers,
                "clients": clients,
                "seconds": round(elapsed, 3),
                "messages_per_s": round(total / elapsed),
                "broker_cpu_us_per_message": round(cpu / total * 1e6, 2),
                "broker_cpu_share": round(cpu / elapsed, 2),
                "broker_user_us_per_message": round((cpu_after.user - cpu_before.user) / total * 1e6, 2),
                "broker_system_us_per_message": round((cpu_after.system - cpu_before.system) / total * 1e6, 2),
                "broker_context_switches_per_message": round(switches / total, 2),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--producers", type=int, default=1)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--compare-durable", action="store_true", help="run non-durable then durable, print the ratio")
    parser.add_argument("--floor", action="store_true",
                        help="also run the same clients against amqp_relay.py (proton's engine and "
                        "asyncio with no broker), interleaved, and print the broker's CPU per "
                        "message as a ratio to the relay's")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--clients", choices=sorted(CLIENTS), default="engine",
                        help="engine: lean clients on proton's engine over a socket, which encode "
                        "one message once and decode none, so the broker sets the pace; "
                        "container: proton's Container and MessagingHandler, encoding and "
                        "decoding every message (the clients then set the pace)")
    parser.add_argument("--journal-buffer-timeout", type=int, default=None, metavar="NS",
                        help="write <journal-buffer-timeout> into the broker's configuration")
    args = parser.parse_args()
    if args.compare_durable:
        for _ in range(args.repeat):
            plain = run_once(args.messages, args.size, args.producers, args.consumers, False,
                             clients=args.clients)
            durable = run_once(args.messages, args.size, args.producers, args.consumers, True,
                               args.journal_buffer_timeout, clients=args.clients)
            print(json.dumps(plain))
            print(json.dumps(durable))
            print(json.dumps({
                "benchmark": "amqp_durable_ratio",
                "durable_over_non_durable": round(durable["messages_per_s"] / plain["messages_per_s"], 3),
                "target": 0.8,
            }))
        return
    if args.floor:
        ratios = []
        for _ in range(args.repeat):
            broker = run_once(args.messages, args.size, args.producers, args.consumers, args.durable,
                              args.journal_buffer_timeout, clients=args.clients)
            floor = run_once(args.messages, args.size, args.producers, args.consumers, args.durable,
                             relay=True, clients=args.clients)
            # process CPU time advances in clock ticks (10 ms): a short run can read 0
            ratio = (broker["broker_cpu_us_per_message"] / floor["broker_cpu_us_per_message"]
                     if floor["broker_cpu_us_per_message"] > 0 else None)
            if ratio is not None:
                ratios.append(ratio)
            print(json.dumps(broker))
            print(json.dumps(floor))
            print(json.dumps({
                "benchmark": "amqp_broker_over_floor",
                "broker_cpu_us_per_message": broker["broker_cpu_us_per_message"],
                "floor_cpu_us_per_message": floor["broker_cpu_us_per_message"],
                "broker_over_floor": None if ratio is None else round(ratio, 3),
                "median_so_far": round(statistics.median(ratios), 3) if ratios else None,
            }), flush=True)
        return
    for _ in range(args.repeat):
        print(json.dumps(run_once(args.messages, args.size, args.producers, args.consumers, args.durable,
                                  args.journal_buffer_timeout, clients=args.clients)), flush=True)


if __name__ == "__main__":
    main()
