"""Paging: a backlog far larger than memory, sent with no consumer, then drained.

``pybroker run`` (a subprocess, persistence on) gets N durable 1 KiB messages on one queue whose
address has ``max-size-bytes`` 10 MiB and ``address-full-policy`` PAGE, with no consumer; then
one consumer drains it. The broker process's RSS is sampled throughout. For comparison, the
same run also drains a smaller backlog held entirely in memory (an address without a limit).
Prints one JSON line.

    python benchmarks/paging.py                    # 1,000,000 messages (several minutes)
    python benchmarks/paging.py --messages 200000  # quicker

Targets (issue 5): peak broker RSS <= 150 MB; drain throughput with paging >= 50% of the
drain throughput without paging measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import psutil
from benchlib import RssSampler, free_port, queue_capability, run_broker, send_durable

CONFIG = """<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
  <persistence-enabled>true</persistence-enabled><security-enabled>false</security-enabled>
  <journal-directory>{data}/journal</journal-directory><bindings-directory>{data}/bindings</bindings-directory>
  <paging-directory>{data}/paging</paging-directory><large-messages-directory>{data}/large</large-messages-directory>
  <acceptors><acceptor name="a">tcp://127.0.0.1:{port}?protocols=AMQP</acceptor></acceptors>
  <address-settings>
    <address-setting match="paged"><max-size-bytes>10M</max-size-bytes><address-full-policy>PAGE</address-full-policy></address-setting>
    <address-setting match="memory"><max-size-bytes>-1</max-size-bytes></address-setting>
  </address-settings>
  <addresses>
    <address name="paged"><anycast><queue name="paged"/></anycast></address>
    <address name="memory"><anycast><queue name="memory"/></anycast></address>
  </addresses>
</core></configuration>
"""








def drain(port: int, address: str, count: int) -> float:
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    class Drain(MessagingHandler):
        def __init__(self) -> None:
            super().__init__(prefetch=1000)
            self.received = 0

        def on_start(self, event):
            self.connection = event.container.connect(f"amqp://127.0.0.1:{port}")
            event.container.create_receiver(self.connection, address, options=queue_capability())

        def on_message(self, event):
            self.received += 1
            if self.received == count:
                self.connection.close()

    started = time.perf_counter()
    Container(Drain()).run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--baseline-messages", type=int, default=100_000,
                        help="backlog drained from memory for the comparison")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pybroker-paging-") as tmp:
        config = Path(tmp) / "broker.xml"
        config.write_text(CONFIG.format(data=tmp, port=port))
        with run_broker(config, port) as broker:
            process = psutil.Process(broker.pid)
            idle_rss = process.memory_info().rss
            sampler = RssSampler(broker.pid)
            sampler.start()
            baseline = min(args.baseline_messages, args.messages)
            # the paged backlog first: its peak is measured before anything is held in memory
            paged_in = send_durable(port, "paged", args.messages, args.size)
            page_files = sum(1 for _ in Path(tmp, "paging").glob("*/*.page"))
            rss_after_fill = process.memory_info().rss
            paged_out = drain(port, "paged", args.messages)
            peak = sampler.finish()
            memory_in = send_durable(port, "memory", baseline, args.size)
            memory_out = drain(port, "memory", baseline)
            drain_without = baseline / memory_out
            drain_with = args.messages / paged_out
            print(json.dumps({
                "benchmark": "paging",
                "messages": args.messages,
                "size": args.size,
                "max_size_bytes": 10 * 1024 * 1024,
                "broker_idle_rss_mb": round(idle_rss / 2**20, 1),
                "broker_peak_rss_mb": round(peak / 2**20, 1),
                "broker_rss_after_fill_mb": round(rss_after_fill / 2**20, 1),
                "page_files_after_fill": page_files,
                "send_paged_msgs_per_s": round(args.messages / paged_in),
                "drain_paged_msgs_per_s": round(drain_with),
                "send_memory_msgs_per_s": round(baseline / memory_in),
                "drain_memory_msgs_per_s": round(drain_without),
                "drain_ratio": round(drain_with / drain_without, 3),
                "target_peak_rss_mb": 150,
                "target_drain_ratio": 0.5,
            }), flush=True)


if __name__ == "__main__":
    main()
