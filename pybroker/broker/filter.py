"""Artemis filter expressions: queue filters, consumer selectors, DLA/expiry resource filters.

The language is the SQL-92 subset of JMS 2.0 §3.8.1.1 as Artemis parses it (its StrictParser and
HyphenatedParser grammars): string, exact and approximate numeric and boolean literals;
identifiers; ``=  <>  <  <=  >  >=``, ``+ - * / %``, unary ``+ -``, ``AND OR NOT``, ``[NOT]
BETWEEN``, ``[NOT] IN``, ``[NOT] LIKE ... [ESCAPE ...]``, ``IS [NOT] NULL`` and parentheses.

Theory of operation: :func:`make_filter` tokenizes once, parses to a small tree (checking the
type rules Artemis checks when it parses), then compiles that tree into nested closures. A closure
for a boolean node returns ``True``, ``False`` or ``None`` (SQL's unknown); a closure for a value
node returns the value or ``None``. :meth:`Filter.matches` is true only when the root says
``True``. The hot shapes (an identifier against a literal, AND/OR of two operands, LIKE with a
prefix/suffix/infix pattern) get closures of their own, so a typical selector costs a property
look-up and a comparison per term.

Semantics, as Artemis evaluates them (differences are listed at the end):

* A missing property (or one whose value is null) makes a comparison, an arithmetic result, LIKE,
  IN and BETWEEN unknown. ``NOT unknown`` is unknown; ``FALSE AND unknown`` is FALSE; ``TRUE OR
  unknown`` is TRUE. ``IS NULL`` is never unknown.
* Values of different kinds (number, string, boolean, anything else) are never equal and never
  ordered: the comparison is FALSE, not unknown and not an error. Integers and floats compare
  numerically. Artemis also orders two strings or two booleans that come from properties
  (literals of those kinds are refused next to ``<``, ``>``, ``<=``, ``>=`` when parsing).
* ``x IN (...)`` with a non-string ``x`` is unknown; ``x LIKE ...`` with a non-string ``x`` is
  FALSE (so ``NOT LIKE`` is TRUE). ``NOT BETWEEN`` is ``x < low OR x > high``.
* ``/`` and ``%`` work on floats (``7 / 2 = 3.5``; a zero divisor gives an infinity or NaN as in
  Java). ``+`` with a string on its left concatenates. Arithmetic on a non-number cannot be
  evaluated: as in Artemis the whole filter then does not match that message.
* Identifiers are case sensitive, keywords are not. ``"quoted identifiers"`` name properties
  with any characters. The prefix ``hyphenated_props:`` lets identifiers contain ``-`` (and then
  ``a-b`` is an identifier, write ``a - b`` for a subtraction); ``convert_string_expressions:``
  converts strings to numbers or booleans when compared with one (STOMP properties are strings).
* Header identifiers: ``AMQPriority``, ``AMQTimestamp``, ``AMQExpiration``, ``AMQSize``,
  ``AMQAddress``, ``AMQDurable`` (``'DURABLE'``/``'NON_DURABLE'``), ``AMQUserID``,
  ``AMQGroupID``, and the JMS names Artemis translates: ``JMSPriority``, ``JMSTimestamp``,
  ``JMSExpiration``, ``JMSDeliveryMode`` (``'PERSISTENT'``/``'NON_PERSISTENT'``),
  ``JMSMessageID``, ``JMSXGroupID``, plus ``JMSCorrelationID``, ``JMSType``, ``JMSXUserID`` and
  ``JMSXGroupSeq``, which Artemis reads from an AMQP message's properties section. Protocol
  fields come from ``message.extra`` (keys in :data:`PROTOCOL_FIELDS`) or, when the message's codec
  has a ``header_fields(message) -> Mapping`` method, from that. When a header has no value the
  property of the same name is used, as Artemis does.

Deliberate differences from Artemis: ``NOT`` at the head of an operand of AND/OR/the whole
expression has the standard's precedence (``NOT a = 1`` is ``NOT (a = 1)``; Artemis binds it to
``a`` alone, which makes such selectors never match); ``x = y`` with either side null is unknown
on both sides (Artemis: ``'a' = missing`` is FALSE and ``missing = missing`` is TRUE); integer
arithmetic does not wrap at 32/64 bits; ``XPATH``/``XQUERY`` filters are refused.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pybroker.errors import PyBrokerError

__all__ = ["PROTOCOL_FIELDS", "Filter", "FilterError", "make_filter"]

#: Keys a protocol handler may put in ``message.extra`` (or a codec return from
#: ``header_fields``) for the JMS header identifiers that are not core message fields.
PROTOCOL_FIELDS = (
    "message_id",
    "correlation_id",
    "subject",
    "type",
    "user_id",
    "group_id",
    "group_sequence",
    "message_annotations",
)

# Bounds that keep parsing, compiling and evaluating well inside Python's recursion limit:
# parenthesis/unary nesting (each level is ~10 parser frames) and the height of the syntax tree
# (long chains such as a + 1 + 1 + ... are left-deep trees; AND/OR chains are flat).
_MAX_NESTING = 48
_MAX_HEIGHT = 120


class FilterError(PyBrokerError):
    """A filter expression that cannot be parsed.

    ``expression`` is the text as given, ``position`` the 0-based offset of the offending token in
    it and ``reason`` what is wrong; ``str(error)`` names all three (the column is 1-based).
    """

    def __init__(self, reason: str, *, expression: str, position: int) -> None:
        self.reason = reason
        self.expression = expression
        self.position = position
        super().__init__(f"invalid filter {expression!r}: {reason} (at column {position + 1})")


class _EvaluationError(Exception):
    """Arithmetic on a value that is not a number: the filter does not match this message."""


# -- tokens ----------------------------------------------------------------------------------

_KEYWORDS = frozenset(
    {
        "NOT",
        "AND",
        "OR",
        "BETWEEN",
        "LIKE",
        "ESCAPE",
        "IN",
        "IS",
        "TRUE",
        "FALSE",
        "NULL",
        "XPATH",
        "XQUERY",
    }
)

# One alternation tried in order at each position. The number alternatives are ordered so that
# the first to match is also the longest, as JavaCC's longest-match rule picks them in Artemis.
# A '--' comment must end with a line break (in Artemis, '5 --3' is 5 - (-3)).
_TOKEN_TEMPLATE = r"""
 (?P<space>[ \t\n\r\f]+)
