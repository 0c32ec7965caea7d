"""AMQP 1.0 type codec and message-section codec (sans-I/O, pure Python).

Theory of operation
-------------------
Proton hands the broker each transfer's payload as one ``bytes``: the annotated message, a
sequence of described sections (OASIS AMQP 1.0 part 3, 3.2) in a fixed order::

    header? delivery-annotations? message-annotations? properties? application-properties?
    (data+ | amqp-sequence+ | amqp-value)? footer?

The broker routes on a few fields and otherwise forwards the bytes, so :func:`parse_message`
does the least work that makes routing possible: it walks the sections using their size
prefixes, records each one's byte range, decodes the header and properties lists eagerly and
leaves the annotations, application-properties and body to be decoded on first access. Every
section's extent is checked against the buffer during the walk, so a truncated message always
fails in :func:`parse_message`; malformed *content* of a lazy section fails when it is read.

Redelivery and dead-lettering change only the header or the message annotations:
:func:`with_header` and :func:`with_message_annotations` splice a freshly encoded section into
the original bytes and leave every other byte untouched.

The value codec is table-driven. On the wire a value is a one-byte constructor (format code) and
its payload; ``_DECODERS[code](buf, offset_after_code)`` returns ``(value, new_offset)``. The
format code's high nibble fixes the payload's width class (0x4_ none, 0x5_ 1 byte, ... 0xa_/0xc_/
0xe_ a one-byte size prefix, 0xb_/0xd_/0xf_ a four-byte one), which is what lets
:func:`skip_value` step over any value without building it. Decoders index the buffer directly
and rely on ``IndexError``/``struct.error`` for truncated fixed-width reads; the public entry
points turn those (and too-deep nesting) into :class:`AMQPDecodeError`, so callers see exactly
one exception type for bad input.

Representation: see :mod:`pybroker.protocol.amqp.types`. Decoding gives plain ``int`` for
``long``, ``float`` for ``double``, ``str`` for ``string``, ``bytes`` for ``binary``, ``bool``,
``None``, ``list``, ``dict`` and ``uuid.UUID``; wrappers for everything else. Encoding chooses
the smallest encoding (uint0/smalluint, str8 before str32, list0/list8 before list32); inside an
array, where one constructor serves every element, fixed-width types use their full-width code.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Mapping
from operator import attrgetter
from typing import Any, NamedTuple

from pybroker.errors import ProtocolError
from pybroker.protocol.amqp.types import (
    Array,
    Byte,
    Char,
    Decimal32,
    Decimal64,
    Decimal128,
    Described,
    Float,
    Int,
    Long,
    Short,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
)


class AMQPDecodeError(ProtocolError):
    """Bytes that are not a well-formed AMQP value or message.

    ``offset`` is the position in the input where the problem was found (for a truncated value,
    the end of the input); ``reason`` is the message without the position.
    """

    def __init__(self, reason: str, offset: int) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(f"AMQP decode error at offset {offset}: {reason}")


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

_unpack_H = struct.Struct(">H").unpack_from
_unpack_h = struct.Struct(">h").unpack_from
_unpack_I = struct.Struct(">I").unpack_from
_unpack_i = struct.Struct(">i").unpack_from
_unpack_Q = struct.Struct(">Q").unpack_from
_unpack_q = struct.Struct(">q").unpack_from
_unpack_f = struct.Struct(">f").unpack_from
_unpack_d = struct.Struct(">d").unpack_from
_unpack_II = struct.Struct(">II").unpack_from

_UINT0 = UInt(0)
_ULONG0 = ULong(0)


def _truncated(what: str, start: int, buf: bytes) -> AMQPDecodeError:
    return AMQPDecodeError(f"{what} at offset {start} runs past the end of the input", len(buf))


def _d_null(b: bytes, o: int) -> tuple[Any, int]:
    return None, o


def _d_true(b: bytes, o: int) -> tuple[Any, int]:
    return True, o


def _d_false(b: bytes, o: int) -> tuple[Any, int]:
    return False, o


def _d_boolean(b: bytes, o: int) -> tuple[Any, int]:
    v = b[o]
    if v == 1:
        return True, o + 1
    if v == 0:
        return False, o + 1
    raise AMQPDecodeError(f"boolean byte must be 0x00 or 0x01, not {v:#04x}", o)


def _d_uint0(b: bytes, o: int) -> tuple[Any, int]:
    return _UINT0, o


def _d_ulong0(b: bytes, o: int) -> tuple[Any, int]:
    return _ULONG0, o


def _d_list0(b: bytes, o: int) -> tuple[Any, int]:
    return [], o


def _d_ubyte(b: bytes, o: int) -> tuple[Any, int]:
    return UByte(b[o]), o + 1


def _d_byte(b: bytes, o: int) -> tuple[Any, int]:
    v = b[o]
    return Byte(v - 256 if v > 127 else v), o + 1


def _d_smalluint(b: bytes, o: int) -> tuple[Any, int]:
    return UInt(b[o]), o + 1


def _d_smallulong(b: bytes, o: int) -> tuple[Any, int]:
    return ULong(b[o]), o + 1


def _d_smallint(b: bytes, o: int) -> tuple[Any, int]:
    v = b[o]
    return Int(v - 256 if v > 127 else v), o + 1


def _d_smalllong(b: bytes, o: int) -> tuple[Any, int]:
    v = b[o]
    return (v - 256 if v > 127 else v), o + 1


def _d_ushort(b: bytes, o: int) -> tuple[Any, int]:
    return UShort(_unpack_H(b, o)[0]), o + 2


def _d_short(b: bytes, o: int) -> tuple[Any, int]:
    return Short(_unpack_h(b, o)[0]), o + 2


def _d_uint(b: bytes, o: int) -> tuple[Any, int]:
    return UInt(_unpack_I(b, o)[0]), o + 4


def _d_int(b: bytes, o: int) -> tuple[Any, int]:
    return Int(_unpack_i(b, o)[0]), o + 4


def _d_float(b: bytes, o: int) -> tuple[Any, int]:
    return Float(_unpack_f(b, o)[0]), o + 4


def _d_char(b: bytes, o: int) -> tuple[Any, int]:
    v = _unpack_I(b, o)[0]
    if v > 0x10FFFF:
        raise AMQPDecodeError(f"char {v:#x} is not a Unicode code point", o)
    return Char(chr(v)), o + 4


def _d_decimal32(b: bytes, o: int) -> tuple[Any, int]:
    e = o + 4
    if e > len(b):
        raise _truncated("decimal32", o - 1, b)
    return Decimal32(b[o:e]), e


def _d_ulong(b: bytes, o: int) -> tuple[Any, int]:
    return ULong(_unpack_Q(b, o)[0]), o + 8


def _d_long(b: bytes, o: int) -> tuple[Any, int]:
    return _unpack_q(b, o)[0], o + 8


def _d_double(b: bytes, o: int) -> tuple[Any, int]:
    return _unpack_d(b, o)[0], o + 8


def _d_timestamp(b: bytes, o: int) -> tuple[Any, int]:
    return Timestamp(_unpack_q(b, o)[0]), o + 8


def _d_decimal64(b: bytes, o: int) -> tuple[Any, int]:
    e = o + 8
    if e > len(b):
        raise _truncated("decimal64", o - 1, b)
    return Decimal64(b[o:e]), e


def _d_decimal128(b: bytes, o: int) -> tuple[Any, int]:
    e = o + 16
    if e > len(b):
        raise _truncated("decimal128", o - 1, b)
    return Decimal128(b[o:e]), e


def _d_uuid(b: bytes, o: int) -> tuple[Any, int]:
    e = o + 16
    if e > len(b):
        raise _truncated("uuid", o - 1, b)
    return uuid.UUID(bytes=b[o:e]), e


def _d_vbin8(b: bytes, o: int) -> tuple[Any, int]:
    s = o + 1
    e = s + b[o]
    if e > len(b):
        raise _truncated("vbin8", o - 1, b)
    return b[s:e], e


def _d_vbin32(b: bytes, o: int) -> tuple[Any, int]:
    s = o + 4
    e = s + _unpack_I(b, o)[0]
    if e > len(b):
        raise _truncated("vbin32", o - 1, b)
    return b[s:e], e


def _d_str8(b: bytes, o: int) -> tuple[Any, int]:
    s = o + 1
    e = s + b[o]
    if e > len(b):
        raise _truncated("str8-utf8", o - 1, b)
    try:
        return b[s:e].decode(), e
    except UnicodeDecodeError as exc:
        raise AMQPDecodeError(
            f"str8-utf8 is not valid UTF-8: {exc.reason}", s + exc.start
        ) from None


def _d_str32(b: bytes, o: int) -> tuple[Any, int]:
    s = o + 4
    e = s + _unpack_I(b, o)[0]
    if e > len(b):
        raise _truncated("str32-utf8", o - 1, b)
    try:
        return b[s:e].decode(), e
    except UnicodeDecodeError as exc:
        raise AMQPDecodeError(
            f"str32-utf8 is not valid UTF-8: {exc.reason}", s + exc.start
        ) from None


def _d_sym8(b: bytes, o: int) -> tuple[Any, int]:
    s = o + 1
    e = s + b[o]
    if e > len(b):
        raise _truncated("sym8", o - 1, b)
    try:
        return Symbol(b[s:e].decode("ascii")), e
    except UnicodeDecodeError as exc:
        raise AMQPDecodeError("sym8 is not ASCII", s + exc.start) from None


def _d_sym32(b: bytes, o: int) -> tuple[Any, int]:
    s = o + 4
    e = s + _unpack_I(b, o)[0]
    if e > len(b):
        raise _truncated("sym32", o - 1, b)
    try:
        return Symbol(b[s:e].decode("ascii")), e
    except UnicodeDecodeError as exc:
        raise AMQPDecodeError("sym32 is not ASCII", s + exc.start) from None


def _list_items(b: bytes, o: int, end: int, count: int, start: int) -> tuple[Any, int]:
    # Every element has at least its one-byte constructor: a count larger than the bytes left
    # is malformed, and checking it first bounds the work a hostile count can cause.
    if count > end - o:
        raise AMQPDecodeError(f"list claims {count} elements in {end - o} bytes", start)
    dec = _DECODERS
    items: list[Any] = []
    append = items.append
    # Inline fast paths for what header and properties lists mostly hold (null, str8):
    # a function call per element is most of the cost of a small list.
    for _ in range(count):
        code = b[o]
        if code == 0x40:
            append(None)
            o += 1
        elif code == 0xA1:
            s = o + 2
            e = s + b[o + 1]
            if e > end:
                raise _truncated("str8-utf8", o, b)
            try:
                append(b[s:e].decode())
            except UnicodeDecodeError as exc:
                raise AMQPDecodeError(
                    f"str8-utf8 is not valid UTF-8: {exc.reason}", s + exc.start
                ) from None
            o = e
        else:
            v, o = dec[code](b, o + 1)
            append(v)
    if o != end:
        raise AMQPDecodeError(f"list size says it ends at {end}, its elements end at {o}", start)
    return items, o


def _list_at(b: bytes, o: int) -> tuple[Any, int]:
    """Decode the list whose constructor is at ``o`` (any of list0/list8/list32)."""
    code = b[o]
    if code == 0xC0:
        size = b[o + 1]
        end = o + 2 + size
        if end > len(b):
            raise _truncated("list8", o, b)
        if size < 1:
            raise AMQPDecodeError("list8 size 0 leaves no room for its count", o + 1)
        return _list_items(b, o + 3, end, b[o + 2], o)
    if code == 0x45:
        return [], o + 1
    if code == 0xD0:
        return _d_list32(b, o + 1)
    raise AMQPDecodeError(f"expected a list, found format code {code:#04x}", o)


def _d_list8(b: bytes, o: int) -> tuple[Any, int]:
    size = b[o]
    end = o + 1 + size
    if end > len(b):
        raise _truncated("list8", o - 1, b)
    if size < 1:
        raise AMQPDecodeError("list8 size 0 leaves no room for its count", o)
    return _list_items(b, o + 2, end, b[o + 1], o - 1)


def _d_list32(b: bytes, o: int) -> tuple[Any, int]:
    size, count = _unpack_II(b, o)
    end = o + 4 + size
    if end > len(b):
        raise _truncated("list32", o - 1, b)
    if size < 4:
        raise AMQPDecodeError(f"list32 size {size} leaves no room for its count", o)
    return _list_items(b, o + 8, end, count, o - 1)


def _map_items(b: bytes, o: int, end: int, count: int, start: int) -> tuple[Any, int]:
    if count & 1:
        raise AMQPDecodeError(f"map has an odd number of elements ({count})", start)
    if count > end - o:
        raise AMQPDecodeError(f"map claims {count} elements in {end - o} bytes", start)
    dec = _DECODERS
    result: dict[Any, Any] = {}
    for _ in range(count >> 1):
        key_offset = o
        code = b[o]
        if code == 0xA1:  # inline: application-properties keys are str8 strings
            s = o + 2
            e = s + b[o + 1]
            if e > end:
                raise _truncated("str8-utf8", o, b)
            try:
                k = b[s:e].decode()
            except UnicodeDecodeError as exc:
                raise AMQPDecodeError(
                    f"str8-utf8 is not valid UTF-8: {exc.reason}", s + exc.start
                ) from None
            o = e
        else:
            k, o = dec[code](b, o + 1)
        v, o = dec[b[o]](b, o + 1)
        try:
            result[k] = v
        except TypeError:
            raise AMQPDecodeError(
                f"map key of type {type(k).__name__} cannot be a Python dict key", key_offset
            ) from None
    if o != end:
        raise AMQPDecodeError(f"map size says it ends at {end}, its elements end at {o}", start)
    return result, o


def _d_map8(b: bytes, o: int) -> tuple[Any, int]:
    size = b[o]
    end = o + 1 + size
    if end > len(b):
        raise _truncated("map8", o - 1, b)
    if size < 1:
        raise AMQPDecodeError("map8 size 0 leaves no room for its count", o)
    return _map_items(b, o + 2, end, b[o + 1], o - 1)


def _d_map32(b: bytes, o: int) -> tuple[Any, int]:
    size, count = _unpack_II(b, o)
    end = o + 4 + size
    if end > len(b):
        raise _truncated("map32", o - 1, b)
    if size < 4:
        raise AMQPDecodeError(f"map32 size {size} leaves no room for its count", o)
    return _map_items(b, o + 8, end, count, o - 1)


def _array_items(b: bytes, o: int, end: int, count: int, start: int) -> tuple[Any, int]:
    if o >= end:
        raise AMQPDecodeError("array has no element constructor", start)
    code = b[o]
    o += 1
    descriptor = None
    if code == 0:
        descriptor, o = _DECODERS[b[o]](b, o + 1)
        code = b[o]
        o += 1
        if code == 0:
            raise AMQPDecodeError("array element constructor with nested descriptors", o - 1)
    element_type = _ARRAY_ELEMENT_NAME.get(code)
    if element_type is None:
        raise AMQPDecodeError(f"invalid array element constructor {code:#04x}", o - 1)
    width = _FIXED_WIDTH.get(code)
    if width is not None:
        if width * count > end - o:
            raise AMQPDecodeError(
                f"array of {count} {element_type} needs {width * count} bytes, has {end - o}", start
            )
        if width == 0 and count > len(b):
            # Zero-width elements (null, true, uint0, list0, ...) cost no bytes on the wire;
            # refuse to amplify a few bytes into an arbitrarily long list.
            raise AMQPDecodeError(f"array claims {count} zero-width elements", start)
    elif count > end - o:
        raise AMQPDecodeError(f"array claims {count} elements in {end - o} bytes", start)
    dec = _DECODERS[code]
    values = []
    append = values.append
    for _ in range(count):
        v, o = dec(b, o)
        append(v)
    if o != end:
        raise AMQPDecodeError(f"array size says it ends at {end}, its elements end at {o}", start)
    array = Array.__new__(Array)
    array.element_type = element_type
    array.values = values
    array.descriptor = descriptor
    return array, o


def _d_array8(b: bytes, o: int) -> tuple[Any, int]:
    size = b[o]
    end = o + 1 + size
    if end > len(b):
        raise _truncated("array8", o - 1, b)
    if size < 1:
        raise AMQPDecodeError("array8 size 0 leaves no room for its count", o)
    return _array_items(b, o + 2, end, b[o + 1], o - 1)


def _d_array32(b: bytes, o: int) -> tuple[Any, int]:
    size, count = _unpack_II(b, o)
    end = o + 4 + size
    if end > len(b):
        raise _truncated("array32", o - 1, b)
    if size < 4:
        raise AMQPDecodeError(f"array32 size {size} leaves no room for its count", o)
    return _array_items(b, o + 8, end, count, o - 1)


def _d_described(b: bytes, o: int) -> tuple[Any, int]:
    descriptor, o = _DECODERS[b[o]](b, o + 1)
    value, o = _DECODERS[b[o]](b, o + 1)
    return Described(descriptor, value), o


def _d_invalid_at(b: bytes, o: int) -> tuple[Any, int]:
    raise AMQPDecodeError(f"invalid format code {b[o - 1]:#04x}", o - 1)


_DECODER_BY_CODE = {
    0x00: _d_described,
    0x40: _d_null,
    0x41: _d_true,
    0x42: _d_false,
    0x43: _d_uint0,
    0x44: _d_ulong0,
    0x45: _d_list0,
    0x50: _d_ubyte,
    0x51: _d_byte,
    0x52: _d_smalluint,
    0x53: _d_smallulong,
    0x54: _d_smallint,
    0x55: _d_smalllong,
    0x56: _d_boolean,
    0x60: _d_ushort,
    0x61: _d_short,
    0x70: _d_uint,
    0x71: _d_int,
    0x72: _d_float,
    0x73: _d_char,
    0x74: _d_decimal32,
    0x80: _d_ulong,
    0x81: _d_long,
    0x82: _d_double,
    0x83: _d_timestamp,
    0x84: _d_decimal64,
    0x94: _d_decimal128,
    0x98: _d_uuid,
    0xA0: _d_vbin8,
    0xA1: _d_str8,
    0xA3: _d_sym8,
    0xB0: _d_vbin32,
    0xB1: _d_str32,
    0xB3: _d_sym32,
    0xC0: _d_list8,
    0xC1: _d_map8,
    0xD0: _d_list32,
    0xD1: _d_map32,
    0xE0: _d_array8,
    0xF0: _d_array32,
}

_DECODERS = [_DECODER_BY_CODE.get(code, _d_invalid_at) for code in range(256)]

_ARRAY_ELEMENT_NAME = {
    0x40: "null",
    0x41: "boolean",
    0x42: "boolean",
    0x56: "boolean",
    0x43: "uint",
    0x52: "uint",
    0x70: "uint",
    0x44: "ulong",
    0x53: "ulong",
    0x80: "ulong",
    0x45: "list",
    0xC0: "list",
    0xD0: "list",
    0x50: "ubyte",
    0x51: "byte",
    0x54: "int",
    0x71: "int",
    0x55: "long",
    0x81: "long",
    0x60: "ushort",
    0x61: "short",
    0x72: "float",
    0x73: "char",
    0x74: "decimal32",
    0x82: "double",
    0x83: "timestamp",
    0x84: "decimal64",
    0x94: "decimal128",
    0x98: "uuid",
    0xA0: "binary",
    0xB0: "binary",
    0xA1: "string",
    0xB1: "string",
    0xA3: "symbol",
    0xB3: "symbol",
    0xC1: "map",
    0xD1: "map",
    0xE0: "array",
    0xF0: "array",
}

# Payload width of each fixed-width format code (its high nibble says it).
_FIXED_WIDTH = {
    code: {0x4: 0, 0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}[code >> 4]
    for code in _DECODER_BY_CODE
    if 0x40 <= code < 0xA0
}

# skip_value's table: >= 0 a fixed payload width, -1 a one-byte size prefix, -4 a four-byte one,
# None an invalid code. Described values (0x00) are handled before the table is consulted.
_SKIP_KIND: list[int | None] = [None] * 256
for _code in _DECODER_BY_CODE:
    if _code in _FIXED_WIDTH:
        _SKIP_KIND[_code] = _FIXED_WIDTH[_code]
    elif _code >= 0xA0:
        _SKIP_KIND[_code] = -1 if (_code >> 4) in (0xA, 0xC, 0xE) else -4
del _code


def _skip(b: bytes, o: int) -> int:
    code = b[o]
    while code == 0:
        o = _skip(b, o + 1)  # the descriptor; the described value follows it
        code = b[o]
    kind = _SKIP_KIND[code]
    if kind is None:
        raise AMQPDecodeError(f"invalid format code {code:#04x}", o)
    if kind >= 0:
        e = o + 1 + kind
    elif kind == -1:
        e = o + 2 + b[o + 1]
    else:
        e = o + 5 + _unpack_I(b, o + 1)[0]
    if e > len(b):
        raise _truncated(f"value (format code {code:#04x})", o, b)
    return e


def _decode_at(b: bytes, o: int) -> tuple[Any, int]:
    """Decode one value with the error translation of the public entry points."""
    try:
        return _DECODERS[b[o]](b, o + 1)
    except (IndexError, struct.error):
        raise AMQPDecodeError(
            f"value at offset {o} runs past the end of the input", len(b)
        ) from None
    except RecursionError:
        raise AMQPDecodeError(f"value at offset {o} is nested too deeply", o) from None


def decode_value(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode the AMQP value that starts at ``offset``; return ``(value, offset_after_it)``.

    Raises :class:`AMQPDecodeError` (with the offset) for truncated or malformed input.
    """
    if type(buf) is not bytes:
        buf = bytes(buf)
    if offset < 0:
        raise ValueError(f"offset must not be negative, not {offset}")
    return _decode_at(buf, offset)


