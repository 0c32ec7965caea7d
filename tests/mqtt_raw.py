"""A socket speaking MQTT through the project's codec, for what real clients will not do
(garbage, exact timing of replies, a connection that just vanishes)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pybroker.protocol.mqtt.codec import NEED_DATA, ConnAck, Connect, MQTTCodec


class RawClient:
    """One MQTT connection on the event loop; ``timeout`` bounds every wait for a packet."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, timeout: float = 10.0) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.codec = MQTTCodec("client")

    @classmethod
    async def open(cls, port: int, *, timeout: float = 10.0) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port), timeout=timeout)

    @classmethod
    async def connect(cls, port: int, connect: Connect, *, timeout: float = 10.0) -> tuple[RawClient, ConnAck]:
        raw = await cls.open(port, timeout=timeout)
        raw.send(connect)
        connack = await raw.packet()
        return raw, connack

    def send(self, packet: Any) -> None:
        self.writer.write(self.codec.send(packet))

    async def packet(self, timeout: float | None = None) -> Any:
        """The next packet (None when the server closed the connection)."""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            while (event := self.codec.next_event()) is NEED_DATA:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.codec.receive_data(data)
            return event

    async def nothing_within(self, seconds: float, why: str = "") -> None:
        """Fail if a packet arrives within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            packet = await self.packet(seconds)
            raise AssertionError(f"{packet} came {why}".rstrip())

    async def closed_by_server(self, timeout: float | None = None) -> bytes:
        """Everything the server sent until it closed the connection."""
        received = b""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            while data := await self.reader.read(65536):
                received += data
        return received

    def abort(self) -> None:
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()
