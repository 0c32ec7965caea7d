"""Memory limits: how much each address (and the whole broker) holds in memory, and what happens
when a limit is reached.

Every message in memory counts once towards its address (``max-size-bytes``,
``max-size-messages``) and towards the broker (``global-max-size``, ``global-max-messages``),
from the moment it is routed to a queue until its last reference is acknowledged. When an
address is over a limit its ``address-full-policy`` applies (Artemis semantics):

``PAGE``   new messages for the address go to page files on disk (see ``broker/paging.py``);
``BLOCK``  producers are held back by their protocol's flow control (AMQP credit is withheld,
           MQTT and STOMP stop reading the socket) until there is room again; nothing is lost;
``FAIL``   the send is refused with the protocol's resource-limit error;
``DROP``   the message is dropped and counted.

Disk usage (``max-disk-usage`` percent, ``min-disk-free``) is checked every
``disk-scan-period`` ms; while the disk is over, every address behaves as BLOCK (or FAIL for
protocols that cannot block).

This module only counts and decides; protocols ask :meth:`Limits.can_send` before granting
credit and register a callback with :meth:`Limits.when_free`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("pybroker.broker")

PAGE = "PAGE"
BLOCK = "BLOCK"
FAIL = "FAIL"
DROP = "DROP"


class Usage:
    """Bytes and messages one address holds in memory."""

    __slots__ = (
        "address",
        "blocked_logged",
        "bytes",
        "limited",
        "max_bytes",
        "max_messages",
        "messages",
        "policy",
        "waiters",
    )

    def __init__(self, address: str, settings: object | None = None) -> None:
        self.address = address
        self.bytes = 0
        self.messages = 0
        self.waiters: list[Callable[[], None]] = []
        self.blocked_logged = False
        max_bytes = getattr(settings, "max_size_bytes", -1)
        max_messages = getattr(settings, "max_size_messages", -1)
        self.max_bytes = -1 if max_bytes is None else max_bytes
        self.max_messages = -1 if max_messages is None else max_messages
        self.limited = self.max_bytes >= 0 or self.max_messages >= 0
        self.policy = getattr(settings, "address_full_policy", None) or PAGE

    def over(self) -> bool:
        """Whether the address's own limits are reached (0 = always)."""
        if 0 <= self.max_bytes <= self.bytes:
            return True
        return 0 <= self.max_messages <= self.messages


class Limits:
    """Per-address and global memory accounting, and the blocked-producer waiters."""

    def __init__(
        self,
        *,
        global_max_size: int = -1,
        global_max_messages: int = -1,
        settings: Callable[[str], object] | None = None,
    ) -> None:
        self._settings = settings
        self.global_max_size = global_max_size
        self.global_max_messages = global_max_messages
        self.bytes = 0
        self.messages = 0
        self.disk_full = False
        self._usages: dict[str, Usage] = {}
        self._global_waiters: list[Callable[[], None]] = []
        self.dropped = 0
        self.refused = 0

    def usage(self, address: str) -> Usage:
        usage = self._usages.get(address)
        if usage is None:
            settings = self._settings(address) if self._settings is not None else None
            usage = self._usages[address] = Usage(address, settings)
        return usage

    def settings_changed(self) -> None:
        """Address settings changed at runtime: re-read every address's limits."""
        for address, usage in list(self._usages.items()):
            fresh = Usage(address, self._settings(address) if self._settings is not None else None)
            usage.max_bytes, usage.max_messages = fresh.max_bytes, fresh.max_messages
            usage.limited, usage.policy = fresh.limited, fresh.policy

    def forget(self, address: str) -> None:
        usage = self._usages.get(address)
        if usage is not None and not usage.messages and not usage.waiters:
            del self._usages[address]

    @property
    def global_over(self) -> bool:
        if self.global_max_size >= 0 and self.bytes >= self.global_max_size:
            return True
        return self.global_max_messages >= 0 and self.messages >= self.global_max_messages

    def full(self, usage: Usage) -> bool:
        """Whether a new message for this address finds it over a limit."""
        return self.disk_full or self.global_over or (usage.limited and usage.over())

    # -- counting ------------------------------------------------------------------------------
    def add(self, usage: Usage, size: int) -> None:
        usage.bytes += size
        usage.messages += 1
        self.bytes += size
        self.messages += 1

    def remove(self, usage: Usage, size: int) -> None:
        usage.bytes -= size
        usage.messages -= 1
        self.bytes -= size
        self.messages -= 1
        if usage.waiters and not self.full(usage):
            self._release(usage.waiters)
        if self._global_waiters and not self.global_over and not self.disk_full:
            self._release(self._global_waiters)

    # -- blocking ------------------------------------------------------------------------------
    def when_free(self, usage: Usage | None, callback: Callable[[], None]) -> None:
        """Call ``callback`` once (from the event loop) when there is room again."""
        if usage is None:
            self._global_waiters.append(callback)
        else:
            usage.waiters.append(callback)

    def disk_changed(self, full: bool) -> None:
        if full == self.disk_full:
            return
        self.disk_full = full
        if full:
            log.warning("AMQ222212: Disk Full! Blocking message production")
        else:
            log.info("AMQ221046: Disk no longer full, unblocking message production")
            self._release(self._global_waiters)
            for usage in list(self._usages.values()):
                if usage.waiters:
                    self._release(usage.waiters)

    @staticmethod
    def _release(waiters: list[Callable[[], None]]) -> None:
        pending = waiters[:]
        waiters.clear()
        for callback in pending:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one producer's failure must not stop the others
                log.exception("a blocked producer's wake-up failed")