def skip_value(buf: bytes | bytearray | memoryview, offset: int = 0) -> int:
    """Return the offset just after the AMQP value at ``offset`` without decoding it.

    Uses the size prefixes of variable-width and compound values, so the cost does not depend on
    what a list or map holds. Checks that the value fits in ``buf`` and that its format code is
    valid; it does not check the inside of compound values (decoding does).
    """
    if offset < 0:
        raise ValueError(f"offset must not be negative, not {offset}")
    try:
        return _skip(buf, offset)  # type: ignore[arg-type]
    except (IndexError, struct.error):
        raise AMQPDecodeError(
            f"value at offset {offset} runs past the end of the input", len(buf)
        ) from None
    except RecursionError:
        raise AMQPDecodeError(f"value at offset {offset} is nested too deeply", offset) from None


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

_pack_H = struct.Struct(">H").pack
_pack_h = struct.Struct(">h").pack
_pack_I = struct.Struct(">I").pack
_pack_i = struct.Struct(">i").pack
_pack_Q = struct.Struct(">Q").pack
_pack_q = struct.Struct(">q").pack
_pack_f = struct.Struct(">f").pack
_pack_d = struct.Struct(">d").pack
_pack_BB = struct.Struct(">BB").pack
_pack_II = struct.Struct(">II").pack
_pack_BII = struct.Struct(">BII").pack
_pack_BBB = struct.Struct(">BBB").pack

