"""AMQP throughput: N messages of S bytes through one queue, P producer and C consumer processes.

Starts ``pybroker run`` as a subprocess on a free port with a temporary configuration, runs the
clients (python-qpid-proton, pipelined with a credit window), and prints one JSON line:
messages/s end to end and the broker process's CPU microseconds per message (from its own CPU
time, so client speed does not inflate it).

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
import sys
import tempfile
import time
from pathlib import Path

import psutil
from benchlib import context_switches, free_port, queue_capability, run_broker, run_server

RELAY = Path(__file__).with_name("amqp_relay.py")

CONFIG = """<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
  <persistence-enabled>{persistent}</persistence-enabled>
  <security-enabled>false</security-enabled>
  <journal-directory>{data}/journal</journal-directory>
  <bindings-directory>{data}/bindings</bindings-directory>
  <paging-directory>{data}/paging</paging-directory>
  <large-messages-directory>{data}/large</large-messages-directory>{journal}
  <acceptors><acceptor name="artemis">tcp://127.0.0.1:{port}?protocols=AMQP</acceptor></acceptors>
</core></configuration>
"""


def producer(port: int, address: str, count: int, size: int, durable: bool, ready, go) -> None:
    from proton import Message
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


def run_once(messages: int, size: int, producers: int, consumers: int, durable: bool,
             buffer_timeout: int | None = None, *, relay: bool = False) -> dict:
    """One run against pybroker, or with ``relay`` against amqp_relay.py (the floor)."""
    port = free_port()
    journal = ("" if buffer_timeout is None
               else f"\n  <journal-buffer-timeout>{buffer_timeout}</journal-buffer-timeout>")
    with tempfile.TemporaryDirectory(prefix="pybroker-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        config = Path(tmp) / "broker.xml"
        config.write_text(CONFIG.format(persistent="true" if durable else "false", data=tmp, port=port,
                                     journal=journal))
        server = (run_server([sys.executable, str(RELAY), "--port", str(port)], port) if relay
                  else run_broker(config, port))
        with server as broker:
            process = psutil.Process(broker.pid)
            context = multiprocessing.get_context("spawn")
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
                workers.append(context.Process(target=consumer, args=(port, "bench", count, ready, done)))
            for _ in range(producers):
                ready = context.Event()
                readies.append(ready)
                workers.append(context.Process(target=producer, args=(port, "bench", per_producer, size, durable, ready, go)))
            for worker in workers:
                worker.start()
            for ready in readies:
                if not ready.wait(60):
                    raise TimeoutError("a client did not attach")
            cpu_before = process.cpu_times()
            switches_before = context_switches(process.pid)
            start = time.perf_counter()
            go.set()
            for done in consumers_done:
                if not done.wait(600):
                    raise TimeoutError("consumers did not receive every message")
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
    parser.add_argument("--journal-buffer-timeout", type=int, default=None, metavar="NS",
                        help="write <journal-buffer-timeout> into the broker's configuration")
    args = parser.parse_args()
    if args.compare_durable:
        for _ in range(args.repeat):
            plain = run_once(args.messages, args.size, args.producers, args.consumers, False)
            durable = run_once(args.messages, args.size, args.producers, args.consumers, True,
                               args.journal_buffer_timeout)
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
                              args.journal_buffer_timeout)
            floor = run_once(args.messages, args.size, args.producers, args.consumers, args.durable,
                             relay=True)
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
                                        args.journal_buffer_timeout)), flush=True)


if __name__ == "__main__":
    main()
