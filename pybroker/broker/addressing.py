"""The address model: addresses, routing types, fully qualified queue names and wildcards.

An *address* has a name and the routing types it supports; a *queue* belongs to one address with
one routing type. ``anycast`` hands each message to one queue of the address, ``multicast`` copies
it to every queue. ``address::queue`` (FQQN) names one queue directly.

Wildcard addresses (``news.#``, ``news.*.sport``) match whole words: ``#`` is zero or more words,
``*`` exactly one. A consumer on a wildcard address receives what is sent to every matching
address; :class:`WildcardIndex` answers "which wildcard bindings match this concrete address"
with a per-address cache, so routing a message costs one dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pybroker.config.model import RoutingType, WildcardConfig

FQQN_SEPARATOR = "::"


def split_fqqn(name: str) -> tuple[str, str | None]:
    """``"a::q"`` -> ``("a", "q")``; ``"a"`` -> ``("a", None)``."""
    address, sep, queue = name.partition(FQQN_SEPARATOR)
    if not sep:
        return name, None
    return address, queue


def is_fqqn(name: str) -> bool:
    return FQQN_SEPARATOR in name


@dataclass
class AddressInfo:
    """An address known to the post office."""

    name: str
    routing_types: set[RoutingType] = field(default_factory=set)
    auto_created: bool = False
    internal: bool = False
    # id in the bindings journal (0 while not persisted)
    binding_id: int = 0
    paused: bool = False

    def supports(self, routing_type: RoutingType) -> bool:
        return routing_type in self.routing_types


class WildcardPattern:
    """A compiled wildcard expression (``#`` zero or more words, ``*`` exactly one word)."""

    __slots__ = ("_words", "pattern")

    def __init__(self, pattern: str, config: WildcardConfig) -> None:
        self.pattern = pattern
        words: list[str | bool | None] = []
        for word in pattern.split(config.delimiter):
            if word == config.any_words:
                words.append(True)  # '#'
            elif word == config.single_word:
                words.append(None)  # '*'
            else:
                words.append(word)
        self._words = tuple(words)

    def matches(self, address_words: list[str]) -> bool:
        return _match(self._words, 0, address_words, 0)


def _match(pattern: tuple, pi: int, words: list[str], wi: int) -> bool:
    while pi < len(pattern):
        token = pattern[pi]
        if token is True:
            # '#' matches zero or more words: try every split
            if pi == len(pattern) - 1:
                return True
            for start in range(wi, len(words) + 1):
                if _match(pattern, pi + 1, words, start):
                    return True
            return False
        if wi >= len(words):
            return False
        if token is not None and token != words[wi]:
            return False
        pi += 1
        wi += 1
    return wi == len(words)


def is_wildcard(address: str, config: WildcardConfig) -> bool:
    """Whether ``address`` contains a wildcard word (and wildcard routing is enabled)."""
    if not config.routing_enabled:
        return False
    for word in address.split(config.delimiter):
        if word == config.any_words or word == config.single_word:
            return True
    return False


class WildcardIndex:
    """Maps concrete addresses to the wildcard addresses that match them (cached)."""

    def __init__(self, config: WildcardConfig) -> None:
        self._config = config
        self._patterns: dict[str, WildcardPattern] = {}
        #: the patterns by name (read only; its truth is a cheap "any patterns?" check)
        self.patterns = self._patterns
        self._cache: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._patterns)

    def add(self, pattern: str) -> None:
        if pattern not in self._patterns:
            self._patterns[pattern] = WildcardPattern(pattern, self._config)
            self._cache.clear()

    def remove(self, pattern: str) -> None:
        if self._patterns.pop(pattern, None) is not None:
            self._cache.clear()

    def matching(self, address: str) -> tuple[str, ...]:
        """Wildcard patterns (other than ``address`` itself) that match ``address``."""
        if not self._patterns:
            return ()
        found = self._cache.get(address)
        if found is None:
            words = address.split(self._config.delimiter)
            found = tuple(
                name
                for name, pattern in self._patterns.items()
                if name != address and pattern.matches(words)
            )
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[address] = found
        return found

    def matches(self, pattern: str, address: str) -> bool:
        compiled = self._patterns.get(pattern) or WildcardPattern(pattern, self._config)
        return compiled.matches(address.split(self._config.delimiter))

    def __iter__(self) -> Iterator[str]:
        return iter(self._patterns)


def parse_destination(
    destination: str,
    *,
    anycast_prefix: str | None = None,
    multicast_prefix: str | None = None,
) -> tuple[str, RoutingType | None]:
    """Strip an acceptor prefix (``anycastPrefix=jms.queue.``) and return the routing type it implies."""
    if anycast_prefix and destination.startswith(anycast_prefix):
        return destination[len(anycast_prefix) :], RoutingType.ANYCAST
    if multicast_prefix and destination.startswith(multicast_prefix):
        return destination[len(multicast_prefix) :], RoutingType.MULTICAST
    return destination, None


def routing_types_from(values: Iterable[str]) -> set[RoutingType]:
    return {RoutingType.parse(value) for value in values}