_SMALL = [bytes((i,)) for i in range(256)]
_SMALLUINT = [b"\x43"] + [b"\x52" + bytes((i,)) for i in range(1, 256)]
_SMALLULONG = [b"\x44"] + [b"\x53" + bytes((i,)) for i in range(1, 256)]
_UBYTE = [b"\x50" + bytes((i,)) for i in range(256)]


def _range_error(type_name: str, value: Any) -> ValueError:
    return ValueError(f"{value!r} is out of range for AMQP {type_name}")


def _e_null(v: Any) -> bytes:
    return b"\x40"


def _e_bool(v: Any) -> bytes:
    return b"\x41" if v else b"\x42"


def _e_long(v: Any) -> bytes:
    if -128 <= v <= 127:
        return b"\x55" + _SMALL[v & 0xFF]
    if -(1 << 63) <= v < (1 << 63):
        return b"\x81" + _pack_q(v)
    raise _range_error("long", v)


def _e_int(v: Any) -> bytes:
    if -128 <= v <= 127:
        return b"\x54" + _SMALL[v & 0xFF]
    if -(1 << 31) <= v < (1 << 31):
        return b"\x71" + _pack_i(v)
    raise _range_error("int", v)


def _e_short(v: Any) -> bytes:
    if -32768 <= v <= 32767:
        return b"\x61" + _pack_h(v)
    raise _range_error("short", v)


def _e_byte(v: Any) -> bytes:
    if -128 <= v <= 127:
        return b"\x51" + _SMALL[v & 0xFF]
    raise _range_error("byte", v)


def _e_ubyte(v: Any) -> bytes:
    if 0 <= v <= 255:
        return _UBYTE[v]
    raise _range_error("ubyte", v)


def _e_ushort(v: Any) -> bytes:
    if 0 <= v <= 0xFFFF:
        return b"\x60" + _pack_H(v)
    raise _range_error("ushort", v)


def _e_uint(v: Any) -> bytes:
    if 0 <= v <= 255:
        return _SMALLUINT[v]
    if 0 <= v <= 0xFFFFFFFF:
        return b"\x70" + _pack_I(v)
    raise _range_error("uint", v)


def _e_ulong(v: Any) -> bytes:
    if 0 <= v <= 255:
        return _SMALLULONG[v]
    if 0 <= v <= 0xFFFFFFFFFFFFFFFF:
        return b"\x80" + _pack_Q(v)
    raise _range_error("ulong", v)


def _e_timestamp(v: Any) -> bytes:
    if -(1 << 63) <= v < (1 << 63):
        return b"\x83" + _pack_q(v)
    raise _range_error("timestamp", v)


def _e_float(v: Any) -> bytes:
    try:
        return b"\x72" + _pack_f(v)
    except OverflowError:
        raise _range_error("float", v) from None


def _e_double(v: Any) -> bytes:
    return b"\x82" + _pack_d(v)


def _e_char(v: Any) -> bytes:
    if len(v) != 1:
        raise ValueError(f"AMQP char must be one code point, not {v!r}")
    return b"\x73" + _pack_I(ord(v))


def _e_decimal(code: bytes, width: int, v: bytes, name: str) -> bytes:
    if len(v) != width:
        raise ValueError(f"AMQP {name} needs exactly {width} bytes, not {len(v)}")
    return code + v


def _e_decimal32(v: Any) -> bytes:
    return _e_decimal(b"\x74", 4, v, "decimal32")


def _e_decimal64(v: Any) -> bytes:
    return _e_decimal(b"\x84", 8, v, "decimal64")


def _e_decimal128(v: Any) -> bytes:
    return _e_decimal(b"\x94", 16, v, "decimal128")


def _e_uuid(v: Any) -> bytes:
    return b"\x98" + v.bytes


def _e_binary(v: Any) -> bytes:
    n = len(v)
    if n < 256:
        return b"\xa0" + _SMALL[n] + v
    if n <= 0xFFFFFFFF:
        return b"\xb0" + _pack_I(n) + v
    raise ValueError(f"AMQP binary of {n} bytes is too long")


