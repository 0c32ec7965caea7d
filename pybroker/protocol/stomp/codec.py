"""Sans-I/O STOMP 1.0 / 1.1 / 1.2 codec for the broker side.

Feed bytes with :meth:`StompCodec.receive_data`, pull events with
:meth:`StompCodec.next_event` (a :class:`Frame`, a :class:`HeartBeat` or :data:`NEED_DATA`),
turn frames into bytes with :meth:`StompCodec.send`. No sockets, no clocks.

Theory of operation. The wire format is ``COMMAND EOL *(header EOL) EOL body NUL *EOL``.
The decoder keeps one buffer and the offset ``_pos`` of the first byte not yet consumed, and
moves through three states:

* ``_BETWEEN``: at a frame boundary. Each EOL (LF or CRLF) here is one heart-beat event, so
  the EOLs a peer may write after a NUL come out as heart-beats too. Any other byte starts a
  frame.
* ``_HEAD``: looking for the line feeds of the command and header lines. Lines are only cut
  out here; the header text is decoded when the blank line arrives, with the version current
  at that moment. Because nothing is parsed before ``next_event`` asks, a version switched
  with :meth:`StompCodec.set_version` right after the CONNECT frame applies to every later
  frame, even one already buffered.
* ``_BODY``: exactly ``content-length`` bytes then a NUL, or, without that header, everything
  up to the first NUL.

Scans resume where the previous call stopped, so input fed one byte at a time costs linear
time, and the events do not depend on how the input was split (one event per EOL between
frames; coalescing heart-beats would have made them depend on it). Each ``next_event`` checks
the limits against a lower bound of the frame's size from what is buffered, so an oversized
frame (or a line that cannot start a command) fails before it is complete. The first error is remembered: the codec then refuses all
further input, because after a framing error the position of the next frame is unknown.

Version rules (STOMP specification, "Value Encoding"; Artemis's decoders agree):

* 1.0: no escapes; leading spaces and tabs of header values are dropped, as Artemis does.
* 1.1: ``\\n`` ``\\c`` ``\\\\``; any other escape is a fatal error.
* 1.2: also ``\\r``; values are never trimmed; a bare CR in a frame head is an error.
* CONNECT, STOMP and CONNECTED frames are never escaped (the CONNECT arrives while the codec
  still speaks 1.0, so its values are trimmed like Artemis's 1.0 decoder does).
* CRLF is accepted as end of line in every version (a 1.2 client's CONNECT arrives before
  the version is known). Repeated ``content-length`` headers must agree.
"""

from __future__ import annotations

import enum
import re
from typing import Literal

from pybroker.protocol.stomp.frames import (
    CLIENT_COMMANDS,
    COMMANDS,
    HEART_BEAT,
    SERVER_COMMANDS,
    UNESCAPED_COMMANDS,
    VERSIONS,
    Frame,
    HeartBeat,
    StompEncodingError,
    StompProtocolError,
    UnsupportedVersionError,
)


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


NEED_DATA = _Sentinel.NEED_DATA
"""Returned by :meth:`StompCodec.next_event` when the buffered input holds no whole event."""

Event = Frame | HeartBeat
NeedData = Literal[_Sentinel.NEED_DATA]

_LF = 0x0A
_CR = 0x0D

_COMMAND_BY_BYTES: dict[bytes, str] = {command.encode("ascii"): command for command in COMMANDS}
# Every non-empty prefix of "COMMAND" and "COMMAND\r": lets the decoder reject a bad command
# (an HTTP request, binary noise) before its line feed arrives.
_COMMAND_PREFIXES: frozenset[bytes] = frozenset(
    word[:length]
    for command in _COMMAND_BY_BYTES
    for word in (command, command + b"\r")
    for length in range(1, len(word) + 1)
)
_LONGEST_COMMAND_LINE = max(len(command) for command in _COMMAND_BY_BYTES) + 1

_UNESCAPE_11 = {"n": "\n", "c": ":", "\\": "\\"}
_UNESCAPE_12 = {"n": "\n", "c": ":", "\\": "\\", "r": "\r"}
_ESCAPE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c"})
_ESCAPE_12 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r"})
# A header text that needs escaping (the slow path of StompCodec.send).
_NEEDS_ESCAPE = re.compile(r"[\\\n\r:]").search

_BETWEEN = 0
_HEAD = 1
_BODY = 2

# Java's Long.MAX_VALUE: Artemis parses heart-beat values as longs.
_MAX_HEART_BEAT = 2**63 - 1


