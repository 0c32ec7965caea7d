"""Drive python-qpid-proton's protocol engine sans-I/O: bytes in, events out, bytes out.

The broker's AMQP state machine is proton's ``Transport`` + ``Connection`` + ``Collector``; no
reactor and no Container. :class:`ProtonEngine` owns them and our SASL layer in front
(:mod:`.sasl`), and exposes exactly what the handler needs:

* :meth:`receive_data` pushes bytes (through SASL first), never more than ``capacity()`` at a time
  (``push`` refuses more); :meth:`read_eof` closes the tail;
* :meth:`data_to_send` pulls everything the engine wants written (SASL output first);
* :meth:`tick` runs idle-timeout/heartbeat logic and returns the next deadline (ms, 0 = none);
* ``collector`` is the raw ``pn_collector_t`` the handler drains after each push.

The raw cproton calls are used on purpose: the Python wrapper objects cost several allocations
per call and the broker's per-message budget is a few tens of microseconds.
"""

from __future__ import annotations

from cproton import (
    pn_transport_capacity,
    pn_transport_close_head,
    pn_transport_close_tail,
    pn_transport_pending,
    pn_transport_pop,
    pn_transport_set_channel_max,
    pn_transport_set_idle_timeout,
    pn_transport_set_max_frame,
    pn_transport_tick,
)
from cproton_ffi import ffi, lib
from proton import Collector, Connection, Transport

from pybroker.errors import ProtocolError

from .sasl import SaslServer, SaslState


class ProtonEngine:
    """One AMQP connection's protocol state (server side)."""

    def __init__(
        self,
        sasl: SaslServer | None,
        *,
        idle_timeout_ms: int = 30000,
        max_frame_size: int = 131072,
        channel_max: int = 65535,
    ) -> None:
        self.sasl = sasl
        # the wrapper objects own the C objects' lifetimes; the hot path uses the raw pointers
        self._transport_object = Transport(Transport.SERVER)
        self._connection_object = Connection()
        self._collector_object = Collector()
        self._connection_object.collect(self._collector_object)
        self._transport_object.bind(self._connection_object)
        self.transport = self._transport_object._impl
        self.connection = self._connection_object._impl
        self.collector = self._collector_object._impl
        pn_transport_set_max_frame(self.transport, max_frame_size)
        pn_transport_set_channel_max(self.transport, channel_max)
        if idle_timeout_ms > 0:
            # proton advertises half of this as its idle-time-out and closes the connection
            # when the peer is silent for the whole of it
            pn_transport_set_idle_timeout(self.transport, idle_timeout_ms)
        self._sasl_out = b""
        self._tail_closed = False
        self._freed = False
        # the last pn_transport_pending result of data_to_send (None: unknown or stale)
        self._last_pending: int | None = None

    # -- input -----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket. Raises ProtocolError (SASL) on a broken handshake."""
        self._last_pending = None
        sasl = self.sasl
        if sasl is not None and sasl.state is not SaslState.DONE:
            try:
                data = sasl.receive_data(data)
            finally:
                out = sasl.data_to_send()
                if out:
                    self._sasl_out += out
            if not data:
                return
        transport = self.transport
        view = memoryview(data)
        while view:
            capacity = pn_transport_capacity(transport)
            if capacity < 0:
                # the tail is closed (protocol error or remote close): drop the rest
                return
            if capacity == 0:
                raise ProtocolError("AMQP engine input buffer is full")
            chunk = view[:capacity]
            result = lib.pn_transport_push(transport, ffi.from_buffer(chunk), len(chunk))
            if result < 0:
                return
            view = view[len(chunk) :]

    def read_eof(self) -> None:
        self._last_pending = None
        if not self._tail_closed:
            self._tail_closed = True
            pn_transport_close_tail(self.transport)

    # -- output ----------------------------------------------------------------------------
    def data_to_send(self) -> bytes | bytearray:
        """Everything to write now (empty when nothing). A fresh object per call: the caller
        may keep it (the socket transport buffers what it could not send at once)."""
        self._last_pending = None
        out = b""
        if self._sasl_out:
            out, self._sasl_out = self._sasl_out, b""
        if self.sasl is not None and self.sasl.state is not SaslState.DONE:
            return out
        transport = self.transport
        pending = pn_transport_pending(transport)
        if pending <= 0:
            self._last_pending = pending
            return out
        # peek straight into the buffer that is returned: one copy out of proton
        chunk = bytearray(pending)
        copied = lib.pn_transport_peek(transport, ffi.from_buffer(chunk), pending)
        if copied < 0:
            return out
        if copied < pending:
            del chunk[copied:]
        pn_transport_pop(transport, copied)
        if out:
            chunk[:0] = out
        # popping may let proton generate more output (rare): take that too
        more = pn_transport_pending(transport)
        if more > 0:
            chunk += self.data_to_send()
        else:
            self._last_pending = more
        return chunk

    @property
    def finished(self) -> bool:
        """The engine will produce no more output (both ends closed)."""
        if self.sasl is not None and self.sasl.state is SaslState.FAILED:
            return not self._sasl_out
        # pn_transport_closed is "capacity < 0 and pending < 0": implied by pending < 0
        return pn_transport_pending(self.transport) < 0

    def finished_after_send(self) -> bool:
        """:attr:`finished` right after :meth:`data_to_send`: reuses the pending count that
        call ended with (nothing can have changed the engine in between) instead of asking
        proton again; falls back to :attr:`finished` when there is none."""
        pending = self._last_pending
        if pending is None:
            return self.finished
        self._last_pending = None
        if self.sasl is not None and self.sasl.state is SaslState.FAILED:
            return not self._sasl_out
        return pending < 0

    def close_head(self) -> None:
        self._last_pending = None
        pn_transport_close_head(self.transport)

    def tick(self, now_ms: int) -> int:
        """Run timers (heartbeats, idle timeout); returns the next deadline in ms (0: none)."""
        self._last_pending = None
        if self.sasl is not None and self.sasl.state is not SaslState.DONE:
            return 0
        return int(pn_transport_tick(self.transport, now_ms))

    @property
    def connection_object(self) -> Connection:
        return self._connection_object

    def free(self) -> None:
        """Break the engine's reference cycles once the connection is gone."""
        if self._freed:
            return
        self._freed = True
        self._transport_object.unbind()
        self._collector_object.release()
