"""MQTT data representations (3.1.1 §1.5, 5.0 §1.5): integers, variable byte integers, strings.

Decoders take ``(buffer, position, end)`` where ``end`` is the end of the current packet, and
return ``(value, new_position)``. Reading past ``end`` means the packet's own fields claim more
bytes than its Remaining Length holds: a malformed packet (reason 0x81), never NEED_DATA (the codec
only decodes a packet once all of it is buffered). Encoders raise
:class:`~pybroker.protocol.mqtt.base.MQTTLocalProtocolError` for values the wire cannot carry.
"""

from __future__ import annotations

from pybroker.protocol.mqtt.base import MQTTLocalProtocolError, MQTTProtocolError, ReasonCode

#: The largest value a variable byte integer holds (four bytes of seven bits).
MAX_VARIABLE_BYTE_INTEGER = 268_435_455

_MALFORMED = ReasonCode.MALFORMED_PACKET
_ONE_BYTE = tuple(bytes((value,)) for value in range(256))


def encode_variable_byte_integer(value: int) -> bytes:
    """Encode ``value`` (0 to 268,435,455) in the minimum number of bytes (§1.5.5)."""
    if 0 <= value < 128:
        return _ONE_BYTE[value]
    if not 0 <= value <= MAX_VARIABLE_BYTE_INTEGER:
        raise MQTTLocalProtocolError(
            f"{value} does not fit in a variable byte integer (0..{MAX_VARIABLE_BYTE_INTEGER})"
        )
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def variable_byte_integer_size(value: int) -> int:
    """How many bytes ``encode_variable_byte_integer(value)`` takes."""
    if value < 128:
        return 1
    if value < 16_384:
        return 2
    if value < 2_097_152:
        return 3
    return 4


def decode_variable_byte_integer(buffer: bytes, position: int, end: int) -> tuple[int, int]:
    """Decode a variable byte integer; more than four bytes is a malformed packet."""
    value = 0
    shift = 0
    for _ in range(4):
        if position >= end:
            raise MQTTProtocolError(_MALFORMED, "variable byte integer runs past the packet end")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise MQTTProtocolError(_MALFORMED, "variable byte integer longer than 4 bytes")


def decode_two_byte_integer(buffer: bytes, position: int, end: int) -> tuple[int, int]:
    """Decode a big-endian 16-bit unsigned integer."""
    if position + 2 > end:
        raise MQTTProtocolError(_MALFORMED, "two byte integer runs past the packet end")
    return (buffer[position] << 8) | buffer[position + 1], position + 2


def decode_four_byte_integer(buffer: bytes, position: int, end: int) -> tuple[int, int]:
    """Decode a big-endian 32-bit unsigned integer."""
    if position + 4 > end:
        raise MQTTProtocolError(_MALFORMED, "four byte integer runs past the packet end")
    return int.from_bytes(buffer[position : position + 4], "big"), position + 4


def decode_binary(buffer: bytes, position: int, end: int) -> tuple[bytes, int]:
    """Decode binary data: a two byte length then that many bytes."""
    if position + 2 > end:
        raise MQTTProtocolError(_MALFORMED, "binary data length runs past the packet end")
    stop = position + 2 + ((buffer[position] << 8) | buffer[position + 1])
    if stop > end:
        raise MQTTProtocolError(_MALFORMED, "binary data runs past the packet end")
    return buffer[position + 2 : stop], stop


def decode_utf8(buffer: bytes, position: int, end: int) -> tuple[str, int]:
    """Decode a UTF-8 encoded string (§1.5.4).

    Ill-formed UTF-8 (including encoded surrogates U+D800..U+DFFF and overlong forms, which
    Python's strict decoder refuses) and U+0000 make the packet malformed [MQTT-1.5.4-1/2].
    """
    if position + 2 > end:
        raise MQTTProtocolError(_MALFORMED, "string length runs past the packet end")
    stop = position + 2 + ((buffer[position] << 8) | buffer[position + 1])
    if stop > end:
        raise MQTTProtocolError(_MALFORMED, "string runs past the packet end")
    try:
        text = buffer[position + 2 : stop].decode("utf-8")
    except UnicodeDecodeError as error:
        raise MQTTProtocolError(
            _MALFORMED, f"string is not well-formed UTF-8 ({error.reason} at byte {error.start})"
        ) from None
    if "\x00" in text:
        raise MQTTProtocolError(_MALFORMED, "string contains U+0000")
    return text, stop


def encode_utf8(text: str, what: str = "string") -> bytes:
    """Encode a UTF-8 string with its two byte length; ``what`` names the field in errors."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise MQTTLocalProtocolError(f"{what} {text!r} cannot be encoded: {error.reason}") from None
    except AttributeError:
        raise MQTTLocalProtocolError(f"{what} must be a str, not {type(text).__name__}") from None
    if len(data) > 65_535:
        raise MQTTLocalProtocolError(f"{what} is {len(data)} bytes long, more than 65535")
    if "\x00" in text:
        raise MQTTLocalProtocolError(f"{what} {text!r} contains U+0000")
    return len(data).to_bytes(2, "big") + data


def encode_binary(data: bytes, what: str = "binary data") -> bytes:
    """Encode binary data with its two byte length."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MQTTLocalProtocolError(f"{what} must be bytes, not {type(data).__name__}")
    if len(data) > 65_535:
        raise MQTTLocalProtocolError(f"{what} is {len(data)} bytes long, more than 65535")
    return len(data).to_bytes(2, "big") + bytes(data)


__all__ = [
    "MAX_VARIABLE_BYTE_INTEGER",
    "decode_binary",
    "decode_four_byte_integer",
    "decode_two_byte_integer",
    "decode_utf8",
    "decode_variable_byte_integer",
    "encode_binary",
    "encode_utf8",
    "encode_variable_byte_integer",
    "variable_byte_integer_size",
]