def _frame_name(command: str | None) -> str:
    return f"STOMP {command} frame" if command else "STOMP frame"


def _unescape(text: str, table: dict[str, str], command: str, line_number: int) -> str:
    if "\\" not in text:
        return text
    pieces: list[str] = []
    start = 0
    while True:
        slash = text.find("\\", start)
        if slash < 0:
            pieces.append(text[start:])
            return "".join(pieces)
        pieces.append(text[start:slash])
        if slash + 1 == len(text):
            raise StompProtocolError(
                f"{_frame_name(command)}: header line {line_number} ends with a lone backslash"
            )
        replacement = table.get(text[slash + 1])
        if replacement is None:
            raise StompProtocolError(
                f"{_frame_name(command)}: header line {line_number} has the undefined escape "
                f"sequence {text[slash : slash + 2]!r}"
            )
        pieces.append(replacement)
        start = slash + 2


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_content_length(value: str, command: str) -> int:
    if not value or not value.isascii() or not value.isdigit():
        raise StompProtocolError(f"{_frame_name(command)}: bad content-length {value[:40]!r}")
    if len(value) > 19:
        # More than any frame limit, and int() refuses very long digit strings anyway.
        raise StompProtocolError(
            f"{_frame_name(command)}: content-length {value[:40]}... is too large"
        )
    return int(value)


def _escaped_head(parts: list[str], command: str, table: dict[int, str]) -> str:
    """:meth:`StompCodec.send`'s head when some header needs escaping: ``parts`` is the command
    line, then name, ':', value, LF for each header, then the blank line."""
    escaped = parts[:2]
    for index in range(2, len(parts) - 1, 4):
        name, value = parts[index], parts[index + 2]
        if _NEEDS_ESCAPE(name) is not None or _NEEDS_ESCAPE(value) is not None:
            if table is _ESCAPE_11 and ("\r" in name or "\r" in value):
                raise StompEncodingError(
                    f"{_frame_name(command)}: header {name!r} holds a carriage return, "
                    "which STOMP 1.1 cannot escape"
                )
            name = name.translate(table)
            value = value.translate(table)
        escaped += (name, ":", value, "\n")
    escaped.append("\n")
    return "".join(escaped)


