"""Choose the protocol of a connection from its first bytes (a multi-protocol acceptor).

Artemis's default acceptor serves every protocol on one port and tells them apart by what the
client sends first; so do we. Sans-I/O: :func:`detect` looks at the bytes received so far and
returns a protocol name, ``None`` (need more bytes), or raises :class:`UnknownProtocolError`.

* AMQP: ``AMQP`` followed by a protocol id (0 plain, 2 TLS, 3 SASL) and version ``1.0.0``.
* MQTT: a CONNECT packet (first byte 0x10), a remaining length, then the protocol name
  ``MQTT`` (3.1.1 and 5) or ``MQIsdp`` (3.1).
* STOMP: a ``CONNECT`` or ``STOMP`` frame, possibly after heart-beat newlines.
* Artemis CORE, HORNETQ and OPENWIRE clients are recognised so the refusal names them.
"""

from __future__ import annotations

from pybroker.errors import ProtocolError

AMQP = "AMQP"
MQTT = "MQTT"
STOMP = "STOMP"
ALL_PROTOCOLS = frozenset({AMQP, MQTT, STOMP})
# protocols Artemis knows that pybroker does not implement
UNSUPPORTED = frozenset({"CORE", "HORNETQ", "OPENWIRE"})

_STOMP_COMMANDS = (b"CONNECT", b"STOMP")
_OPENWIRE_MAGIC = b"ActiveMQ"


class UnknownProtocolError(ProtocolError):
    """The first bytes match no protocol this acceptor serves."""


def detect(data: bytes, allowed: frozenset[str] | None = None) -> str | None:
    """Return the protocol of a connection whose first bytes are ``data``."""
    if not data:
        return None
    first = data[0]
    if first == ord("A"):
        if len(data) < 4:
            return _need_more(data, b"AMQP")
        if data[:4] == b"AMQP":
            return _allowed(AMQP, allowed)
    if first == 0x10:
        protocol = _detect_mqtt(data)
        if protocol is not None:
            return _allowed(protocol, allowed)
        return None
    stripped = data.lstrip(b"\r\n")
    if not stripped:
        if len(data) > 64:
            raise UnknownProtocolError("only newlines received")
        return None
    if stripped[:1] in (b"C", b"S"):
        for command in _STOMP_COMMANDS:
            if stripped.startswith(command):
                if len(stripped) == len(command):
                    return None
                if stripped[len(command) : len(command) + 1] in (b"\n", b"\r"):
                    return _allowed(STOMP, allowed)
            elif command.startswith(stripped):
                return None
    if data.startswith(b"HORNETQ") or (data[:1] == b"\x00" and _OPENWIRE_MAGIC in data[:32]):
        raise UnknownProtocolError("the Artemis CORE/HORNETQ/OPENWIRE protocols are not supported by pybroker")
    if len(data) >= 4 and data[:4] == b"AMQP":
        return _allowed(AMQP, allowed)
    raise UnknownProtocolError(f"unrecognised protocol, first bytes {data[:16]!r}")


def _need_more(data: bytes, prefix: bytes) -> None:
    if not prefix.startswith(data[: len(prefix)]):
        raise UnknownProtocolError(f"unrecognised protocol, first bytes {data[:16]!r}")
    return None


def _detect_mqtt(data: bytes) -> str | None:
    # fixed header: 0x10, remaining length (1-4 bytes), then a 2-byte name length and the name
    offset = 1
    for _ in range(4):
        if offset >= len(data):
            return None
        byte = data[offset]
        offset += 1
        if not byte & 0x80:
            break
    else:
        raise UnknownProtocolError("MQTT CONNECT with a malformed remaining length")
    if len(data) < offset + 2:
        return None
    name_length = int.from_bytes(data[offset : offset + 2], "big")
    name = data[offset + 2 : offset + 2 + name_length]
    if len(name) < name_length:
        if not (b"MQTT".startswith(name) or b"MQIsdp".startswith(name)):
            raise UnknownProtocolError(f"unrecognised protocol, first bytes {data[:16]!r}")
        return None
    if name in (b"MQTT", b"MQIsdp"):
        return MQTT
    raise UnknownProtocolError(f"first packet looks like MQTT CONNECT but protocol name is {name!r}")


def _allowed(protocol: str, allowed: frozenset[str] | None) -> str:
    if allowed is not None and protocol not in allowed:
        raise UnknownProtocolError(
            f"{protocol} is not enabled on this acceptor (protocols={','.join(sorted(allowed))})"
        )
    return protocol