|(?P<comment>--[^\n\r]*(?:\r\n|\n|\r)|/\*.*?\*/)
|(?P<float>(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)
|(?P<hex>0[xX][0-9a-fA-F]+)
|(?P<decimal>[1-9][0-9]*[lL]?)
|(?P<octal>0[0-7]*)
|(?P<string>'(?:[^']|'')*')
|(?P<quoted>"(?:[^"]|"")*")
|(?P<identifier>[A-Za-z_$][A-Za-z0-9_$%s]*)
|(?P<operator><>|<=|>=|[=<>()+\-*/%%,])
"""
_STRICT_TOKEN = re.compile(_TOKEN_TEMPLATE % "", re.VERBOSE | re.DOTALL)
_HYPHENATED_TOKEN = re.compile(_TOKEN_TEMPLATE % r"\-", re.VERBOSE | re.DOTALL)

_LONG_MAX = (1 << 63) - 1

_PREFIXES = (
    ("convert_string_expressions:", "convert", True),
    ("hyphenated_props:", "hyphenated", True),
    ("no_convert_string_expressions:", "convert", False),
    ("no_hyphenated_props:", "hyphenated", False),
)


class _Token:
    __slots__ = ("kind", "position", "text", "value")

    def __init__(self, kind: str, value: Any, position: int, text: str) -> None:
        self.kind = kind  # 'NUMBER', 'STRING', 'ID', 'EOF', a keyword or an operator
        self.value = value
        self.position = position
        self.text = text

    def describe(self) -> str:
        if self.kind == "EOF":
            return "end of input"
        if self.kind == "ID":
            return f"identifier {self.text!r}"
        if self.kind in ("NUMBER", "STRING"):
            return f"literal {self.text}"
        return repr(self.text)


def _tokenize(text: str, start: int, hyphenated: bool, expression: str) -> list[_Token]:
    pattern = _HYPHENATED_TOKEN if hyphenated else _STRICT_TOKEN
    tokens: list[_Token] = []
    append = tokens.append
    position = start
    end = len(text)
    while position < end:
        match = pattern.match(text, position)
        if match is None or (match.lastgroup == "quoted" and hyphenated):
            raise FilterError(
                _bad_character(text, position, hyphenated), expression=expression, position=position
            )
        kind = match.lastgroup
        lexeme = match.group()
        if kind == "operator" and lexeme == "/" and text.startswith("/*", position):
            raise FilterError("unterminated comment", expression=expression, position=position)
        if kind == "space" or kind == "comment":
            pass
        elif kind == "identifier":
            upper = lexeme.upper()
            if upper in _KEYWORDS:
                append(_Token(upper, None, position, lexeme))
            else:
                append(_Token("ID", lexeme, position, lexeme))
        elif kind == "string":
            append(_Token("STRING", lexeme[1:-1].replace("''", "'"), position, lexeme))
        elif kind == "quoted":
            append(_Token("ID", lexeme[1:-1].replace('""', '"'), position, lexeme))
        elif kind == "operator":
            append(_Token(lexeme, None, position, lexeme))
        else:
            append(_Token("NUMBER", _number(kind, lexeme, expression, position), position, lexeme))
        position = match.end()
    append(_Token("EOF", None, end, ""))
    return tokens


def _bad_character(text: str, position: int, hyphenated: bool) -> str:
    character = text[position]
    if character == "'":
        return "unterminated string literal"
    if character == '"':
        if hyphenated:
            return "quoted identifiers are not allowed with hyphenated_props:"
        return "unterminated quoted identifier"
    if text.startswith("!=", position):
        return "unknown operator '!=' (use <> for not equal)"
    if text.startswith("==", position):
        return "unknown operator '=='"
    return f"unexpected character {character!r}"


def _number(kind: str, lexeme: str, expression: str, position: int) -> int | float:
    if kind == "float":
        return float(lexeme)
    if kind == "decimal":
        return int(lexeme.rstrip("lL"))
    value = int(lexeme[2:], 16) if kind == "hex" else int(lexeme, 8)
    if value > _LONG_MAX:
        raise FilterError(
            f"integer literal {lexeme} is out of range", expression=expression, position=position
        )
    return value


# -- syntax tree -----------------------------------------------------------------------------

# node kinds
_CONST = "const"
_PROP = "prop"
_NEG = "neg"
_ARITH = "arith"
_CMP = "cmp"
_ISNULL = "isnull"
_LIKE = "like"
_IN = "in"
_BETWEEN = "between"
_AND = "and"
_OR = "or"
_NOT = "not"
_CAST = "cast"

_BOOLEAN_KINDS = frozenset({_CMP, _ISNULL, _LIKE, _IN, _BETWEEN, _AND, _OR, _NOT, _CAST})


class _Node:
    __slots__ = ("args", "height", "kind", "negate", "operator", "position", "value")

    def __init__(
        self,
        kind: str,
        position: int,
        *args: _Node,
        value: Any = None,
        operator: str = "",
        negate: bool = False,
    ) -> None:
        self.kind = kind
        self.position = position
        self.args = args
        # compiling and evaluating recurse once per level: the parser bounds this
        self.height = 1 + max((arg.height for arg in args), default=0)
        self.value = value
        self.operator = operator
        self.negate = negate

    @property
    def is_boolean(self) -> bool:
        """An Artemis BooleanExpression: predicates and the TRUE/FALSE/NULL literals."""
        if self.kind == _CONST:
            return self.value is None or self.value is True or self.value is False
        return self.kind in _BOOLEAN_KINDS


class _Parser:
    """Recursive descent over the token list; one method per precedence level.

    or -> and -> not -> equality (= <> IS) -> comparison (< > LIKE BETWEEN IN) -> additive ->
    multiplicative -> unary (+ - NOT) -> primary. The `not` level gives NOT its standard precedence;
    a NOT met where an operand of an operator is expected (``a = NOT b``) binds as in Artemis.
    """

    def __init__(self, tokens: list[_Token], expression: str) -> None:
        self.tokens = tokens
        self.index = 0
        self.expression = expression
        self.depth = 0

    # helpers
    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def error(self, reason: str, position: int) -> FilterError:
        return FilterError(reason, expression=self.expression, position=position)

    def expect(self, kind: str, what: str) -> _Token:
        token = self.peek()
        if token.kind != kind:
            raise self.error(f"expected {what}, found {token.describe()}", token.position)
        return self.advance()

    def node(self, kind: str, position: int, *args: _Node, **fields: Any) -> _Node:
        created = _Node(kind, position, *args, **fields)
        if created.height > _MAX_HEIGHT:
            raise self.error(f"expression nested deeper than {_MAX_HEIGHT} levels", position)
        return created

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise self.error(f"expression nested deeper than {_MAX_NESTING} levels", token.position)

    def as_boolean(self, node: _Node, position: int) -> _Node:
        if node.is_boolean:
            return node
        if node.kind == _PROP:
            return self.node(_CAST, node.position, node)
        raise self.error("this expression does not produce a boolean value", position)

    # grammar
    def selector(self) -> _Node:
        first = self.peek()
        if first.kind == "EOF":
            raise self.error("the filter is empty", first.position)
        node = self.or_expression()
        token = self.peek()
        if token.kind != "EOF":
            if token.kind == ")":
                raise self.error("unbalanced ')'", token.position)
            raise self.error(f"unexpected {token.describe()}", token.position)
        return self.as_boolean(node, first.position)

    def or_expression(self) -> _Node:
        start = self.peek().position
        left = self.and_expression()
        if self.peek().kind != "OR":
            return left
        operands = [self.as_boolean(left, start)]
        while self.peek().kind == "OR":
            self.advance()
            start = self.peek().position
            operands.append(self.as_boolean(self.and_expression(), start))
        return self.node(_OR, left.position, *operands)

    def and_expression(self) -> _Node:
        start = self.peek().position
        left = self.not_expression()
        if self.peek().kind != "AND":
            return left
        operands = [self.as_boolean(left, start)]
        while self.peek().kind == "AND":
            self.advance()
            start = self.peek().position
            operands.append(self.as_boolean(self.not_expression(), start))
        return self.node(_AND, left.position, *operands)

    def not_expression(self) -> _Node:
        token = self.peek()
        if token.kind != "NOT":
            return self.equality()
        self.advance()
        self.nest(token)
        start = self.peek().position
        operand = self.not_expression()
        self.depth -= 1
        return self.node(_NOT, token.position, self.as_boolean(operand, start))

    def equality(self) -> _Node:
        left = self.comparison()
        while True:
            token = self.peek()
            if token.kind == "=" or token.kind == "<>":
                self.advance()
                right = self.comparison()
                left = self.make_equal(token, left, right)
            elif token.kind == "IS":
                self.advance()
                negate = False
                if self.peek().kind == "NOT":
                    self.advance()
                    negate = True
                self.expect("NULL", "NULL after IS" + (" NOT" if negate else ""))
                left = self.node(_ISNULL, token.position, left, negate=negate)
            else:
                return left

    def make_equal(self, token: _Token, left: _Node, right: _Node) -> _Node:
        for operand in (left, right):
            if operand.kind == _CONST and operand.value is None:
                raise self.error(
                    f"NULL cannot be compared with '{token.kind}' (use IS NULL / IS NOT NULL)",
                    token.position,
                )
        if (
            left.kind == _CONST
            and right.kind == _CONST
            and left.is_boolean
            and not right.is_boolean
        ):
            raise self.error(
                f"a boolean literal cannot be compared with {right.value!r}", token.position
            )
        return self.node(_CMP, token.position, left, right, operator=token.kind)

    def check_ordered(self, token: _Token, operand: _Node) -> None:
        if operand.kind == _CONST:
            value = operand.value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return
            literal = (
                "NULL" if value is None else "a boolean" if isinstance(value, bool) else "a string"
            )
            raise self.error(
                f"{literal} literal cannot be used with '{token.text.upper()}' (numbers only)",
                token.position,
            )
        if operand.is_boolean:
            raise self.error(
                f"a boolean expression cannot be used with '{token.text.upper()}'", token.position
            )

    def comparison(self) -> _Node:
        left = self.additive()
        while True:
            token = self.peek()
            kind = token.kind
            negate = False
            if kind == "NOT" and self.peek(1).kind in ("LIKE", "BETWEEN", "IN"):
                self.advance()
                negate = True
                token = self.peek()
                kind = token.kind
            if kind in ("<", "<=", ">", ">="):
                self.advance()
                right = self.additive()
                self.check_ordered(token, left)
                self.check_ordered(token, right)
                left = self.node(_CMP, token.position, left, right, operator=kind)
            elif kind == "LIKE":
                self.advance()
                pattern = self.expect("STRING", "a string literal pattern after LIKE").value
                escape = None
                if self.peek().kind == "ESCAPE":
                    self.advance()
                    escape_token = self.expect("STRING", "a string literal after ESCAPE")
                    escape = escape_token.value
                    if len(escape) != 1:
                        raise self.error(
                            f"the ESCAPE literal must be one character, not {escape_token.text}",
                            escape_token.position,
                        )
                left = self.node(
                    _LIKE, token.position, left, value=(pattern, escape), negate=negate
                )
            elif kind == "BETWEEN":
                self.advance()
                low = self.additive()
                self.expect("AND", "AND in BETWEEN")
                high = self.additive()
                for operand in (left, low, high):
                    self.check_ordered(token, operand)
                left = self.node(_BETWEEN, token.position, left, low, high, negate=negate)
            elif kind == "IN":
                self.advance()
                if left.kind != _PROP:
                    raise self.error("IN needs an identifier on its left", token.position)
                self.expect("(", "'(' after IN")
                values = [self.in_element()]
                while self.peek().kind == ",":
                    self.advance()
                    values.append(self.in_element())
                self.expect(")", "',' or ')' in the IN list")
                left = self.node(_IN, token.position, left, value=frozenset(values), negate=negate)
            else:
                return left

    def in_element(self) -> str:
        token = self.peek()
        if token.kind != "STRING":
            raise self.error(
                f"IN lists hold string literals, found {token.describe()}", token.position
            )
        self.advance()
        return token.value

    def additive(self) -> _Node:
        left = self.multiplicative()
        while self.peek().kind in ("+", "-"):
            token = self.advance()
            right = self.multiplicative()
            left = self.node(_ARITH, token.position, left, right, operator=token.kind)
        return left

    def multiplicative(self) -> _Node:
        left = self.unary()
        while self.peek().kind in ("*", "/", "%"):
            token = self.advance()
            right = self.unary()
            left = self.node(_ARITH, token.position, left, right, operator=token.kind)
        return left

    def unary(self) -> _Node:
        token = self.peek()
        kind = token.kind
        if kind == "+" or kind == "-" or kind == "NOT":
            self.advance()
            self.nest(token)
            start = self.peek().position
            operand = self.unary()
            self.depth -= 1
            if kind == "+":
                return operand  # Artemis returns the operand itself: +x is still an identifier
            if kind == "-":
                if operand.kind == _CONST and _is_number(operand.value):
                    return self.node(_CONST, token.position, value=-operand.value)
                return self.node(_NEG, token.position, operand)
            return self.node(_NOT, token.position, self.as_boolean(operand, start))
        return self.primary()

    def primary(self) -> _Node:
        token = self.advance()
        kind = token.kind
        if kind == "ID":
            return self.node(_PROP, token.position, value=token.value)
        if kind == "NUMBER" or kind == "STRING":
            return self.node(_CONST, token.position, value=token.value)
        if kind == "TRUE":
            return self.node(_CONST, token.position, value=True)
        if kind == "FALSE":
            return self.node(_CONST, token.position, value=False)
        if kind == "NULL":
            return self.node(_CONST, token.position, value=None)
        if kind == "(":
            self.nest(token)
            inner = self.or_expression()
            self.depth -= 1
            closing = self.peek()
            if closing.kind != ")":
                raise self.error(
                    f"expected ')' to close the '(' at column {token.position + 1}, "
                    f"found {closing.describe()}",
                    closing.position,
                )
            self.advance()
            return inner
        if kind == "XPATH" or kind == "XQUERY":
            raise self.error(f"{kind} filters are not supported", token.position)
        self.index -= 1
        raise self.error(f"expected an operand, found {token.describe()}", token.position)


# -- values ----------------------------------------------------------------------------------

_OTHER, _NUMBER, _STRING, _BOOLEAN = 0, 1, 2, 3


def _kind(value: Any) -> int:
    cls = value.__class__
    if cls is str:
        return _STRING
    if cls is int or cls is float:
        return _NUMBER
    if cls is bool:
        return _BOOLEAN
    if isinstance(value, str):
        return _STRING
    if isinstance(value, int | float):
        return _NUMBER
    return _OTHER


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_JAVA_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_JAVA_DOUBLE = re.compile(
    r"[+-]?(?:NaN|Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?)\Z"
)


def _string_to_kind(text: str, kind: int, like: Any) -> Any:
    """convert_string_expressions: ``text`` as a value of ``like``'s kind, or None (FALSE)."""
    if kind == _BOOLEAN:
        return text.lower() == "true"  # Boolean.valueOf
    if kind == _NUMBER:
        if isinstance(like, float):
            stripped = text.strip(" \t\n\r\f\v\x00")
            if _JAVA_DOUBLE.match(stripped):
                return float(stripped.rstrip("fFdD").replace("Infinity", "inf"))
            return None
        if _JAVA_INTEGER.match(text):
            return int(text)
    return None


