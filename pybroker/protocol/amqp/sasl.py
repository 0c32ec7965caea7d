"""A sans-I/O AMQP 1.0 SASL server layer (ANONYMOUS and PLAIN).

python-qpid-proton's Python build has no Cyrus SASL, so its engine can only offer ANONYMOUS and
EXTERNAL as a server. This layer sits in front of the proton transport: it answers the SASL
protocol header, offers mechanisms, checks the credentials through a callback, sends the outcome,
and then hands every later byte (from the AMQP protocol header on) to the engine.

Theory of operation (states, in order)::

    HEADER     waiting for 8 header bytes: "AMQP\\x03\\x01\\x00\\x00" (SASL) or
               "AMQP\\x00\\x01\\x00\\x00" (no SASL: allowed only when anonymous access is)
    INIT       mechanisms sent; waiting for one sasl-init frame
    DONE       outcome sent; everything after is AMQP and passes through
    FAILED     outcome "auth" sent; nothing more is accepted

An illegal input (bad header, frame other than sasl-init, oversized frame) raises
:class:`SaslError`; the caller closes the connection after writing what :meth:`data_to_send`
still holds.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

from proton import Data

from pybroker.errors import ProtocolError

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"

_SASL_MECHANISMS = 0x40
_SASL_INIT = 0x41
_SASL_OUTCOME = 0x44

OUTCOME_OK = 0
OUTCOME_AUTH = 1
OUTCOME_SYS = 2

MAX_SASL_FRAME = 64 * 1024


class SaslError(ProtocolError):
    """The peer broke the SASL exchange."""


class SaslState(enum.Enum):
    HEADER = "header"
    INIT = "init"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class SaslResult:
    mechanism: str  # "ANONYMOUS", "PLAIN" or "NONE" (no SASL layer)
    user: str | None
    password: str | None
    hostname: str | None
    principal: object


# authenticate(mechanism, user, password) -> principal (raises SecurityError to refuse)
Authenticate = Callable[[str, str | None, str | None], object]


def _frame(descriptor: int, fields: Callable[[Data], None]) -> bytes:
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(descriptor)
    data.put_list()
    data.enter()
    fields(data)
    data.exit()
    data.exit()
    body = data.encode()
    # frame header: size, doff=2, type=1 (SASL), channel 0
    return struct.pack(">IBBH", 8 + len(body), 2, 1, 0) + body


def mechanisms_frame(mechanisms: list[str]) -> bytes:
    def fields(data: Data) -> None:
        data.put_array(False, Data.SYMBOL)
        data.enter()
        for mechanism in mechanisms:
            data.put_symbol(mechanism)
        data.exit()

    return _frame(_SASL_MECHANISMS, fields)


def outcome_frame(code: int) -> bytes:
    return _frame(_SASL_OUTCOME, lambda data: data.put_ubyte(code))


class SaslServer:
    """Server side of the SASL exchange; see the module docstring for the states."""

    def __init__(self, authenticate: Authenticate, *, allow_anonymous: bool, allow_no_sasl: bool) -> None:
        self._authenticate = authenticate
        self.allow_anonymous = allow_anonymous
        self.allow_no_sasl = allow_no_sasl
        self.state = SaslState.HEADER
        self._buffer = bytearray()
        self._out = bytearray()
        self.result: SaslResult | None = None
        self.error: Exception | None = None

    @property
    def mechanisms(self) -> list[str]:
        return ["PLAIN", "ANONYMOUS"] if self.allow_anonymous else ["PLAIN"]

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> bytes:
        """Consume SASL bytes; return the bytes that belong to the AMQP layer (once DONE)."""
        if self.state is SaslState.DONE:
            return data
        if self.state is SaslState.FAILED:
            raise SaslError("SASL authentication failed; no further input accepted")
        self._buffer += data
        if self.state is SaslState.HEADER:
            if len(self._buffer) < 8:
                if not SASL_HEADER.startswith(bytes(self._buffer)[:4]):
                    raise SaslError(f"not an AMQP protocol header: {bytes(self._buffer)!r}")
                return b""
            header = bytes(self._buffer[:8])
            if header == AMQP_HEADER:
                if not self.allow_no_sasl:
                    raise SaslError("this acceptor requires SASL authentication (client sent no SASL header)")
                principal = self._authenticate("NONE", None, None)
                self.result = SaslResult("NONE", None, None, None, principal)
                self.state = SaslState.DONE
                rest = bytes(self._buffer)
                self._buffer.clear()
                return rest
            if header != SASL_HEADER:
                raise SaslError(f"unsupported AMQP protocol header {header!r}")
            del self._buffer[:8]
            self._out += SASL_HEADER + mechanisms_frame(self.mechanisms)
            self.state = SaslState.INIT
        if self.state is SaslState.INIT:
            if len(self._buffer) < 8:
                return b""
            size, doff, frame_type, _channel = struct.unpack_from(">IBBH", self._buffer, 0)
            if size > MAX_SASL_FRAME or size < 8 or doff < 2:
                raise SaslError(f"bad SASL frame (size {size}, doff {doff})")
            if frame_type != 1:
                raise SaslError(f"expected a SASL frame, got frame type {frame_type}")
            if len(self._buffer) < size:
                return b""
            body = bytes(self._buffer[doff * 4 : size])
            del self._buffer[:size]
            self._handle_init(body)
            if self.state is SaslState.DONE:
                rest = bytes(self._buffer)
                self._buffer.clear()
                return rest
        return b""

    def _handle_init(self, body: bytes) -> None:
        data = Data()
        try:
            data.decode(body)
            data.rewind()
            data.next()
            if not data.is_described():
                raise SaslError("SASL frame body is not a described performative")
            data.enter()
            data.next()
            descriptor = data.get_object()
            data.next()
            values = data.get_object()
        except SaslError:
            raise
        except Exception as error:  # proton raises its own DataException family
            raise SaslError(f"undecodable SASL frame: {error}") from None
        if int(descriptor) != _SASL_INIT:
            raise SaslError(f"expected sasl-init, got descriptor {descriptor!r}")
        values = list(values or [])
        mechanism = str(values[0]) if values else ""
        response = values[1] if len(values) > 1 else None
        hostname = values[2] if len(values) > 2 else None
        user: str | None = None
        password: str | None = None
        if mechanism == "PLAIN":
            raw = bytes(response or b"")
            parts = raw.split(b"\x00")
            if len(parts) != 3:
                self._fail()
                return
            try:
                user = parts[1].decode("utf-8")
                password = parts[2].decode("utf-8")
            except UnicodeDecodeError:
                self._fail()
                return
        elif mechanism == "ANONYMOUS":
            if not self.allow_anonymous:
                self._fail()
                return
        else:
            self._fail()
            return
        try:
            principal = self._authenticate(mechanism, user, password)
        except Exception as error:  # SecurityError: refused; anything else: also refused
            self.error = error
            self._fail()
            return
        self.result = SaslResult(mechanism, user, password, None if hostname is None else str(hostname), principal)
        self._out += outcome_frame(OUTCOME_OK)
        self.state = SaslState.DONE

    def _fail(self) -> None:
        self._out += outcome_frame(OUTCOME_AUTH)
        self.state = SaslState.FAILED