class StompCodec:
    """Bytes to STOMP events and frames to bytes, for one connection, broker side.

    ``max_frame_size`` bounds a whole frame (command line through NUL), ``max_headers`` the
    number of header lines, ``max_header_length`` each header line in bytes (without its EOL).
    Exceeding one raises :class:`StompProtocolError`.
    """

    def __init__(
        self,
        max_frame_size: int = 10 * 1024 * 1024,
        max_headers: int = 1000,
        max_header_length: int = 10240,
    ) -> None:
        for name, limit in (
            ("max_frame_size", max_frame_size),
            ("max_headers", max_headers),
            ("max_header_length", max_header_length),
        ):
            if not isinstance(limit, int) or limit < 1:
                raise ValueError(f"StompCodec {name} must be a positive integer, not {limit!r}")
        self.max_frame_size = max_frame_size
        self.max_headers = max_headers
        self.max_header_length = max_header_length
        self._version = "1.0"
        self._buffer = bytearray()
        self._pos = 0
        self._state = _BETWEEN
        self._error: str | None = None
        # Frame under construction; offsets are relative to _pos, so compaction keeps them.
        self._command: str | None = None
        self._lines: list[bytearray] = []
        self._line_start = 0
        self._body_start = 0
        self._body_scan = 0
        self._headers: list[tuple[str, str]] = []
        self._content_length: int | None = None

    # -- version --------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The STOMP version that governs escaping: ``"1.0"`` until :meth:`set_version`."""
        return self._version

    def set_version(self, version: str) -> None:
        """Switch to a negotiated version; it applies to every frame not yet returned."""
        if version not in VERSIONS:
            raise ValueError(f"unknown STOMP version {version!r}; expected one of {VERSIONS}")
        self._version = version

    # -- decoding -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the peer; call :meth:`next_event` until NEED_DATA."""
        if self._error is not None:
            raise StompProtocolError(f"STOMP codec refuses input after an error: {self._error}")
        if self._pos:
            # Front deletion of a bytearray is cheap (CPython moves its start pointer).
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_event(self) -> Frame | HeartBeat | NeedData:
        """The next whole event, or :data:`NEED_DATA`; incomplete input never raises."""
        if self._error is not None:
            raise StompProtocolError(f"STOMP codec refuses input after an error: {self._error}")
        try:
            return self._next_event()
        except StompProtocolError as error:
            self._error = str(error)
            raise

    def _next_event(self) -> Frame | HeartBeat | NeedData:
        buffer = self._buffer
        if self._state == _BETWEEN:
            pos = self._pos
            if pos >= len(buffer):
                return NEED_DATA
            byte = buffer[pos]
            if byte == _LF:
                self._pos = pos + 1
                return HEART_BEAT
            if byte == _CR:
                if pos + 1 == len(buffer):
                    return NEED_DATA
                if buffer[pos + 1] == _LF:
                    self._pos = pos + 2
                    return HEART_BEAT
                raise StompProtocolError("STOMP: carriage return not followed by line feed")
            self._state = _HEAD
            self._command = None
            self._lines = []
            self._line_start = 0
        if self._state == _HEAD and not self._read_head():
            return NEED_DATA
        return self._read_body()

    def _read_head(self) -> bool:
        buffer = self._buffer
        pos = self._pos
        if self._command is None and not self._line_start:
            # The whole head at once when it is all here and uses LF line ends (the common
            # case): one search, one split. Anything else (a partial head, CRLF, a line or
            # header count over the limits, an unknown command) takes the line-by-line path
            # below, which reports the problem.
            end = buffer.find(b"\n\n", pos)
            if end > pos:
                head = buffer[pos:end]
                # ASCII: its text's lengths are its byte lengths, and it decodes without fail
                if b"\r" not in head and head.isascii():
                    texts = head.decode("ascii").split("\n")
                    command = texts[0]
                    if (
                        command in COMMANDS
                        and len(texts) <= self.max_headers + 1
                        and max(map(len, texts)) <= self.max_header_length
                    ):
                        self._command = command
                        del texts[0]
                        self._body_start = end + 2 - pos
                        self._decode_headers(texts)
                        return True
        start = pos + self._line_start
        max_length = self.max_header_length
        while True:
            newline = buffer.find(b"\n", start)
            if newline < 0:
                self._line_start = start - pos
                self._check_partial_line(start)
                return False
            end = newline - 1 if newline > start and buffer[newline - 1] == _CR else newline
            if self._command is None:
                command = _COMMAND_BY_BYTES.get(bytes(buffer[start:end]))
                if command is None:
                    raise StompProtocolError(
                        f"STOMP: unknown command {bytes(buffer[start : min(newline, start + 40)])!r}"
                    )
                self._command = command
            elif end == start:
                self._body_start = newline + 1 - pos
                self._decode_headers()
                return True
            else:
                if end - start > max_length:
                    raise StompProtocolError(
                        f"{_frame_name(self._command)}: header line {len(self._lines) + 1} is "
                        f"longer than {max_length} bytes"
                    )
                if len(self._lines) == self.max_headers:
                    raise StompProtocolError(
                        f"{_frame_name(self._command)}: more than {self.max_headers} headers"
                    )
                self._lines.append(buffer[start:end])
            start = newline + 1

    def _check_partial_line(self, start: int) -> None:
        """Fail early on a line (or frame) that can no longer become valid."""
        buffer = self._buffer
        partial = len(buffer) - start
        if partial:
            if self._command is None:
                if (
                    partial > _LONGEST_COMMAND_LINE
                    or bytes(buffer[start:]) not in _COMMAND_PREFIXES
                ):
                    raise StompProtocolError(
                        f"STOMP: unknown command {bytes(buffer[start : start + 40])!r}"
                    )
            else:
                length = partial - 1 if buffer[-1] == _CR else partial
                if length > self.max_header_length:
                    raise StompProtocolError(
                        f"{_frame_name(self._command)}: header line {len(self._lines) + 1} is "
                        f"longer than {self.max_header_length} bytes"
                    )
        # The frame still needs at least its NUL.
        if len(buffer) - self._pos + 1 > self.max_frame_size:
            raise StompProtocolError(
                f"{_frame_name(self._command)}: frame is larger than {self.max_frame_size} bytes"
            )

    def _decode_headers(self, texts: list[str] | None = None) -> None:
        """Decode the head's header lines: ``self._lines`` (raw), or ``texts`` when the caller
        decoded them already (ASCII without CR: the CR and UTF-8 checks cannot fail)."""
        command = self._command
        assert command is not None
        version = self._version
        escaped = version != "1.0" and command not in UNESCAPED_COMMANDS
        trim = version == "1.0"
        strict_cr = version == "1.2"
        table = _UNESCAPE_12 if version == "1.2" else _UNESCAPE_11
        headers: list[tuple[str, str]] = []
        content_length: int | None = None
        if texts is None:
            # Lines hold no LF, so one decode of the joined block stands for one per line.
            block = b"\n".join(self._lines)
            if strict_cr and b"\r" in block:
                number = next(n for n, raw in enumerate(self._lines, 1) if b"\r" in raw)
                raise StompProtocolError(
                    f"{_frame_name(command)}: header line {number} holds a carriage return"
                )
            try:
                texts = block.decode("utf-8").split("\n") if block else []
            except UnicodeDecodeError:
                number = next(n for n, raw in enumerate(self._lines, 1) if not _is_utf8(raw))
                raise StompProtocolError(
                    f"{_frame_name(command)}: header line {number} is not valid UTF-8"
                ) from None
        for number, text in enumerate(texts, 1):
            name, colon, value = text.partition(":")
            if not name:
                problem = "has an empty name" if colon else "has no ':'"
                raise StompProtocolError(f"{_frame_name(command)}: header line {number} {problem}")
            if not colon:
                raise StompProtocolError(f"{_frame_name(command)}: header line {number} has no ':'")
            if escaped:
                if "\\" in name:
                    name = _unescape(name, table, command, number)
                if "\\" in value:
                    value = _unescape(value, table, command, number)
            elif trim:
                value = value.lstrip(" \t")
            if name == "content-length":
                length = _parse_content_length(value, command)
                if content_length is None:
                    content_length = length
                elif length != content_length:
                    raise StompProtocolError(
                        f"{_frame_name(command)}: conflicting content-length headers "
                        f"{content_length} and {length}"
                    )
            headers.append((name, value))
        self._headers = headers
        self._content_length = content_length
        self._lines = []
        self._state = _BODY
        self._body_scan = self._body_start
        if (
            content_length is not None
            and self._body_start + content_length + 1 > self.max_frame_size
        ):
            raise StompProtocolError(
                f"{_frame_name(command)}: content-length {content_length} makes the frame larger "
                f"than {self.max_frame_size} bytes"
            )

    def _read_body(self) -> Frame | NeedData:
        buffer = self._buffer
        pos = self._pos
        body_start = pos + self._body_start
        length = self._content_length
        if length is not None:
            end = body_start + length
            if len(buffer) <= end:
                return NEED_DATA
            if buffer[end] != 0:
                raise StompProtocolError(
                    f"{_frame_name(self._command)}: body of content-length {length} is not "
                    "followed by NUL"
                )
        else:
            end = buffer.find(b"\x00", pos + self._body_scan)
            if end < 0:
                self._body_scan = len(buffer) - pos
                end = len(buffer)
            if end - pos + 1 > self.max_frame_size:
                raise StompProtocolError(
                    f"{_frame_name(self._command)}: frame is larger than {self.max_frame_size} "
                    "bytes"
                )
            if end == len(buffer):
                return NEED_DATA
        command = self._command
        assert command is not None
        frame = Frame(command, self._headers, bytes(buffer[body_start:end]))
        self._pos = end + 1
        self._state = _BETWEEN
        self._headers = []
        return frame

    # -- encoding -------------------------------------------------------------------------

    def send(self, frame: Frame) -> bytes:
        """The bytes of ``frame`` in the current version, ending ``NUL LF`` like Artemis.

        Headers are escaped per version (never for CONNECT/STOMP/CONNECTED). A non-empty body
        always gets a ``content-length`` header (one given is corrected in place; repeats are
        dropped). Raises :class:`StompEncodingError` for what the version cannot carry.
        """
        command = frame.command
        if command not in COMMANDS:
            raise StompEncodingError(f"cannot encode unknown STOMP command {command!r}")
        body = bytes(frame.body)
        version = self._version
        if version == "1.0" or command in UNESCAPED_COMMANDS:
            table = None
        else:
            table = _ESCAPE_12 if version == "1.2" else _ESCAPE_11
        parts = [command, "\n"]
        content_length_written = False
        lines = 0
        for name, value in frame.headers:
            if name == "content-length":
                if content_length_written:
                    continue
                value = str(len(body))
                content_length_written = True
            elif not name:
                raise StompEncodingError(f"{_frame_name(command)}: empty header name")
            elif table is None:
                if ":" in name or "\n" in name or "\r" in name or "\n" in value or "\r" in value:
                    raise StompEncodingError(
                        f"{_frame_name(command)}: header {name!r} cannot carry ':' in its name "
                        f"or line breaks when unescaped (version {version})"
                    )
            parts += (name, ":", value, "\n")
            lines += 1
        if body and not content_length_written:
            parts += ("content-length", ":", str(len(body)), "\n")
            lines += 1
        parts.append("\n")
        text = "".join(parts)
        # Nothing to escape (the common case) when the head holds no backslash or CR and just
        # one ':' and one line feed per header line: one scan of the head instead of a search
        # per name and value.
        if table is not None and (
            "\\" in text or "\r" in text or text.count(":") != lines or text.count("\n") != lines + 2
        ):
            text = _escaped_head(parts, command, table)
        try:
            head = text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise StompEncodingError(
                f"{_frame_name(command)}: a header is not encodable as UTF-8 ({error.reason})"
            ) from None
        return b"".join((head, body, b"\x00\n"))

    def send_heartbeat(self) -> bytes:
        """The bytes of one heart-beat (a line feed)."""
        return b"\n"