def _comparable(x: Any, y: Any, convert: bool) -> tuple[Any, Any] | None:
    """The pair to compare, promoted or converted, or None when the kinds do not compare."""
    kind_x = _kind(x)
    kind_y = _kind(y)
    if kind_x == kind_y:
        if kind_x == _OTHER and x.__class__ is not y.__class__:
            return None
        return x, y
    if not convert:
        return None
    if kind_y == _STRING:
        converted = _string_to_kind(y, kind_x, x)
        return None if converted is None else (x, converted)
    if kind_x == _STRING:
        converted = _string_to_kind(x, kind_y, y)
        return None if converted is None else (converted, y)
    return None


def _compare(op: Callable[[Any, Any], bool], x: Any, y: Any, convert: bool) -> bool:
    pair = _comparable(x, y, convert)
    if pair is None:
        return False
    try:
        return bool(op(pair[0], pair[1]))
    except TypeError:  # two objects of a kind that has no order
        return False


def _as_number(value: Any, convert: bool) -> int | float:
    if _is_number(value):
        return value
    if convert and isinstance(value, str):
        if "." in value:
            converted = _string_to_kind(value, _NUMBER, 0.0)
        else:
            converted = _string_to_kind(value, _NUMBER, 0)
        if converted is not None:
            return converted
    raise _EvaluationError(f"{value!r} is not a number")