def _e_buffer(v: Any) -> bytes:
    return _e_binary(bytes(v))


def _e_string(v: Any) -> bytes:
    raw = v.encode()
    n = len(raw)
    if n < 256:
        return b"\xa1" + _SMALL[n] + raw
    if n <= 0xFFFFFFFF:
        return b"\xb1" + _pack_I(n) + raw
    raise ValueError(f"AMQP string of {n} bytes is too long")


def _e_symbol(v: Any) -> bytes:
    try:
        raw = v.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"AMQP symbol must be ASCII, not {v!r}") from None
    n = len(raw)
    if n < 256:
        return b"\xa3" + _SMALL[n] + raw
    if n <= 0xFFFFFFFF:
        return b"\xb3" + _pack_I(n) + raw
    raise ValueError(f"AMQP symbol of {n} bytes is too long")


def _compound(code8: int, code32: int, count: int, body: bytes) -> bytes:
    # list8/map8 when both the size (body plus the count byte) and the count fit in a byte.
    if count < 256 and len(body) < 255:
        return _pack_BBB(code8, len(body) + 1, count) + body
    size = len(body) + 4
    if size > 0xFFFFFFFF:
        raise ValueError("AMQP compound value longer than 4 GiB")
    return _pack_BII(code32, size, count) + body


def _e_list(v: Any) -> bytes:
    if not v:
        return b"\x45"
    return _compound(0xC0, 0xD0, len(v), b"".join([_encode(item) for item in v]))


def _e_map(v: Any) -> bytes:
    parts = []
    append = parts.append
    for key, value in v.items():
        append(_encode(key))
        append(_encode(value))
    return _compound(0xC1, 0xD1, len(parts), b"".join(parts))


def _e_described(v: Any) -> bytes:
    return b"\x00" + _encode(v.descriptor) + _encode(v.value)


# Array elements: each element type has one element constructor for the whole array and a
# payload encoder (the value without its constructor). Fixed-width types use their full-width
# code (an array cannot mix smalluint and uint); variable-width and compound types use the 8-bit
# form when every element fits, else the 32-bit form.


def _fixed_payload(encoder: Any, skip: int = 1) -> Any:
    def payload(v: Any) -> bytes:
        return encoder(v)[skip:]

    return payload


def _p_uint(v: Any) -> bytes:
    if 0 <= v <= 0xFFFFFFFF:
        return _pack_I(v)
    raise _range_error("uint", v)


def _p_ulong(v: Any) -> bytes:
    if 0 <= v <= 0xFFFFFFFFFFFFFFFF:
        return _pack_Q(v)
    raise _range_error("ulong", v)


def _p_int(v: Any) -> bytes:
    if -(1 << 31) <= v < (1 << 31):
        return _pack_i(v)
    raise _range_error("int", v)


def _p_long(v: Any) -> bytes:
    if -(1 << 63) <= v < (1 << 63):
        return _pack_q(v)
    raise _range_error("long", v)


def _p_boolean(v: Any) -> bytes:
    return b"\x01" if v else b"\x00"


def _p_null(v: Any) -> bytes:
    if v is not None:
        raise ValueError(f"array of null holds {v!r}")
    return b""


_ARRAY_FIXED = {
    # element type: (constructor, payload encoder)
    "null": (0x40, _p_null),
    "boolean": (0x56, _p_boolean),
    "ubyte": (0x50, _fixed_payload(_e_ubyte)),
    "ushort": (0x60, _fixed_payload(_e_ushort)),
    "uint": (0x70, _p_uint),
    "ulong": (0x80, _p_ulong),
    "byte": (0x51, _fixed_payload(_e_byte)),
    "short": (0x61, _fixed_payload(_e_short)),
    "int": (0x71, _p_int),
    "long": (0x81, _p_long),
    "float": (0x72, _fixed_payload(_e_float)),
    "double": (0x82, _fixed_payload(_e_double)),
    "decimal32": (0x74, _fixed_payload(_e_decimal32)),
    "decimal64": (0x84, _fixed_payload(_e_decimal64)),
    "decimal128": (0x94, _fixed_payload(_e_decimal128)),
    "char": (0x73, _fixed_payload(_e_char)),
    "timestamp": (0x83, _fixed_payload(_e_timestamp)),
    "uuid": (0x98, _fixed_payload(_e_uuid)),
}


def _raw_binary(v: Any) -> bytes:
    if not isinstance(v, bytes | bytearray | memoryview):
        raise TypeError(f"Array of binary holds {type(v).__name__}")
    return bytes(v)


def _raw_string(v: Any) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"Array of string holds {type(v).__name__}")
    return v.encode()


def _raw_symbol(v: Any) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"Array of symbol holds {type(v).__name__}")
    try:
        return v.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"AMQP symbol must be ASCII, not {v!r}") from None


_ARRAY_VARIABLE = {
    # element type: (8-bit code, 32-bit code, raw bytes of one element)
    "binary": (0xA0, 0xB0, _raw_binary),
    "string": (0xA1, 0xB1, _raw_string),
    "symbol": (0xA3, 0xB3, _raw_symbol),
}


def _compound_parts(element_type: str, v: Any) -> tuple[int, bytes]:
    """(count, body) of a list, map or array element, without its size prefix."""
    if element_type == "list":
        return len(v), b"".join([_encode(item) for item in v])
    if element_type == "map":
        parts = []
        for key, value in v.items():
            parts.append(_encode(key))
            parts.append(_encode(value))
        return len(parts), b"".join(parts)
    if not isinstance(v, Array):
        raise TypeError(f"array of array holds {type(v).__name__}, not Array")
    return len(v.values), _array_constructor(v) + _array_payloads(v)


def _array_constructor(a: Array) -> bytes:
    et = a.element_type
    if et in _ARRAY_FIXED:
        code = _ARRAY_FIXED[et][0]
    elif et in _ARRAY_VARIABLE:
        code8, code32, raw = _ARRAY_VARIABLE[et]
        code = code8 if all(len(raw(v)) < 256 for v in a.values) else code32
    else:
        code = {"list": 0xC0, "map": 0xC1, "array": 0xE0}[et]
        for v in a.values:
            count, body = _compound_parts(et, v)
            if count >= 256 or len(body) >= 255:
                code = {"list": 0xD0, "map": 0xD1, "array": 0xF0}[et]
                break
    if a.descriptor is None:
        return _SMALL[code]
    return b"\x00" + _encode(a.descriptor) + _SMALL[code]


def _array_payloads(a: Array) -> bytes:
    et = a.element_type
    values = a.values
    if et in _ARRAY_FIXED:
        payload = _ARRAY_FIXED[et][1]
        return b"".join([payload(v) for v in values])
    if et in _ARRAY_VARIABLE:
        raws = [_ARRAY_VARIABLE[et][2](v) for v in values]
        if all(len(r) < 256 for r in raws):
            return b"".join([_SMALL[len(r)] + r for r in raws])
        return b"".join([_pack_I(len(r)) + r for r in raws])
    parts = [_compound_parts(et, v) for v in values]
    if all(count < 256 and len(body) < 255 for count, body in parts):
        return b"".join([_pack_BB(len(body) + 1, count) + body for count, body in parts])
    return b"".join([_pack_II(len(body) + 4, count) + body for count, body in parts])


def _e_array(a: Any) -> bytes:
    try:
        body = _array_constructor(a) + _array_payloads(a)
    except (struct.error, AttributeError) as exc:
        raise TypeError(f"Array of {a.element_type} holds a value of another type: {exc}") from None
    count = len(a.values)
    if count < 256 and len(body) < 255:
        return _pack_BBB(0xE0, len(body) + 1, count) + body
    return _pack_BII(0xF0, len(body) + 4, count) + body


_ENCODERS: dict[type, Any] = {
    type(None): _e_null,
    bool: _e_bool,
    int: _e_long,
    float: _e_double,
    str: _e_string,
    bytes: _e_binary,
    bytearray: _e_buffer,
    memoryview: _e_buffer,
    list: _e_list,
    tuple: _e_list,
    dict: _e_map,
    uuid.UUID: _e_uuid,
    Symbol: _e_symbol,
    Char: _e_char,
    UByte: _e_ubyte,
    UShort: _e_ushort,
    UInt: _e_uint,
    ULong: _e_ulong,
    Byte: _e_byte,
    Short: _e_short,
    Int: _e_int,
    Long: _e_long,
    Timestamp: _e_timestamp,
    Float: _e_float,
    Decimal32: _e_decimal32,
    Decimal64: _e_decimal64,
    Decimal128: _e_decimal128,
    Described: _e_described,
    Array: _e_array,
}


def _encode(value: Any) -> bytes:
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        # A subclass of a supported type (an IntEnum, an OrderedDict, ...): its nearest base.
        for base in type(value).__mro__[1:]:
            encoder = _ENCODERS.get(base)
            if encoder is not None:
                break
        else:
            if isinstance(value, Mapping):
                encoder = _e_map
            else:
                raise TypeError(f"cannot encode {type(value).__name__} as an AMQP value")
    return encoder(value)


