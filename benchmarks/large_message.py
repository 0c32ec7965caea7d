"""One very large AMQP message through the broker: bounded broker memory, intact body.

A producer streams a 1 GiB message (a data section, sent in chunks with proton's streaming
API so the client does not hold it either) to a ``pybroker run`` subprocess; a consumer then
streams it back, hashing as it goes. The broker's RSS is sampled throughout. Prints one JSON
line.

    python benchmarks/large_message.py                 # 1 GiB
    python benchmarks/large_message.py --size 256M

Target (issue 5): broker peak RSS above its idle RSS <= 64 MB; body checksum equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import tempfile
import time
from pathlib import Path

import psutil
from benchlib import RssSampler, free_port, queue_capability, run_broker

CONFIG = """<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
  <persistence-enabled>true</persistence-enabled><security-enabled>false</security-enabled>
  <journal-directory>{data}/journal</journal-directory><bindings-directory>{data}/bindings</bindings-directory>
  <paging-directory>{data}/paging</paging-directory><large-messages-directory>{data}/large</large-messages-directory>
  <acceptors><acceptor name="a">tcp://127.0.0.1:{port}?protocols=AMQP</acceptor></acceptors>
</core></configuration>
"""

CHUNK = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)






def chunk_of(index: int) -> bytes:
    return hashlib.sha256(index.to_bytes(8, "big")).digest() * (CHUNK // 32)


def produce(port: int, size: int) -> tuple[float, str]:
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    digest = hashlib.sha256()
    # header (durable) + data section with a vbin32 length, then the body bytes
    head = b"\x00\x53\x70\xc0\x02\x01\x41" + b"\x00\x53\x75\xb0" + struct.pack(">I", size)

    class Stream(MessagingHandler):
        """Streams the message: a timer keeps a few chunks in proton's session buffer."""

        def __init__(self) -> None:
            super().__init__()
            self.sender = None
            self.delivery = None
            self.sent = 0
            self.index = 0
            self.started = 0.0
            self.finished = False
            self.elapsed = 0.0

        def on_start(self, event):
            self.connection = event.container.connect(f"amqp://127.0.0.1:{port}", max_frame_size=1 << 20)
            self.sender = event.container.create_sender(self.connection, "large", options=queue_capability())
            event.container.schedule(0.01, self)

        def on_timer_task(self, event):
            sender = self.sender
            if sender is not None and sender.credit and self.delivery is None:
                self.started = time.perf_counter()
                self.delivery = sender.delivery(b"1")
                sender.stream(head)
            if self.delivery is not None and not self.finished:
                while self.sent < size and sender.session.outgoing_bytes < 4 * CHUNK:
                    chunk = chunk_of(self.index)[: size - self.sent]
                    self.index += 1
                    digest.update(chunk)
                    sender.stream(chunk)
                    self.sent += len(chunk)
                if self.sent >= size:
                    sender.advance()
                    self.finished = True
            if not self.finished:
                event.container.schedule(0.002, self)

        def on_settled(self, event):
            self.elapsed = time.perf_counter() - self.started
            event.connection.close()

    handler = Stream()
    Container(handler).run()
    return handler.elapsed, digest.hexdigest()


def consume(port: int) -> tuple[float, str, int]:
    from proton.handlers import MessagingHandler
    from proton.reactor import Container

    digest = hashlib.sha256()

    class Read(MessagingHandler):
        def __init__(self) -> None:
            super().__init__(prefetch=1, auto_accept=False)
            self.buffer = bytearray()
            self.head_skipped = False
            self.received = 0
            self.started = 0.0

        def on_start(self, event):
            self.connection = event.container.connect(f"amqp://127.0.0.1:{port}", max_frame_size=1 << 20)
            event.container.create_receiver(self.connection, "large", options=queue_capability())

        def on_delivery(self, event):
            delivery = event.delivery
            receiver = event.receiver
            if not self.started:
                self.started = time.perf_counter()
            while delivery.pending:
                data = receiver.recv(min(delivery.pending, CHUNK))
                self._feed(data)
            if not delivery.partial:
                receiver.advance()
                delivery.update(delivery.ACCEPTED)
                delivery.settle()
                self.elapsed = time.perf_counter() - self.started
                event.connection.close()

        def _feed(self, data: bytes) -> None:
            if self.head_skipped:
                digest.update(data)
                self.received += len(data)
                return
            self.buffer += data
            marker = self.buffer.find(b"\x00\x53\x75\xb0")
            if marker >= 0 and len(self.buffer) >= marker + 8:
                rest = bytes(self.buffer[marker + 8:])
                self.buffer.clear()
                self.head_skipped = True
                self._feed(rest)

    handler = Read()
    Container(handler).run()
    return handler.elapsed, digest.hexdigest(), handler.received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=1 << 30)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pybroker-large-") as tmp:
        config = Path(tmp) / "broker.xml"
        config.write_text(CONFIG.format(data=tmp, port=port))
        with run_broker(config, port) as broker:
            time.sleep(0.5)
            idle = psutil.Process(broker.pid).memory_info().rss
            sampler = RssSampler(broker.pid, interval=0.02)
            sampler.start()
            send_seconds, sent_digest = produce(port, args.size)
            files = sorted(Path(tmp, "large").glob("*.msg"))
            file_size = files[0].stat().st_size if files else 0
            receive_seconds, received_digest, received = consume(port)
            peak = sampler.finish()
            print(json.dumps({
                "benchmark": "large_message",
                "size": args.size,
                "file_size_while_queued": file_size,
                "broker_idle_rss_mb": round(idle / 2**20, 1),
                "broker_peak_rss_mb": round(peak / 2**20, 1),
                "broker_rss_above_idle_mb": round((peak - idle) / 2**20, 1),
                "send_mib_per_s": round(args.size / 2**20 / send_seconds, 1),
                "receive_mib_per_s": round(args.size / 2**20 / receive_seconds, 1),
                "checksum_equal": sent_digest == received_digest and received == args.size,
                "target_rss_above_idle_mb": 64,
            }), flush=True)


if __name__ == "__main__":
    main()
