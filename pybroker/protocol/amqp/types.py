"""Python representations of the AMQP 1.0 type system (OASIS AMQP 1.0 part 1).

Plain Python values map onto the obvious AMQP type: ``None`` null, ``bool`` boolean, ``int`` long,
``float`` double, ``str`` string, ``bytes`` binary, ``list`` list, ``dict`` map, ``uuid.UUID``
uuid. Every other AMQP type, and every distinction that a round trip must keep (a ``uint`` is not
a ``long``, a ``symbol`` is not a ``string``), has a small wrapper here. The integer, string and
float wrappers are plain subclasses with no state of their own, so they compare equal to (and hash
like) the builtin value: ``UInt(5) == 5`` and ``Symbol("x") == "x"``. Tests that care about the
AMQP type compare ``type()`` as well.

The wrappers do not check ranges when they are built (decoding builds a great many of them and
must stay cheap); the encoder checks and raises ``ValueError`` for a value out of range.
"""

from __future__ import annotations

from typing import Any


class Symbol(str):
    """AMQP ``symbol``: an ASCII string from a constrained domain (sym8 0xa3 / sym32 0xb3)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Symbol({str.__repr__(self)})"


class Char(str):
    """AMQP ``char``: a single Unicode code point, UTF-32BE on the wire (0x73)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Char({str.__repr__(self)})"


class _TypedInt(int):
    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int.__repr__(self)})"


class UByte(_TypedInt):
    """AMQP ``ubyte``: 0..255 (0x50)."""

    __slots__ = ()


class UShort(_TypedInt):
    """AMQP ``ushort``: 0..65535 (0x60)."""

    __slots__ = ()


class UInt(_TypedInt):
    """AMQP ``uint``: 0..2**32-1 (0x70, smalluint 0x52, uint0 0x43)."""

    __slots__ = ()


class ULong(_TypedInt):
    """AMQP ``ulong``: 0..2**64-1 (0x80, smallulong 0x53, ulong0 0x44)."""

    __slots__ = ()


class Byte(_TypedInt):
    """AMQP ``byte``: -128..127 (0x51)."""

    __slots__ = ()


class Short(_TypedInt):
    """AMQP ``short``: -32768..32767 (0x61)."""

    __slots__ = ()


class Int(_TypedInt):
    """AMQP ``int``: 32-bit signed (0x71, smallint 0x54)."""

    __slots__ = ()


class Long(_TypedInt):
    """AMQP ``long``: 64-bit signed (0x81, smalllong 0x55). A plain ``int`` encodes the same way."""

    __slots__ = ()


class Timestamp(_TypedInt):
    """AMQP ``timestamp``: signed milliseconds since the Unix epoch (0x83)."""

    __slots__ = ()


class Float(float):
    """AMQP ``float``: IEEE 754 binary32 (0x72). A plain ``float`` encodes as ``double``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Float({float.__repr__(self)})"


class _RawDecimal(bytes):
    __slots__ = ()
    _width = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({bytes.__repr__(self)})"


class Decimal32(_RawDecimal):
    """AMQP ``decimal32``: the 4 raw IEEE 754 decimal32 bytes, kept uninterpreted (0x74)."""

    __slots__ = ()
    _width = 4


class Decimal64(_RawDecimal):
    """AMQP ``decimal64``: the 8 raw IEEE 754 decimal64 bytes, kept uninterpreted (0x84)."""

    __slots__ = ()
    _width = 8


class Decimal128(_RawDecimal):
    """AMQP ``decimal128``: the 16 raw IEEE 754 decimal128 bytes, kept uninterpreted (0x94)."""

    __slots__ = ()
    _width = 16


class Described:
    """A described value (constructor 0x00): ``descriptor`` (usually a ``ULong`` or ``Symbol``)
    followed by ``value``."""

    __slots__ = ("descriptor", "value")

    def __init__(self, descriptor: Any, value: Any) -> None:
        self.descriptor = descriptor
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Described):
            return NotImplemented
        return self.descriptor == other.descriptor and self.value == other.value

    def __hash__(self) -> int:
        return hash((Described, self.descriptor, self.value))

    def __repr__(self) -> str:
        return f"Described({self.descriptor!r}, {self.value!r})"


#: The AMQP type names an :class:`Array` can hold, in the spelling of the spec.
ARRAY_ELEMENT_TYPES = frozenset(
    {
        "null",
        "boolean",
        "ubyte",
        "ushort",
        "uint",
        "ulong",
        "byte",
        "short",
        "int",
        "long",
        "float",
        "double",
        "decimal32",
        "decimal64",
        "decimal128",
        "char",
        "timestamp",
        "uuid",
        "binary",
        "string",
        "symbol",
        "list",
        "map",
        "array",
    }
)


class Array:
    """An AMQP ``array`` (0xe0 / 0xf0): ``values`` all of one AMQP type.

    ``element_type`` is the AMQP type name (``"uint"``, ``"symbol"``, ``"list"``, ... see
    :data:`ARRAY_ELEMENT_TYPES`). ``descriptor`` is not ``None`` for an array of described
    values: the one descriptor in the element constructor applies to every element, and
    ``values`` holds the undescribed values. Decoded values use the same wrappers as
    :func:`decode_value` (an array of ``uint`` holds ``UInt``); for encoding, plain values of a
    compatible Python type are accepted.
    """

    __slots__ = ("descriptor", "element_type", "values")

    def __init__(self, element_type: str, values: Any = (), descriptor: Any = None) -> None:
        if element_type not in ARRAY_ELEMENT_TYPES:
            raise ValueError(f"Array: unknown AMQP element type {element_type!r}")
        self.element_type = element_type
        self.values = list(values)
        self.descriptor = descriptor

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Array):
            return NotImplemented
        return (
            self.element_type == other.element_type
            and self.descriptor == other.descriptor
            and self.values == other.values
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like list

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        if self.descriptor is None:
            return f"Array({self.element_type!r}, {self.values!r})"
        return f"Array({self.element_type!r}, {self.values!r}, descriptor={self.descriptor!r})"


__all__ = [
    "ARRAY_ELEMENT_TYPES",
    "Array",
    "Byte",
    "Char",
    "Decimal32",
    "Decimal64",
    "Decimal128",
    "Described",
    "Float",
    "Int",
    "Long",
    "Short",
    "Symbol",
    "Timestamp",
    "UByte",
    "UInt",
    "ULong",
    "UShort",
]