def encode_value(value: Any) -> bytes:
    """Encode ``value`` as one AMQP value (smallest encoding); see the module docstring.

    Raises ``TypeError`` for a Python type with no AMQP mapping and ``ValueError`` for a value
    out of range for its AMQP type (a ``UByte(300)``, a non-ASCII ``Symbol``).
    """
    return _encode(value)


# --------------------------------------------------------------------------------------------
# Message sections
# --------------------------------------------------------------------------------------------

HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
AMQP_SEQUENCE = 0x76
AMQP_VALUE = 0x77
FOOTER = 0x78

#: Symbolic descriptor of each section (part 3, 3.2), mapped to its numeric code.
SECTION_NAMES = {
    "amqp:header:list": HEADER,
    "amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
    "amqp:message-annotations:map": MESSAGE_ANNOTATIONS,
    "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APPLICATION_PROPERTIES,
    "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": AMQP_SEQUENCE,
    "amqp:amqp-value:*": AMQP_VALUE,
    "amqp:footer:map": FOOTER,
}

_BODY_KIND = {DATA: "data", AMQP_SEQUENCE: "amqp-sequence", AMQP_VALUE: "amqp-value"}

_LIST_CODES = frozenset((0x45, 0xC0, 0xD0))
_BINARY_CODES = frozenset((0xA0, 0xB0))

#: Field names of the properties section, in wire order.
PROPERTY_FIELDS = (
    "message_id",
    "user_id",
    "to",
    "subject",
    "reply_to",
    "correlation_id",
    "content_type",
    "content_encoding",
    "absolute_expiry_time",
    "creation_time",
    "group_id",
    "group_sequence",
    "reply_to_group_id",
)
_PROPERTY_INDEX = {name: i for i, name in enumerate(PROPERTY_FIELDS)}
_PROPERTY_INDEX.update({name.replace("_", "-"): i for i, name in enumerate(PROPERTY_FIELDS)})
_NONES = (None,) * 16

_UNSET: Any = object()


class Header(NamedTuple):
    """The header section's fields (part 3, 3.2.1), with the spec's defaults for absent ones."""

    durable: bool = False
    priority: int = 4
    ttl: int | None = None
    first_acquirer: bool = False
    delivery_count: int = 0


class Properties(NamedTuple):
    """The properties section's fields (part 3, 3.2.4); ``None`` where absent."""

    message_id: Any = None
    user_id: bytes | None = None
    to: str | None = None
    subject: str | None = None
    reply_to: str | None = None
    correlation_id: Any = None
    content_type: str | None = None
    content_encoding: str | None = None
    absolute_expiry_time: int | None = None
    creation_time: int | None = None
    group_id: str | None = None
    group_sequence: int | None = None
    reply_to_group_id: str | None = None


_DEFAULT_HEADER = Header()
_EMPTY_PROPERTIES = Properties()
_tuple_new = tuple.__new__


class ParsedMessage:
    """One AMQP message as bytes plus what routing needs, from :func:`parse_message`.

    ``data`` is the whole encoded message. Each ``*_range`` is ``(start, end)`` of the whole
    section (descriptor included) in ``data``, or ``None`` when the section is absent;
    ``body_ranges`` has one range per body section. ``header`` (a :class:`Header`, defaults
    when the section is absent) and ``properties`` (a :class:`Properties`) are decoded already;
    each of their fields is also an attribute of the message (``parsed.to``,
    ``parsed.durable``). ``application_properties``, ``message_annotations``,
    ``delivery_annotations`` and ``footer`` decode on first access (and may raise
    :class:`AMQPDecodeError` then); so does :meth:`body_value`. The decoded dicts are cached:
    treat them as read-only.
    """

    __slots__ = (
        "_application_properties",
        "_body_values",
        "_delivery_annotations",
        "_footer",
        "_message_annotations",
        "application_properties_range",
        "body_kind",
        "body_ranges",
        "data",
        "delivery_annotations_range",
        "footer_range",
        "header",
        "header_range",
        "message_annotations_range",
        "properties",
        "properties_range",
    )

    data: bytes
    header: Header
    properties: Properties
    header_range: tuple[int, int] | None
    delivery_annotations_range: tuple[int, int] | None
    message_annotations_range: tuple[int, int] | None
    properties_range: tuple[int, int] | None
    application_properties_range: tuple[int, int] | None
    body_ranges: tuple[tuple[int, int], ...]
    footer_range: tuple[int, int] | None
    body_kind: str | None

    # Header and properties fields as read-only attributes (C-level getters, no Python frame).
    durable: bool = property(attrgetter("header.durable"))  # type: ignore[assignment]
    priority: int = property(attrgetter("header.priority"))  # type: ignore[assignment]
    ttl: int | None = property(attrgetter("header.ttl"))  # type: ignore[assignment]
    first_acquirer: bool = property(attrgetter("header.first_acquirer"))  # type: ignore[assignment]
    delivery_count: int = property(attrgetter("header.delivery_count"))  # type: ignore[assignment]
    message_id: Any = property(attrgetter("properties.message_id"))
    user_id: bytes | None = property(attrgetter("properties.user_id"))  # type: ignore[assignment]
    to: str | None = property(attrgetter("properties.to"))  # type: ignore[assignment]
    subject: str | None = property(attrgetter("properties.subject"))  # type: ignore[assignment]
    reply_to: str | None = property(attrgetter("properties.reply_to"))  # type: ignore[assignment]
    correlation_id: Any = property(attrgetter("properties.correlation_id"))
    content_type: str | None = property(  # type: ignore[assignment]
        attrgetter("properties.content_type")
    )
    content_encoding: str | None = property(  # type: ignore[assignment]
        attrgetter("properties.content_encoding")
    )
    absolute_expiry_time: int | None = property(  # type: ignore[assignment]
        attrgetter("properties.absolute_expiry_time")
    )
    creation_time: int | None = property(  # type: ignore[assignment]
        attrgetter("properties.creation_time")
    )
    group_id: str | None = property(attrgetter("properties.group_id"))  # type: ignore[assignment]
    group_sequence: int | None = property(  # type: ignore[assignment]
        attrgetter("properties.group_sequence")
    )
    reply_to_group_id: str | None = property(  # type: ignore[assignment]
        attrgetter("properties.reply_to_group_id")
    )

    def _lazy_map(self, section_range: tuple[int, int] | None) -> dict[Any, Any]:
        if section_range is None:
            return {}
        data = self.data
        try:
            value_offset = _value_offset(data, section_range[0])
        except (IndexError, struct.error):  # pragma: no cover - the walk checked the extent
            raise AMQPDecodeError("section descriptor runs past the end", len(data)) from None
        value, _ = _decode_at(data, value_offset)
        return value  # type: ignore[no-any-return]

    @property
    def application_properties(self) -> dict[str, Any]:
        """The application-properties map (``{}`` when absent), decoded on first access."""
        value = self._application_properties
        if value is _UNSET:
            value = self._application_properties = self._lazy_map(self.application_properties_range)
        return value  # type: ignore[no-any-return]

    @property
    def message_annotations(self) -> dict[Any, Any]:
        """The message-annotations map (``{}`` when absent), decoded on first access."""
        value = self._message_annotations
        if value is _UNSET:
            value = self._message_annotations = self._lazy_map(self.message_annotations_range)
        return value  # type: ignore[no-any-return]

    @property
    def delivery_annotations(self) -> dict[Any, Any]:
        """The delivery-annotations map (``{}`` when absent), decoded on first access."""
        value = self._delivery_annotations
        if value is _UNSET:
            value = self._delivery_annotations = self._lazy_map(self.delivery_annotations_range)
        return value  # type: ignore[no-any-return]

    @property
    def footer(self) -> dict[Any, Any]:
        """The footer map (``{}`` when absent), decoded on first access."""
        value = self._footer
        if value is _UNSET:
            value = self._footer = self._lazy_map(self.footer_range)
        return value  # type: ignore[no-any-return]

    @property
    def bare_range(self) -> tuple[int, int]:
        """``(start, end)`` of the bare message (properties through body; part 3, 3.2): the
        bytes that no intermediary may change."""
        end = self.footer_range[0] if self.footer_range is not None else len(self.data)
        for section_range in (
            self.properties_range,
            self.application_properties_range,
            self.body_ranges[0] if self.body_ranges else None,
        ):
            if section_range is not None:
                return section_range[0], end
        return end, end

    def body_value(self) -> Any:
        """The body: ``bytes`` for data sections (several are concatenated), the decoded value
        for amqp-value, one ``list`` of every element for amqp-sequence sections, ``None`` for
        a message without a body."""
        kind = self.body_kind
        data = self.data
        if kind == "data":
            payloads = self._body_values
            if len(payloads) == 1:
                start, end = payloads[0]
                return data[start:end]
            return b"".join([data[start:end] for start, end in payloads])
        if kind == "amqp-value":
            return _decode_at(data, self._body_values[0][0])[0]
        if kind == "amqp-sequence":
            items: list[Any] = []
            for start, _ in self._body_values:
                items.extend(_decode_at(data, start)[0])
            return items
        return None

    def __repr__(self) -> str:
        return (
            f"ParsedMessage({len(self.data)} bytes, to={self.to!r}, "
            f"message_id={self.message_id!r}, durable={self.durable}, body_kind={self.body_kind!r})"
        )