# -- negotiation helpers (CONNECT / CONNECTED) ----------------------------------------------


def parse_heart_beat(value: str) -> tuple[int, int]:
    """Parse a ``heart-beat`` header ``"cx,cy"`` into two non-negative millisecond counts."""
    parts = value.split(",")
    if len(parts) != 2:
        raise StompProtocolError(f"STOMP: bad heart-beat header {value!r}: expected 'cx,cy'")
    numbers = []
    for part in parts:
        part = part.strip(" \t")
        if (
            not part
            or not part.isascii()
            or not part.isdigit()
            or len(part) > 19
            or int(part) > _MAX_HEART_BEAT
        ):
            raise StompProtocolError(
                f"STOMP: bad heart-beat header {value!r}: {part!r} is not a number of milliseconds"
            )
        numbers.append(int(part))
    return numbers[0], numbers[1]


def negotiate_heart_beat(client: tuple[int, int], server: tuple[int, int]) -> tuple[int, int]:
    """Server-side heart-beat periods ``(send_ms, expect_ms)``; 0 means none.

    ``client`` is the CONNECT's ``(cx, cy)``: the client can send every cx ms and wants to
    receive every cy ms. ``server`` is the CONNECTED's ``(sx, sy)``. Per the specification the
    server sends every ``max(sx, cy)`` ms unless either is 0, and expects the client's beats
    every ``max(cx, sy)`` ms unless either is 0.
    """
    for name, pair in (("client", client), ("server", server)):
        if len(pair) != 2 or any(not isinstance(n, int) or n < 0 for n in pair):
            raise StompProtocolError(f"STOMP: bad {name} heart-beat {pair!r}")
    client_send, client_receive = client
    server_send, server_receive = server
    send_ms = 0 if server_send == 0 or client_receive == 0 else max(server_send, client_receive)
    expect_ms = 0 if client_send == 0 or server_receive == 0 else max(client_send, server_receive)
    return send_ms, expect_ms