def _java_string(value: Any) -> str:
    """How Java's String concatenation renders ``value`` (for ``'text' + value``)."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        magnitude = abs(value)
        if value == 0 or 1e-3 <= magnitude < 1e7:
            return float.__repr__(value)
        digits, exponent = _shortest_digits(magnitude)
        sign = "-" if value < 0 else ""
        return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exponent}"
    if isinstance(value, int):
        return int.__repr__(value)
    return str(value)


def _shortest_digits(magnitude: float) -> tuple[str, int]:
    """The shortest round-trip digits of a positive float and its decimal exponent (d.ddd x 10^e)."""
    _sign, digit_tuple, exponent = Decimal(float.__repr__(magnitude)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    return digits, len(digits) - 1 + int(exponent)


def _divide(x: int | float, y: int | float) -> float:
    try:
        return float(x) / float(y)
    except ZeroDivisionError:
        x = float(x)
        if x != x or x == 0:
            return math.nan
        return math.copysign(math.inf, x) * math.copysign(1.0, float(y))
    except OverflowError as error:
        raise _EvaluationError(str(error)) from None


def _modulo(x: int | float, y: int | float) -> float:
    try:
        return math.fmod(float(x), float(y))
    except ValueError:  # zero divisor or infinite dividend: NaN in Java
        return math.nan
    except OverflowError as error:
        raise _EvaluationError(str(error)) from None


def _arithmetic(symbol: str, convert: bool) -> Callable[[Any, Any], Any]:
    """The operation for ``symbol`` on two non-null values (raises _EvaluationError)."""
    if symbol == "+":

        def plus(x: Any, y: Any) -> Any:
            if isinstance(x, str):
                return x + _java_string(y)
            return _as_number(x, convert) + _as_number(y, convert)

        return plus
    if symbol == "-":
        return lambda x, y: _as_number(x, convert) - _as_number(y, convert)
    if symbol == "*":
        return lambda x, y: _as_number(x, convert) * _as_number(y, convert)
    if symbol == "/":
        return lambda x, y: _divide(_as_number(x, convert), _as_number(y, convert))
    return lambda x, y: _modulo(_as_number(x, convert), _as_number(y, convert))


# -- header identifiers ----------------------------------------------------------------------


def _protocol_field(message: Any, key: str) -> Any:
    extra = message.extra
    if extra:
        value = extra.get(key)
        if value is not None:
            return value
    reader = getattr(message.codec, "header_fields", None)
    if reader is None:
        return None
    fields = reader(message)
    return fields.get(key) if fields else None


def _jms_message_id(raw: Any) -> Any:
    # Artemis's AMQUserID: the id as a string, with "ID:" in front unless it has one
    if raw is None:
        return None
    if isinstance(raw, bytes | bytearray | memoryview):
        text = bytes(raw).hex().upper()
    elif isinstance(raw, int):
        text = int.__repr__(raw)  # typed ints (AMQP ulong) print as plain numbers
    else:
        text = str(raw)
    return text if text.startswith("ID:") else "ID:" + text


_AMQP_ID_PREFIXES = ("AMQP_STRING:", "AMQP_UUID:", "AMQP_ULONG:", "AMQP_BINARY:", "AMQP_NO_PREFIX:")


def _jms_correlation_id(raw: Any) -> Any:
    # AMQP correlation-id as Artemis exposes it to a selector (AMQPMessageIdHelper)
    if raw is None or isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        if raw.startswith("ID:") and raw.startswith(_AMQP_ID_PREFIXES, 3):
            return "ID:AMQP_STRING:" + raw
        return raw
    if isinstance(raw, int):
        return "ID:AMQP_ULONG:" + int.__repr__(raw)
    return f"ID:AMQP_UUID:{raw}"


def _text(raw: Any) -> Any:
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("utf-8", errors="replace")
    return raw


def _with_fallback(name: str, header: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def getter(message: Any) -> Any:
        value = header(message)
        if value is None:
            return message.get_property(name)
        return value

    return getter


def _field_getter(
    name: str, key: str, convert: Callable[[Any], Any] | None
) -> Callable[[Any], Any]:
    if convert is None:
        return _with_fallback(name, lambda message: _protocol_field(message, key))
    return _with_fallback(name, lambda message: convert(_protocol_field(message, key)))


def _type_field(message: Any) -> Any:
    value = _protocol_field(message, "subject")
    return _protocol_field(message, "type") if value is None else value


def _annotation_getter(name: str) -> Callable[[Any], Any]:
    key = name[2:]

    def annotation(message: Any) -> Any:
        annotations = _protocol_field(message, "message_annotations")
        return annotations.get(key) if annotations else None

    return _with_fallback(name, annotation)


_HEADERS: dict[str, Callable[[str], Callable[[Any], Any]]] = {
    "AMQPriority": lambda name: operator.attrgetter("priority"),
    "JMSPriority": lambda name: operator.attrgetter("priority"),
    "AMQTimestamp": lambda name: operator.attrgetter("timestamp"),
    "JMSTimestamp": lambda name: operator.attrgetter("timestamp"),
    "AMQExpiration": lambda name: operator.attrgetter("expiration"),
    "JMSExpiration": lambda name: operator.attrgetter("expiration"),
    "AMQSize": lambda name: operator.attrgetter("size"),
    "AMQAddress": lambda name: _with_fallback(name, operator.attrgetter("address")),
    "AMQDurable": lambda name: lambda message: "DURABLE" if message.durable else "NON_DURABLE",
    "JMSDeliveryMode": lambda name: (
        lambda message: "PERSISTENT" if message.durable else "NON_PERSISTENT"
    ),
    "AMQUserID": lambda name: _field_getter(name, "message_id", _jms_message_id),
    "JMSMessageID": lambda name: _field_getter(name, "message_id", _jms_message_id),
    "AMQGroupID": lambda name: _field_getter(name, "group_id", None),
    "JMSXGroupID": lambda name: _field_getter(name, "group_id", None),
    "JMSXGroupSeq": lambda name: _field_getter(name, "group_sequence", None),
    "JMSCorrelationID": lambda name: _field_getter(name, "correlation_id", _jms_correlation_id),
    "JMSType": lambda name: _with_fallback(name, _type_field),
    "JMSXUserID": lambda name: _field_getter(name, "user_id", _text),
}


def _getter(name: str) -> Callable[[Any], Any]:
    factory = _HEADERS.get(name)
    if factory is not None:
        return factory(name)
    if name.startswith("m."):
        return _annotation_getter(name)

    def get_property(message: Any) -> Any:
        return message.get_property(name)

    return get_property


# -- compiler --------------------------------------------------------------------------------

_ORDER = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "<>": "<>"}

Evaluator = Callable[[Any], Any]


class _Compiler:
    def __init__(self, convert: bool) -> None:
        self.convert = convert
        self.identifiers: set[str] = set()

    def fold(self, node: _Node) -> _Node:
        """``node`` with arithmetic on literals computed (``x > 60 * 1000`` keeps its fast path)."""
        if node.kind == _NEG:
            operand = self.fold(node.args[0])
            if operand.kind == _CONST and _is_number(operand.value):
                return _Node(_CONST, node.position, value=-operand.value)
        elif node.kind == _ARITH:
            left = self.fold(node.args[0])
            right = self.fold(node.args[1])
            if left.kind == _CONST and right.kind == _CONST:
                if left.value is not None and right.value is not None:
                    try:
                        result = _arithmetic(node.operator, self.convert)(left.value, right.value)
                    except _EvaluationError:
                        pass  # fails for every message: left to evaluation time
                    else:
                        return _Node(_CONST, node.position, value=result)
        return node

    # values: a node -> callable(message) -> value or None
    def value(self, node: _Node) -> Evaluator:
        kind = node.kind
        if kind == _CONST:
            constant = node.value
            return lambda message: constant
        if kind == _PROP:
            self.identifiers.add(node.value)
            return _getter(node.value)
        if kind == _NEG:
            return self.negate(node)
        if kind == _ARITH:
            return self.arithmetic(node)
        return self.boolean(node)

    def negate(self, node: _Node) -> Evaluator:
        operand = self.value(node.args[0])

        def negate(message: Any) -> Any:
            value = operand(message)
            if value is None or not _is_number(value):
                return None  # Artemis: unknown, not an error
            return -value

        return negate

    def arithmetic(self, node: _Node) -> Evaluator:
        folded = self.fold(node)
        if folded.kind == _CONST:
            constant = folded.value
            return lambda message: constant
        left_node, right_node = node.args
        operation = _arithmetic(node.operator, self.convert)
        left = self.value(left_node)
        right = self.value(right_node)

        def arithmetic(message: Any) -> Any:
            x = left(message)
            if x is None:
                return None
            y = right(message)
            if y is None:
                return None
            return operation(x, y)

        return arithmetic

    # booleans: a node -> callable(message) -> True / False / None
    def boolean(self, node: _Node) -> Evaluator:
        kind = node.kind
        if kind == _CONST:
            constant = node.value
            return lambda message: constant
        if kind == _CMP:
            return self.comparison(node.operator, node.args[0], node.args[1])
        if kind == _AND or kind == _OR:
            return self.logic(node)
        if kind == _NOT:
            operand = self.boolean(node.args[0])

            def negation(message: Any) -> Any:
                result = operand(message)
                return None if result is None else result is False

            return negation
        if kind == _CAST:
            get = self.value(node.args[0])

            def cast(message: Any) -> Any:
                value = get(message)
                if value is None or value is True or value is False:
                    return value
                return False

            return cast
        if kind == _ISNULL:
            get = self.value(node.args[0])
            if node.negate:
                return lambda message: get(message) is not None
            return lambda message: get(message) is None
        if kind == _LIKE:
            return self.like(node)
        if kind == _IN:
            return self.membership(node)
        if kind == _BETWEEN:
            return self.between(node)
        raise AssertionError(f"not a boolean node: {kind}")  # the parser guarantees it

    def logic(self, node: _Node) -> Evaluator:
        operands = [self.boolean(child) for child in _flattened(node)]
        return _and_of(operands) if node.kind == _AND else _or_of(operands)

    def comparison(self, symbol: str, left_node: _Node, right_node: _Node) -> Evaluator:
        left_node = self.fold(left_node)
        right_node = self.fold(right_node)
        if left_node.kind == _CONST and right_node.kind != _CONST:
            left_node, right_node = right_node, left_node
            symbol = _FLIPPED[symbol]
        if left_node.kind == _CONST:  # two literals: fold
            result = _compare(
                _ORDER["=" if symbol == "<>" else symbol],
                left_node.value,
                right_node.value,
                self.convert,
            )
            constant = (not result) if symbol == "<>" else result
            return lambda message: constant
        get = self.value(left_node)
        negate = symbol == "<>"
        op = _ORDER["=" if negate else symbol]
        if right_node.kind == _CONST and not self.convert:
            return _compare_constant(get, op, right_node.value, negate)
        other = self.value(right_node)
        convert = self.convert

        def compare(message: Any) -> Any:
            x = get(message)
            if x is None:
                return None
            y = other(message)
            if y is None:
                return None
            return _compare(op, x, y, convert) is not negate

        return compare

    def like(self, node: _Node) -> Evaluator:
        get = self.value(node.args[0])
        pattern, escape = node.value
        test = _like_test(pattern, escape)
        negate = node.negate

        def like(message: Any) -> Any:
            value = get(message)
            if value is None:
                return None
            if value.__class__ is not str and not isinstance(value, str):
                return negate
            return test(value) is not negate

        return like

    def membership(self, node: _Node) -> Evaluator:
        get = self.value(node.args[0])
        values: frozenset[str] = node.value
        negate = node.negate

        def membership(message: Any) -> Any:
            value = get(message)
            if value is None or (value.__class__ is not str and not isinstance(value, str)):
                return None  # Artemis: a non-string is unknown for IN and NOT IN
            return (value in values) is not negate

        return membership

    def between(self, node: _Node) -> Evaluator:
        value_node, low_node, high_node = (self.fold(child) for child in node.args)
        if (
            low_node.kind == _CONST
            and high_node.kind == _CONST
            and _is_number(low_node.value)
            and _is_number(high_node.value)
            and value_node.kind != _CONST
            and not self.convert
        ):
            get = self.value(value_node)
            low = low_node.value
            high = high_node.value
            if node.negate:

                def not_between(message: Any) -> Any:
                    value = get(message)
                    if value is None:
                        return None
                    if value.__class__ is int or value.__class__ is float or _is_number(value):
                        return value < low or value > high
                    return False

                return not_between

            def between(message: Any) -> Any:
                value = get(message)
                if value is None:
                    return None
                if value.__class__ is int or value.__class__ is float or _is_number(value):
                    return low <= value <= high
                return False

            return between
        # the general case is what Artemis builds: (v >= low AND v <= high), or its negation
        if node.negate:
            return _or_of(
                [
                    self.comparison("<", value_node, low_node),
                    self.comparison(">", value_node, high_node),
                ]
            )
        return _and_of(
            [
                self.comparison(">=", value_node, low_node),
                self.comparison("<=", value_node, high_node),
            ]
        )


def _flattened(node: _Node) -> list[_Node]:
    """The operands of an AND (OR), with nested ANDs (ORs) from parentheses merged in."""
    operands: list[_Node] = []
    for child in node.args:
        if child.kind == node.kind:
            operands.extend(_flattened(child))
        else:
            operands.append(child)
    return operands


def _compare_constant(
    get: Evaluator, op: Callable[[Any, Any], bool], constant: Any, negate: bool
) -> Evaluator:
    """identifier-or-expression <op> literal: the hot path of most selectors."""
    if isinstance(constant, str):
        if op is operator.eq:

            def compare_string(message: Any) -> Any:
                value = get(message)
                if value is None:
                    return None
                return (value == constant) is not negate

            return compare_string

        def order_string(message: Any) -> Any:  # a folded 'a' + 'b' next to < (rare)
            value = get(message)
            if value is None:
                return None
            return isinstance(value, str) and op(value, constant)

        return order_string
    if constant is True or constant is False:

        def compare_boolean(message: Any) -> Any:
            value = get(message)
            if value is None:
                return None
            return (value is constant) is not negate

        return compare_boolean

    def compare_number(message: Any) -> Any:
        value = get(message)
        if value is None:
            return None
        cls = value.__class__
        if cls is int or cls is float or (cls is not bool and isinstance(value, int | float)):
            return op(value, constant) is not negate
        return negate

    return compare_number


def _and_of(operands: list[Evaluator]) -> Evaluator:
    if len(operands) == 2:
        first, second = operands

        def and_two(message: Any) -> Any:
            a = first(message)
            if a is False:
                return False
            b = second(message)
            if b is False:
                return False
            return None if (a is None or b is None) else True

        return and_two

    def and_all(message: Any) -> Any:
        result: Any = True
        for operand in operands:
            value = operand(message)
            if value is False:
                return False
            if value is None:
                result = None
        return result

    return and_all


def _or_of(operands: list[Evaluator]) -> Evaluator:
    if len(operands) == 2:
        first, second = operands

        def or_two(message: Any) -> Any:
            a = first(message)
            if a is True:
                return True
            b = second(message)
            if b is True:
                return True
            return None if (a is None or b is None) else False

        return or_two

    def or_all(message: Any) -> Any:
        result: Any = False
        for operand in operands:
            value = operand(message)
            if value is True:
                return True
            if value is None:
                result = None
        return result

    return or_all


def _like_test(pattern: str, escape: str | None) -> Callable[[str], bool]:
    """A predicate on strings for a LIKE pattern (escape rules as Artemis applies them).

    The escape character escapes only ``_``, ``%`` and itself; before anything else (or at the
    end) it is an ordinary character, or a wildcard if it is one.
    """
    literal: list[str] = []
    pieces: list[tuple[str, str]] = []  # ("text", s) | ("one", "") | ("any", "")
    index = 0
    length = len(pattern)
    while index < length:
        character = pattern[index]
        if character == escape and index + 1 < length and pattern[index + 1] in ("_", "%", escape):
            literal.append(pattern[index + 1])
            index += 2
            continue
        if character == "%" or character == "_":
            if literal:
                pieces.append(("text", "".join(literal)))
                literal = []
            if not (character == "%" and pieces and pieces[-1][0] == "any"):
                pieces.append(("any" if character == "%" else "one", ""))
        else:
            literal.append(character)
        index += 1
    if literal:
        pieces.append(("text", "".join(literal)))
    shape = tuple(kind for kind, _ in pieces)
    texts = [text for kind, text in pieces if kind == "text"]
    if shape == ():
        return lambda value: value == ""
    if shape == ("text",):
        exact = texts[0]
        return lambda value: value == exact
    if shape == ("any",):
        return lambda value: True
    if shape == ("text", "any"):
        prefix = texts[0]
        return lambda value: value.startswith(prefix)
    if shape == ("any", "text"):
        suffix = texts[0]
        return lambda value: value.endswith(suffix)
    if shape == ("any", "text", "any"):
        infix = texts[0]
        return lambda value: infix in value
    regex = "".join(
        re.escape(text) if kind == "text" else ("." if kind == "one" else ".*")
        for kind, text in pieces
    )
    fullmatch = re.compile(regex, re.DOTALL).fullmatch
    return lambda value: fullmatch(value) is not None


# -- public API ------------------------------------------------------------------------------


class Filter:
    """A compiled filter expression. Immutable; safe to share between queues and consumers."""

    __slots__ = ("_evaluate", "expression", "identifiers")

    def __init__(self, expression: str, evaluate: Evaluator, identifiers: frozenset[str]) -> None:
        self.expression = expression
        #: the identifiers the expression reads (property and header names)
        self.identifiers = identifiers
        self._evaluate = evaluate

    def matches(self, message: Any) -> bool:
        """True when the expression is TRUE for ``message`` (FALSE and unknown do not match)."""
        try:
            return self._evaluate(message) is True
        except _EvaluationError:
            return False

    def evaluate(self, message: Any) -> bool | None:
        """The three-valued result: True, False, or None for unknown (or not computable)."""
        try:
            return self._evaluate(message)
        except _EvaluationError:
            return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filter) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(self.expression)

    def __repr__(self) -> str:
        return f"Filter({self.expression!r})"


def make_filter(expression: str) -> Filter:
    """Compile an Artemis filter expression (or JMS selector) into a :class:`Filter`.

    Raises :class:`FilterError` naming the expression and the position for a syntax error, a type
    error Artemis detects when parsing (``a > 'x'``, ``3 + 5`` as a whole filter, ``x = NULL``), or
    an empty expression (callers treat empty and blank filters as "no filter" before this).
    """
    if not isinstance(expression, str):
        raise TypeError(f"a filter expression is a str, not {type(expression).__name__}")
    start = len(expression) - len(expression.lstrip())
    options = {"convert": False, "hyphenated": False}
    progress = True
    while progress:
        progress = False
        for prefix, option, enabled in _PREFIXES:
            if expression.startswith(prefix, start):
                options[option] = enabled
                start += len(prefix)
                progress = True
    tokens = _tokenize(expression, start, options["hyphenated"], expression)
    parser = _Parser(tokens, expression)
    try:
        tree = parser.selector()
    except RecursionError:
        raise FilterError(
            "expression nested too deeply", expression=expression, position=start
        ) from None
    compiler = _Compiler(options["convert"])
    evaluate = compiler.boolean(tree)
    return Filter(expression, evaluate, frozenset(compiler.identifiers))