#: Another name for :class:`ParsedMessage`, the parsed view of a message's sections.
MessageSections = ParsedMessage


def _value_offset(data: bytes, section_start: int) -> int:
    """Offset of the value of the described section at ``section_start`` (past its descriptor)."""
    code = data[section_start + 1]
    if code == 0x53:
        return section_start + 3
    if code == 0x80:
        return section_start + 10
    return _skip(data, section_start + 1)


# Section rank: sections must appear in this order; only body sections may repeat.
_RANK = {
    HEADER: 0,
    DELIVERY_ANNOTATIONS: 1,
    MESSAGE_ANNOTATIONS: 2,
    PROPERTIES: 3,
    APPLICATION_PROPERTIES: 4,
    DATA: 5,
    AMQP_SEQUENCE: 5,
    AMQP_VALUE: 5,
    FOOTER: 6,
}
_SECTION_LABEL = {
    HEADER: "header",
    DELIVERY_ANNOTATIONS: "delivery-annotations",
    MESSAGE_ANNOTATIONS: "message-annotations",
    PROPERTIES: "properties",
    APPLICATION_PROPERTIES: "application-properties",
    DATA: "data",
    AMQP_SEQUENCE: "amqp-sequence",
    AMQP_VALUE: "amqp-value",
    FOOTER: "footer",
}


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and value is not True and value is not False


def _decode_header(data: bytes, o: int, start: int) -> tuple[Header, int]:
    fields, o = _list_at(data, o)
    n = len(fields)
    if n < 5:
        fields.extend(_NONES[: 5 - n])
    durable, priority, ttl, first_acquirer, delivery_count = fields[:5]
    if durable is None:
        durable = False
    elif durable is not True and durable is not False:
        raise AMQPDecodeError(f"header durable must be a boolean, not {durable!r}", start)
    # Any integer type is accepted (some clients widen), but only in the range of the field's
    # type, so that re-encoding the header for redelivery cannot fail.
    if priority is None:
        priority = 4
    elif not _is_integer(priority) or not 0 <= priority <= 255:
        raise AMQPDecodeError(f"header priority must be a ubyte, not {priority!r}", start)
    if ttl is not None and (not _is_integer(ttl) or not 0 <= ttl <= 0xFFFFFFFF):
        raise AMQPDecodeError(f"header ttl must be a uint, not {ttl!r}", start)
    if first_acquirer is None:
        first_acquirer = False
    elif first_acquirer is not True and first_acquirer is not False:
        raise AMQPDecodeError(
            f"header first-acquirer must be a boolean, not {first_acquirer!r}", start
        )
    if delivery_count is None:
        delivery_count = 0
    elif not _is_integer(delivery_count) or not 0 <= delivery_count <= 0xFFFFFFFF:
        raise AMQPDecodeError(
            f"header delivery-count must be a uint, not {delivery_count!r}", start
        )
    return _tuple_new(Header, (durable, priority, ttl, first_acquirer, delivery_count)), o


# Header sections repeat: one producer sends the same durable/priority/ttl on every message
# and delivery-count is 0 on first delivery. Decoding is a pure function of the header list's
# bytes and the result is immutable, so a small memo keyed by those bytes is safe to share
# (across brokers in one process too); it is cleared, not evicted, when full.
_HEADER_CACHE: dict[bytes, Header] = {}
_HEADER_CACHE_LIMIT = 1024


# Format codes each checked properties field may hold (null is always allowed): the fields
# routing and security read are checked, the others are passed through as decoded.
_ADDRESS_CODES = frozenset((0xA1, 0xB1, 0xA3, 0xB3))
_PROPERTY_CODES: tuple[frozenset[int] | None, ...] = (
    None,
    _BINARY_CODES,  # user-id
    _ADDRESS_CODES,  # to
    None,
    _ADDRESS_CODES,  # reply-to
) + (None,) * 8


def _decode_properties(data: bytes, o: int, start: int) -> tuple[Properties, int]:
    # A specialised list decoder: fields go straight into their slot, nulls cost one compare.
    code = data[o]
    if code == 0xC0:
        size = data[o + 1]
        if size < 1:
            raise AMQPDecodeError("list8 size 0 leaves no room for its count", start)
        count = data[o + 2]
        end = o + 2 + size
        o += 3
    elif code == 0x45:
        return _EMPTY_PROPERTIES, o + 1
    elif code == 0xD0:
        size, count = _unpack_II(data, o + 1)
        end = o + 5 + size
        o += 9
        if size < 4:
            raise AMQPDecodeError(f"list32 size {size} leaves no room for its count", start)
    else:
        raise AMQPDecodeError(f"properties section holds format code {code:#04x}", o)
    if end > len(data):
        raise _truncated("properties section", start, data)
    if count > end - o:
        raise AMQPDecodeError(f"list claims {count} elements in {end - o} bytes", start)
    fields: list[Any] = [None] * (count if count > 13 else 13)
    dec = _DECODERS
    for i in range(count):
        code = data[o]
        if code == 0x40:
            o += 1
            continue
        if i < 13:
            allowed = _PROPERTY_CODES[i]
            if allowed is not None and code not in allowed:
                raise AMQPDecodeError(
                    f"properties {PROPERTY_FIELDS[i].replace('_', '-')} cannot hold format code "
                    f"{code:#04x}",
                    o,
                )
        if code == 0xA1:
            s = o + 2
            e = s + data[o + 1]
            if e > end:
                raise _truncated("str8-utf8", o, data)
            try:
                fields[i] = data[s:e].decode()
            except UnicodeDecodeError as exc:
                raise AMQPDecodeError(
                    f"str8-utf8 is not valid UTF-8: {exc.reason}", s + exc.start
                ) from None
            o = e
        else:
            fields[i], o = dec[code](data, o + 1)
    if o != end:
        raise AMQPDecodeError(f"list size says it ends at {end}, its elements end at {o}", start)
    if count > 13:
        del fields[13:]
    return _tuple_new(Properties, fields), o


def parse_message(data: bytes | bytearray | memoryview) -> ParsedMessage:
    """Split an encoded AMQP message into its sections; decode header and properties.

    Raises :class:`AMQPDecodeError` for bytes that are not a sequence of well-formed sections in
    the order of part 3, 3.2 (truncation anywhere but at a section boundary is always caught
    here). Numeric (``0x53``/``0x80``) and symbolic (``amqp:...``) descriptors are accepted.
    """
    if type(data) is not bytes:
        data = bytes(data)
    try:
        return _parse(data)
    except (IndexError, struct.error):
        raise AMQPDecodeError("message runs past the end of the input", len(data)) from None
    except RecursionError:
        raise AMQPDecodeError("message is nested too deeply", 0) from None


