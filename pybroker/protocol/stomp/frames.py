"""STOMP frames, events and errors: the values the codec reads and writes.

A :class:`Frame` keeps its headers as an ordered list of ``(name, value)`` pairs, repeated
names included, because STOMP 1.2 gives meaning to order: the first occurrence of a header is
its value, later ones are history. Nothing here knows about sockets or versions; the codec in
:mod:`pybroker.protocol.stomp.codec` turns frames into bytes and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pybroker.errors import ProtocolError

# Client frames (STOMP 1.2 "client-command") and server frames ("server-command").
CLIENT_COMMANDS: frozenset[str] = frozenset(
    {
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "ACK",
        "NACK",
        "DISCONNECT",
        "CONNECT",
        "STOMP",
    }
)
SERVER_COMMANDS: frozenset[str] = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
COMMANDS: frozenset[str] = CLIENT_COMMANDS | SERVER_COMMANDS

# The frames whose headers are never escaped, in any version: CONNECT and CONNECTED stay
# readable by STOMP 1.0 peers (spec, "Value Encoding"); STOMP is CONNECT under another name
# and, like stomp.py and Artemis, we treat it the same way.
UNESCAPED_COMMANDS: frozenset[str] = frozenset({"CONNECT", "STOMP", "CONNECTED"})

VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2")


class StompProtocolError(ProtocolError):
    """A STOMP peer broke the protocol (bad framing, bad header, a limit exceeded).

    Raised by the codec and by the negotiation helpers. Once the decoder has raised one it
    refuses further input: the handler sends an ERROR frame and closes the connection.
    """


class StompEncodingError(StompProtocolError):
    """A frame that cannot be written in the negotiated version.

    For example a header value holding a line feed in a STOMP 1.0 frame (1.0 has no escapes)
    or in a CONNECTED frame (never escaped). Encoding errors leave the codec usable.
    """


class UnsupportedVersionError(StompProtocolError):
    """The client's ``accept-version`` shares no version with the server.

    ``supported`` lists the server's versions, for the ``version`` header of the ERROR frame
    the specification asks for.
    """

    def __init__(self, message: str, *, supported: tuple[str, ...]) -> None:
        self.supported = supported
        super().__init__(message)


@dataclass(slots=True)
class Frame:
    """One STOMP frame: a command, ordered headers (repeats kept) and a binary body.

    ``headers`` holds unescaped text; ``content-length`` is written by the encoder from the
    body, whatever value the list carries.
    """

    command: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of the FIRST header called ``name`` (STOMP 1.2 rule), else ``default``."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name``, in frame order."""
        return [value for key, value in self.headers if key == name]

    def has_header(self, name: str) -> bool:
        """Whether a header called ``name`` is present."""
        return any(key == name for key, _ in self.headers)

    def require_header(self, name: str) -> str:
        """The first value of header ``name``; :class:`StompProtocolError` when it is missing."""
        for key, value in self.headers:
            if key == name:
                return value
        raise StompProtocolError(f"{self.command} frame has no '{name}' header")

    def header_map(self) -> dict[str, str]:
        """The headers as a dict in which the first occurrence of each name wins."""
        result: dict[str, str] = {}
        for key, value in self.headers:
            result.setdefault(key, value)
        return result

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 64 else self.body[:64] + b"..."
        return (
            f"Frame(command={self.command!r}, headers={self.headers!r}, "
            f"body={body!r} ({len(self.body)} bytes))"
        )


@dataclass(frozen=True, slots=True)
class HeartBeat:
    """One end-of-line between frames: a heart-beat from the peer."""


HEART_BEAT = HeartBeat()

__all__ = [
    "CLIENT_COMMANDS",
    "COMMANDS",
    "HEART_BEAT",
    "SERVER_COMMANDS",
    "UNESCAPED_COMMANDS",
    "VERSIONS",
    "Frame",
    "HeartBeat",
    "StompEncodingError",
    "StompProtocolError",
    "UnsupportedVersionError",
]
