"""The floor for the AMQP benchmark: a relay with no broker in it.

It moves each transfer's bytes from the producer's link to a consumer's link on
python-qpid-proton's engine and the standard asyncio loop, as pybroker does, and does nothing
else: it decodes no message, keeps no queue object, no message object, no settings, no
security, no storage. A broker built on the same engine and loop cannot use less CPU per
message than this, so ``amqp_throughput.py --floor`` runs it with the same clients in the same
run and prints the broker's CPU per message as a ratio to it: a figure that does not move with
the speed of a shared machine the way the absolute one does.

    python benchmarks/amqp_relay.py --port 5672     # serves until SIGTERM / SIGINT

Semantics kept, so that the clients behave as they do against the broker: SASL ANONYMOUS,
links attach with the terminus the client asked for, the producer gets 1000 credits topped
up at half, a transfer is accepted and settled once relayed (or queued while no consumer has
credit), messages go round-robin to the consumers of the same address, and a consumer's
settlement settles the relayed delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import signal
import struct

from cproton import (
    PN_ACCEPTED,
    PN_CONNECTION_REMOTE_CLOSE,
    PN_CONNECTION_REMOTE_OPEN,
    PN_DELIVERY,
    PN_LINK_FLOW,
    PN_LINK_REMOTE_CLOSE,
    PN_LINK_REMOTE_DETACH,
    PN_LINK_REMOTE_OPEN,
    PN_SESSION_REMOTE_CLOSE,
    PN_SESSION_REMOTE_OPEN,
    pn_collector_peek,
    pn_collector_pop,
    pn_delivery_link,
    pn_delivery_partial,
    pn_delivery_pending,
    pn_delivery_readable,
    pn_delivery_settle,
    pn_delivery_update,
    pn_delivery_updated,
    pn_event_delivery,
    pn_event_link,
    pn_event_type,
    pn_link_advance,
    pn_link_credit,
    pn_link_flow,
    pn_transport_capacity,
    pn_transport_pending,
    pn_transport_pop,
)
from cproton_ffi import ffi, lib
from proton import Collector, Connection, Link, Session, Transport

CREDIT = 1000

# Delivery tags: an 8-byte counter written into one C buffer, passed as a prebuilt pn_bytes_t
# (pn_delivery copies the tag), as pybroker does.
_TAG_CHARS = ffi.new("char[8]")
_TAG = ffi.new("pn_bytes_t *", (8, _TAG_CHARS))[0]
_TAG_BUFFER = ffi.buffer(_TAG_CHARS)
_pack_tag = struct.Struct(">Q").pack_into
_next_tag = itertools.count(1).__next__  # unique on every link


# shared by every connection
CONSUMERS: dict[str, list] = {}  # address -> its consumers' sender link pointers
BACKLOG: dict[str, collections.deque] = {}  # address -> payloads waiting for credit
TURN: dict[str, int] = {}  # address -> round-robin position
RELAYS: dict = {}  # consumer link pointer -> the Relay (connection) that owns it
DIRTY: set = set()  # connections with relayed output to write


class Relay(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.socket = transport
        self.proton = Transport(Transport.SERVER)
        self.proton.sasl().allowed_mechs("ANONYMOUS")
        self.connection = Connection()
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.proton.bind(self.connection)
        self.t = self.proton._impl
        self.c = self.collector._impl
        self.links: dict = {}  # pointer -> (Link wrapper, address, is_receiver)
        self.credit_left: dict = {}
        self.buffer = ffi.new("char[]", 65536)

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            capacity = pn_transport_capacity(self.t)
            if capacity <= 0:
                self.socket.close()
                return
            chunk = view[:capacity]
            lib.pn_transport_push(self.t, ffi.from_buffer(chunk), len(chunk))
            view = view[len(chunk):]
        self.process()
        self.flush()
        while DIRTY:  # the transfers this input relayed to other connections
            DIRTY.pop().flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for pointer, (_, address, is_receiver) in self.links.items():
            if not is_receiver:
                _drop_consumer(pointer, address)
        self.links.clear()
        DIRTY.discard(self)

    def flush(self) -> None:
        pending = pn_transport_pending(self.t)
        if pending > 0:
            out = bytearray(pending)
            copied = lib.pn_transport_peek(self.t, ffi.from_buffer(out), pending)
            pn_transport_pop(self.t, copied)
            self.socket.write(out)

    def process(self) -> None:
        collector = self.c
        links = self.links
        while True:
            event = pn_collector_peek(collector)
            if not event:
                break
            kind = pn_event_type(event)
            if kind == PN_DELIVERY:
                delivery = pn_event_delivery(event)
                pointer = pn_delivery_link(delivery)
                entry = links.get(pointer)
                if entry is not None and entry[2]:
                    if pn_delivery_readable(delivery) and not pn_delivery_partial(delivery):
                        self.transfer(pointer, delivery, entry[1])
                elif pn_delivery_updated(delivery):
                    pn_delivery_settle(delivery)
            elif kind == PN_LINK_FLOW:
                entry = links.get(pn_event_link(event))
                if entry is not None and not entry[2]:
                    self.drain(entry[1])
            else:
                self.endpoint(kind, event)
            pn_collector_pop(collector)

    def transfer(self, pointer, delivery, address: str) -> None:
        size = pn_delivery_pending(delivery)
        if size > len(self.buffer):
            self.buffer = ffi.new("char[]", size)
        received = lib.pn_link_recv(pointer, self.buffer, size)
        payload = ffi.unpack(self.buffer, received)
        pn_link_advance(pointer)
        pn_delivery_update(delivery, PN_ACCEPTED)
        pn_delivery_settle(delivery)
        left = self.credit_left[pointer] = self.credit_left[pointer] - 1
        if left <= CREDIT // 2:
            pn_link_flow(pointer, CREDIT - left)
            self.credit_left[pointer] = CREDIT
        backlog = BACKLOG.get(address)
        if backlog or not self.send(address, payload):
            BACKLOG.setdefault(address, collections.deque()).append(payload)

    def send(self, address: str, payload: bytes) -> bool:
        consumers = CONSUMERS.get(address)
        if not consumers:
            return False
        count = len(consumers)
        start = TURN.get(address, 0)
        for step in range(count):
            sender = consumers[(start + step) % count]
            if pn_link_credit(sender) > 0:
                TURN[address] = start + step + 1
                _pack_tag(_TAG_BUFFER, 0, _next_tag())
                lib.pn_delivery(sender, _TAG)
                lib.pn_link_send(sender, payload, len(payload))
                pn_link_advance(sender)
                owner = RELAYS.get(sender)
                if owner is not None:
                    DIRTY.add(owner)
                return True
        return False

    def drain(self, address: str) -> None:
        backlog = BACKLOG.get(address)
        while backlog and self.send(address, backlog[0]):
            backlog.popleft()

    def endpoint(self, kind: int, event) -> None:
        if kind == PN_CONNECTION_REMOTE_OPEN:
            self.connection.open()
        elif kind == PN_SESSION_REMOTE_OPEN:
            Session.wrap(lib.pn_event_session(event)).open()
        elif kind == PN_LINK_REMOTE_OPEN:
            link = Link.wrap(pn_event_link(event))
            link.source.copy(link.remote_source)
            link.target.copy(link.remote_target)
            is_receiver = link.is_receiver
            address = (link.remote_target if is_receiver else link.remote_source).address or ""
            self.links[link._impl] = (link, address, is_receiver)
            link.open()
            if is_receiver:
                link.flow(CREDIT)
                self.credit_left[link._impl] = CREDIT
            else:
                CONSUMERS.setdefault(address, []).append(link._impl)
                RELAYS[link._impl] = self
        elif kind in (PN_LINK_REMOTE_CLOSE, PN_LINK_REMOTE_DETACH):
            link = Link.wrap(pn_event_link(event))
            entry = self.links.pop(link._impl, None)
            if entry is not None and not entry[2]:
                _drop_consumer(link._impl, entry[1])
            link.close()
        elif kind == PN_SESSION_REMOTE_CLOSE:
            Session.wrap(lib.pn_event_session(event)).close()
        elif kind == PN_CONNECTION_REMOTE_CLOSE:
            self.connection.close()


def _drop_consumer(pointer, address: str) -> None:
    consumers = CONSUMERS.get(address, [])
    if pointer in consumers:
        consumers.remove(pointer)
    RELAYS.pop(pointer, None)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Relay, "127.0.0.1", port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