def _parse(data: bytes) -> ParsedMessage:
    pm = ParsedMessage.__new__(ParsedMessage)
    pm.data = data
    pm.header = _DEFAULT_HEADER
    pm.properties = _EMPTY_PROPERTIES
    pm.header_range = pm.delivery_annotations_range = pm.message_annotations_range = None
    pm.properties_range = pm.application_properties_range = pm.footer_range = None
    pm.body_kind = None
    pm._application_properties = pm._message_annotations = _UNSET
    pm._delivery_annotations = pm._footer = _UNSET
    body_ranges: list[tuple[int, int]] = []
    body_values: list[tuple[int, int]] = []
    n = len(data)
    o = 0
    rank = -1
    body_code = 0
    while o < n:
        start = o
        if data[o] != 0:
            raise AMQPDecodeError(
                f"expected a described section (0x00), found format code {data[o]:#04x}", o
            )
        dcode = data[o + 1]
        if dcode == 0x53:
            code = data[o + 2]
            o += 3
        elif dcode == 0x80:
            code = _unpack_Q(data, o + 2)[0]
            o += 10
        elif dcode == 0x44:
            code = 0
            o += 2
        elif dcode == 0xA3 or dcode == 0xB3:
            name, o = (_d_sym8 if dcode == 0xA3 else _d_sym32)(data, o + 2)
            code = SECTION_NAMES.get(name, -1)
            if code < 0:
                raise AMQPDecodeError(f"unknown section descriptor {name!r}", start + 1)
        else:
            raise AMQPDecodeError(
                f"section descriptor must be a ulong or symbol, not format code {dcode:#04x}",
                start + 1,
            )
        section_rank = _RANK.get(code)
        if section_rank is None:
            raise AMQPDecodeError(f"unknown section descriptor {code:#x}", start + 1)
        if section_rank <= rank and (section_rank < rank or code != body_code):
            raise AMQPDecodeError(f"{_SECTION_LABEL[code]} section out of order or repeated", start)
        vcode = data[o]
        if code == DATA:
            if vcode == 0xA0:
                payload = o + 2
                o = payload + data[o + 1]
            elif vcode == 0xB0:
                payload = o + 5
                o = payload + _unpack_I(data, o + 1)[0]
            else:
                raise AMQPDecodeError(f"data section holds format code {vcode:#04x}", o)
            if o > n:
                raise _truncated("data section", start, data)
            body_ranges.append((start, o))
            body_values.append((payload, o))
            body_code = code
        elif code == PROPERTIES:
            pm.properties, o = _decode_properties(data, o, start)
            pm.properties_range = (start, o)
        elif code == HEADER:
            if vcode == 0xC0:
                end = o + 2 + data[o + 1]
                if end > n:
                    raise _truncated("header section", start, data)
                key = data[o:end]
                header = _HEADER_CACHE.get(key)
                if header is None:
                    header, o = _decode_header(data, o, start)
                    if len(_HEADER_CACHE) >= _HEADER_CACHE_LIMIT:
                        _HEADER_CACHE.clear()
                    _HEADER_CACHE[key] = header
                else:
                    o = end
                pm.header = header
            else:
                pm.header, o = _decode_header(data, o, start)
            pm.header_range = (start, o)
        elif code == AMQP_VALUE:
            if section_rank == rank:
                raise AMQPDecodeError("more than one amqp-value section", start)
            value_offset = o
            o = _skip(data, o)
            body_ranges.append((start, o))
            body_values.append((value_offset, o))
            body_code = code
        elif code == AMQP_SEQUENCE:
            if vcode not in _LIST_CODES:
                raise AMQPDecodeError(f"amqp-sequence section holds format code {vcode:#04x}", o)
            value_offset = o
            o = _skip(data, o)
            body_ranges.append((start, o))
            body_values.append((value_offset, o))
            body_code = code
        else:
            if vcode != 0xC1 and vcode != 0xD1:
                raise AMQPDecodeError(
                    f"{_SECTION_LABEL[code]} section holds format code {vcode:#04x}", o
                )
            o = _skip(data, o)
            if code == APPLICATION_PROPERTIES:
                pm.application_properties_range = (start, o)
            elif code == MESSAGE_ANNOTATIONS:
                pm.message_annotations_range = (start, o)
            elif code == DELIVERY_ANNOTATIONS:
                pm.delivery_annotations_range = (start, o)
            else:
                pm.footer_range = (start, o)
        rank = section_rank
    if body_code:
        pm.body_kind = _BODY_KIND[body_code]
    pm.body_ranges = tuple(body_ranges)
    pm._body_values = body_values
    return pm


# --------------------------------------------------------------------------------------------
# Building and rewriting messages
# --------------------------------------------------------------------------------------------

_EMPTY_HEADER = b"\x00\x53\x70\x45"
_FIELD_NULL = b"\x40"


def encode_header(
    durable: bool = False,
    priority: int = 4,
    ttl: int | None = None,
    first_acquirer: bool = False,
    delivery_count: int = 0,
) -> bytes:
    """Encode a header section. Fields at their default are written as null and trailing ones
    are omitted (part 3, 3.2.1 and part 1, 1.4), so an all-default header is 4 bytes."""
    if delivery_count:
        last = 5
    elif first_acquirer:
        last = 4
    elif ttl is not None:
        last = 3
    elif priority != 4:
        last = 2
    elif durable:
        last = 1
    else:
        return _EMPTY_HEADER
    body = b"\x41" if durable else b"\x40"
    if last > 1:
        body += _FIELD_NULL if priority == 4 else _e_ubyte(priority)
        if last > 2:
            body += _FIELD_NULL if ttl is None else _e_uint(ttl)
            if last > 3:
                body += b"\x41" if first_acquirer else b"\x40"
                if last > 4:
                    body += _e_uint(delivery_count)
    return b"\x00\x53\x70\xc0" + _SMALL[len(body) + 1] + _SMALL[last] + body


_KEEP: Any = object()


def with_header(
    parsed: ParsedMessage,
    *,
    durable: bool = _KEEP,
    priority: int = _KEEP,
    ttl: int | None = _KEEP,
    first_acquirer: bool = _KEEP,
    delivery_count: int = _KEEP,
) -> bytes:
    """The message's bytes with its header replaced by one whose fields are the current ones
    except those given (``ttl=None`` removes the ttl); added when it had none. Everything after
    the header is byte-identical."""
    header = parsed.header
    encoded = encode_header(
        header[0] if durable is _KEEP else durable,
        header[1] if priority is _KEEP else priority,
        header[2] if ttl is _KEEP else ttl,
        header[3] if first_acquirer is _KEEP else first_acquirer,
        header[4] if delivery_count is _KEEP else delivery_count,
    )
    header_range = parsed.header_range
    if header_range is None:
        return encoded + parsed.data
    return encoded + parsed.data[header_range[1] :]


def _annotation_key(key: Any) -> Any:
    # Annotation keys are symbols or ulongs (part 3, 3.2.10): plain str and int are promoted.
    if type(key) is str:
        return Symbol(key)
    if type(key) is int:
        return ULong(key)
    if isinstance(key, Symbol | ULong):
        return key
    raise TypeError(f"annotation keys are symbols or ulongs, not {type(key).__name__}")


def _encode_annotations(code: int, values: Mapping[Any, Any]) -> bytes:
    parts = []
    for key, value in values.items():
        parts.append(_encode(_annotation_key(key)))
        parts.append(_encode(value))
    return b"\x00\x53" + _SMALL[code] + _compound(0xC1, 0xD1, len(parts), b"".join(parts))


def with_message_annotations(
    parsed: ParsedMessage, updates: Mapping[Any, Any], remove: Iterable[Any] = ()
) -> bytes:
    """The message's bytes with ``updates`` set in (and ``remove`` keys taken out of) its
    message annotations; the section is added when absent and dropped when left empty.

    Entries not touched keep their original bytes, and so does every other section. ``str``
    keys become symbols and ``int`` keys ulongs, as annotations require.
    """
    data = parsed.data
    new_keys = {_annotation_key(key) for key in updates}
    drop = new_keys.union(_annotation_key(key) for key in remove)
    kept: list[bytes] = []
    kept_count = 0
    section_range = parsed.message_annotations_range
    if section_range is not None:
        start, end = section_range
        try:
            vo = _value_offset(data, start)
            if data[vo] == 0xC1:
                o, count = vo + 3, data[vo + 2]
            else:
                o, count = vo + 9, _unpack_I(data, vo + 5)[0]
            if count & 1:
                raise AMQPDecodeError("message-annotations map has an odd element count", vo)
            for _ in range(count >> 1):
                if o >= end:
                    raise AMQPDecodeError(
                        f"message-annotations map claims {count} elements, holds fewer", vo
                    )
                entry_start = o
                key, o = _decode_at(data, o)
                o = _skip(data, o)
                try:
                    keep = key not in drop
                except TypeError:  # an unhashable key (a list): never one being replaced
                    keep = True
                if keep:
                    kept.append(data[entry_start:o])
                    kept_count += 2
            if o != end:
                raise AMQPDecodeError(
                    f"message-annotations map size says it ends at {end}, its entries at {o}", vo
                )
        except (IndexError, struct.error):
            raise AMQPDecodeError(
                "message-annotations run past the end of the section", end
            ) from None
    else:
        if parsed.delivery_annotations_range is not None:
            start = end = parsed.delivery_annotations_range[1]
        elif parsed.header_range is not None:
            start = end = parsed.header_range[1]
        else:
            start = end = 0
    for key, value in updates.items():
        kept.append(_encode(_annotation_key(key)) + _encode(value))
        kept_count += 2
    if kept_count:
        section = b"\x00\x53\x72" + _compound(0xC1, 0xD1, kept_count, b"".join(kept))
    else:
        section = b""
    return data[:start] + section + data[end:]


def _p_address(v: Any) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"an address must be a str, not {type(v).__name__}")
    return _e_string(v)


def _p_string(v: Any) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"expected a str, not {type(v).__name__}")
    return _e_string(v)


def _p_symbol(v: Any) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"expected a str for a symbol, not {type(v).__name__}")
    return _e_symbol(v)


def _p_message_id(v: Any) -> bytes:
    # message-id-ulong | message-id-uuid | message-id-binary | message-id-string (3.2.11-15).
    if isinstance(v, int) and not isinstance(v, bool):
        return _e_ulong(v)
    if isinstance(v, uuid.UUID | bytes | bytearray | memoryview | str):
        return _encode(v)
    raise TypeError(f"a message id is a ulong, UUID, bytes or str, not {type(v).__name__}")


def _p_user_id(v: Any) -> bytes:
    if isinstance(v, str):
        return _e_binary(v.encode())
    if isinstance(v, bytes | bytearray | memoryview):
        return _e_binary(bytes(v))
    raise TypeError(f"user-id is bytes, not {type(v).__name__}")


def _p_timestamp(v: Any) -> bytes:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"a timestamp is int milliseconds, not {type(v).__name__}")
    return _e_timestamp(v)


def _p_sequence_no(v: Any) -> bytes:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"group-sequence is an int, not {type(v).__name__}")
    return _e_uint(v)