def negotiate_version(
    accept_version_header: str | None, supported: tuple[str, ...] = VERSIONS
) -> str:
    """The highest version both sides support, from the CONNECT's ``accept-version``.

    A missing header (None) means the client speaks only 1.0. Raises
    :class:`UnsupportedVersionError` (with ``supported``) when nothing is shared.
    """
    for version in supported:
        if version not in VERSIONS:
            raise ValueError(f"unknown STOMP version {version!r} in supported={supported!r}")
    if accept_version_header is None:
        offered = {"1.0"}
    else:
        offered = {token.strip(" \t") for token in accept_version_header.split(",")}
    common = [version for version in supported if version in offered]
    if not common:
        shown = (
            "(none: header missing, so 1.0)"
            if accept_version_header is None
            else repr(accept_version_header)
        )
        raise UnsupportedVersionError(
            f"STOMP: client accepts versions {shown}; supported protocol versions are "
            f"{' '.join(supported)}",
            supported=tuple(supported),
        )
    return max(common, key=lambda version: tuple(int(n) for n in version.split(".")))


__all__ = [
    "CLIENT_COMMANDS",
    "COMMANDS",
    "HEART_BEAT",
    "NEED_DATA",
    "SERVER_COMMANDS",
    "UNESCAPED_COMMANDS",
    "VERSIONS",
    "Event",
    "Frame",
    "HeartBeat",
    "NeedData",
    "StompCodec",
    "StompEncodingError",
    "StompProtocolError",
    "UnsupportedVersionError",
    "negotiate_heart_beat",
    "negotiate_version",
    "parse_heart_beat",
]