_PROPERTY_ENCODERS = (
    _p_message_id,
    _p_user_id,
    _p_address,
    _p_string,
    _p_address,
    _p_message_id,
    _p_symbol,
    _p_symbol,
    _p_timestamp,
    _p_timestamp,
    _p_string,
    _p_sequence_no,
    _p_string,
)


def encode_properties(properties: Mapping[str, Any]) -> bytes:
    """Encode a properties section from field names (``message_id`` or ``message-id`` style).

    ``None`` values are omitted. Coercions: an ``int`` message/correlation id becomes a ulong,
    ``content_type``/``content_encoding`` symbols, the two times timestamps (int ms),
    ``group_sequence`` a uint, a ``str`` user id its UTF-8 bytes."""
    fields: list[Any] = [None] * 13
    for name, value in properties.items():
        index = _PROPERTY_INDEX.get(name)
        if index is None:
            raise ValueError(f"unknown AMQP properties field {name!r}")
        fields[index] = value
    last = 13
    while last and fields[last - 1] is None:
        last -= 1
    parts = [
        _FIELD_NULL if value is None else _PROPERTY_ENCODERS[i](value)
        for i, value in enumerate(fields[:last])
    ]
    return b"\x00\x53\x73" + (_compound(0xC0, 0xD0, last, b"".join(parts)) if last else b"\x45")


def encode_application_properties(values: Mapping[str, Any]) -> bytes:
    """Encode an application-properties section (string keys, part 3, 3.2.5)."""
    parts = []
    for key, value in values.items():
        if not isinstance(key, str):
            raise TypeError(f"application-properties keys are strings, not {type(key).__name__}")
        parts.append(_e_string(key))
        parts.append(_encode(value))
    return b"\x00\x53\x74" + _compound(0xC1, 0xD1, len(parts), b"".join(parts))


def build_message(
    *,
    body: Any = None,
    body_kind: str | None = "data",
    durable: bool = False,
    priority: int = 4,
    ttl: int | None = None,
    first_acquirer: bool = False,
    delivery_count: int = 0,
    properties: Mapping[str, Any] | None = None,
    application_properties: Mapping[str, Any] | None = None,
    message_annotations: Mapping[Any, Any] | None = None,
    delivery_annotations: Mapping[Any, Any] | None = None,
    footer: Mapping[Any, Any] | None = None,
) -> bytes:
    """Encode a whole AMQP message (for converting other protocols' messages to AMQP).

    ``body_kind``: ``"data"`` (``body`` is bytes-like, or ``str`` sent as its UTF-8 bytes, or a
    list of bytes-like for several data sections), ``"amqp-value"`` (any encodable value),
    ``"amqp-sequence"`` (a list), or ``None`` for no body. The header is written only when a
    field differs from its default; empty dicts write no section.
    """
    parts = []
    header = encode_header(durable, priority, ttl, first_acquirer, delivery_count)
    if header != _EMPTY_HEADER:
        parts.append(header)
    if delivery_annotations:
        parts.append(_encode_annotations(DELIVERY_ANNOTATIONS, delivery_annotations))
    if message_annotations:
        parts.append(_encode_annotations(MESSAGE_ANNOTATIONS, message_annotations))
    if properties:
        parts.append(encode_properties(properties))
    if application_properties:
        parts.append(encode_application_properties(application_properties))
    if body_kind == "data":
        if isinstance(body, str):
            parts.append(b"\x00\x53\x75" + _e_binary(body.encode()))
        elif isinstance(body, bytes | bytearray | memoryview):
            parts.append(b"\x00\x53\x75" + _e_binary(bytes(body)))
        elif isinstance(body, list | tuple):
            for chunk in body:
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise TypeError(f"a data section holds bytes, not {type(chunk).__name__}")
                parts.append(b"\x00\x53\x75" + _e_binary(bytes(chunk)))
        else:
            raise TypeError(f"a data body is bytes or str, not {type(body).__name__}")
    elif body_kind == "amqp-value":
        parts.append(b"\x00\x53\x77" + _encode(body))
    elif body_kind == "amqp-sequence":
        if not isinstance(body, list | tuple):
            raise TypeError(f"an amqp-sequence body is a list, not {type(body).__name__}")
        parts.append(b"\x00\x53\x76" + _e_list(body))
    elif body_kind is not None:
        raise ValueError(f"unknown body kind {body_kind!r}")
    elif body is not None:
        raise ValueError("body_kind=None but a body was given")
    if footer:
        parts.append(_encode_annotations(FOOTER, footer))
    return b"".join(parts)


__all__ = [
    "AMQP_SEQUENCE",
    "AMQP_VALUE",
    "APPLICATION_PROPERTIES",
    "DATA",
    "DELIVERY_ANNOTATIONS",
    "FOOTER",
    "HEADER",
    "MESSAGE_ANNOTATIONS",
    "PROPERTIES",
    "PROPERTY_FIELDS",
    "SECTION_NAMES",
    "AMQPDecodeError",
    "MessageSections",
    "ParsedMessage",
    "build_message",
    "decode_value",
    "encode_application_properties",
    "encode_header",
    "encode_properties",
    "encode_value",
    "parse_message",
    "skip_value",
    "with_header",
    "with_message_annotations",
]


def head_length(data: bytes | bytearray | memoryview) -> int | None:
    """Length of the sections before the body (header, annotations, properties,
    application-properties) at the start of a possibly incomplete message; None while the
    bytes end inside one of those sections. A large message's head is parsed from its first
    frames with ``parse_message(data[:head_length(data)])``."""
    n = len(data)
    o = 0
    while o < n:
        if data[o] != 0:
            raise AMQPDecodeError(f"expected a described section (0x00), found {data[o]:#04x}", o)
        if o + 3 > n:
            return None
        if data[o + 1] == 0x53:
            code = data[o + 2]
            value = o + 3
        elif data[o + 1] == 0x80:
            if o + 10 > n:
                return None
            code = _unpack_Q(data, o + 2)[0]
            value = o + 10
        else:
            # symbolic descriptors: parse what is there the slow way
            try:
                descriptor_end = skip_value(data, o + 1)
            except AMQPDecodeError:
                return None
            name, _ = decode_value(data, o + 1)
            code = SECTION_NAMES.get(str(name), -1)
            value = descriptor_end
        if code in (DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER):
            return o
        try:
            o = skip_value(data, value)
        except AMQPDecodeError:
            return None
    return o


def routing_view(data: bytes) -> tuple[Header, Properties]:
    """The header and properties of a message, with the rest of its sections checked for
    shape only (each skipped by its size): the receive path's cheap alternative to
    :func:`parse_message`, which also records every section's range."""
    header, properties, _ = head_view(data)
    return header, properties


def head_view(data: bytes) -> tuple[Header, Properties, bool]:
    """:func:`routing_view`, and whether the message has an application-properties section
    (without one it has no application properties to decode, a duplicate id among them)."""
    if type(data) is not bytes:
        data = bytes(data)
    try:
        n = len(data)
        o = 0
        header = _DEFAULT_HEADER
        properties = _EMPTY_PROPERTIES
        application_properties = False
        while o < n:
            start = o
            if data[o] != 0 or data[o + 1] != 0x53:
                # symbolic or ulong64 descriptors, or garbage: the full parser decides
                parsed = parse_message(data)
                return (parsed.header, parsed.properties,
                        parsed.application_properties_range is not None)
            code = data[o + 2]
            o += 3
            if code == HEADER:
                vcode = data[o]
                if vcode == 0x45:
                    o += 1  # list0: every field at its default (proton's encoding of a default header)
                elif vcode == 0xC0:
                    end = o + 2 + data[o + 1]
                    key = data[o:end]
                    cached = _HEADER_CACHE.get(key)
                    if cached is None:
                        header, o = _decode_header(data, o, start)
                        if len(_HEADER_CACHE) >= _HEADER_CACHE_LIMIT:
                            _HEADER_CACHE.clear()
                        _HEADER_CACHE[key] = header
                    else:
                        header = cached
                        o = end
                else:
                    header, o = _decode_header(data, o, start)
            elif code == PROPERTIES:
                if data[o] == 0x45:
                    o += 1  # list0: no properties
                else:
                    properties, o = _decode_properties(data, o, start)
            elif code == DATA:
                vcode = data[o]
                if vcode == 0xA0:
                    o += 2 + data[o + 1]
                elif vcode == 0xB0:
                    o += 5 + _unpack_I(data, o + 1)[0]
                else:
                    raise AMQPDecodeError(f"data section holds format code {vcode:#04x}", o)
            elif code == AMQP_VALUE and data[o] == 0xB0:
                o += 5 + _unpack_I(data, o + 1)[0]  # a binary amqp-value (vbin32): skipped by its size
            elif code in _RANK:
                if code == APPLICATION_PROPERTIES:
                    application_properties = True
                o = _skip(data, o)
            else:
                raise AMQPDecodeError(f"unknown section descriptor {code:#x}", start + 1)
        if o != n:
            raise AMQPDecodeError("the last section runs past the end of the message", n)
        return header, properties, application_properties
    except (IndexError, struct.error):
        raise AMQPDecodeError("message runs past the end of the input", len(data)) from None
    except RecursionError:
        raise AMQPDecodeError("message is nested too deeply", 0) from None
