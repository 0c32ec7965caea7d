"""Address-settings and security-settings lookup with Artemis's match precedence.

Theory of operation. A *match* is an address pattern from broker.xml: a plain address, or one
with wildcards (``#`` = zero or more words, ``*`` = exactly one word, words split on the
delimiter, all three configurable). For an address, every match that covers it is found and
ordered most specific first, as Artemis's ``MatchComparator`` does:

1. the exact match (no wildcards), then a literal match (``literal-match-markers``);
2. then wildcard matches: any without ``#`` beats any with ``#``; among ``#`` matches the longer
   string wins; among ``*`` matches compare word by word, and at the first word where one has
   ``*`` and the other a plain word, the plain word wins; otherwise the shorter string wins.
   Ties keep document order.

Address settings **merge** along that order field by field (a more specific match overrides
only the fields it sets), then fall back to :data:`ADDRESS_SETTING_DEFAULTS`. Security settings
do not merge: only the most specific match applies, so a permission it omits is denied.

Patterns are compiled once; results are cached per address and the cache is dropped when a
match is added or removed, so the broker can call ``match()`` per new address cheaply.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from pybroker.config.model import (
    ADDRESS_SETTING_DEFAULTS,
    AddressSettings,
    SecuritySetting,
    WildcardConfig,
)

T = TypeVar("T")

_DEFAULT_WILDCARD = WildcardConfig()
_DEFAULT_CACHE_SIZE = 10_000


def is_wild(pattern: str, wildcard: WildcardConfig = _DEFAULT_WILDCARD) -> bool:
    """Whether ``pattern`` contains a wildcard character."""
    return wildcard.any_words in pattern or wildcard.single_word in pattern


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str, delimiter: str, any_words: str, single_word: str) -> re.Pattern[str]:
    d = re.escape(delimiter)
    if pattern == any_words:
        return re.compile(r".*", re.DOTALL)
    tokens: list[str] = []
    for word in pattern.split(delimiter):
        if word == any_words and tokens and tokens[-1] == any_words:
            continue  # "#.#" is the same as "#"
        tokens.append(word)
    if tokens == [any_words]:
        return re.compile(r".*", re.DOTALL)

    def word_regex(word: str) -> str:
        if word == single_word:
            return f"[^{d}]+"
        # Wildcards inside a word act on characters, as in Artemis ("news#", "a*b").
        out = []
        for ch in word:
            if ch == single_word:
                out.append(f"[^{d}]+")
            elif ch == any_words:
                out.append(f"(?:{d}.+)?")
            else:
                out.append(re.escape(ch))
        return "".join(out)

    parts: list[str] = []
    for index, word in enumerate(tokens):
        if word == any_words:
            # Leading: some words and a delimiter, or nothing. Elsewhere: a delimiter and
            # some words, or nothing.
            parts.append(f"(?:.+{d})?" if index == 0 else f"(?:{d}.+)?")
            continue
        after_leading_any = index == 1 and tokens[0] == any_words
        separator = "" if index == 0 or after_leading_any else d
        parts.append(separator + word_regex(word))
    return re.compile("".join(parts), re.DOTALL)


def wildcard_matches(pattern: str, address: str,
                     wildcard: WildcardConfig = _DEFAULT_WILDCARD) -> bool:
    """Whether ``pattern`` (with ``#`` and ``*`` wildcards) covers ``address``.

    ``#`` matches zero or more words (so ``news.#`` matches ``news``), ``*`` exactly one
    non-empty word; a pattern without wildcards matches only itself.
    """
    if not is_wild(pattern, wildcard):
        return pattern == address
    regex = _compile(pattern, wildcard.delimiter, wildcard.any_words, wildcard.single_word)
    return regex.fullmatch(address) is not None


def compare_specificity(left: str, right: str,
                        wildcard: WildcardConfig = _DEFAULT_WILDCARD) -> int:
    """Artemis's MatchComparator: negative when ``left`` is the more specific wildcard match.

    Only meaningful for two patterns that both match one address.
    """
    any_words, single_word = wildcard.any_words, wildcard.single_word
    left_any, right_any = any_words in left, any_words in right
    if left_any != right_any:
        return 1 if left_any else -1
    if left_any:
        return len(right) - len(left)  # the longer '#' match is more specific
    left_single, right_single = single_word in left, single_word in right
    if left_single != right_single:
        return 1 if left_single else -1
    if left_single:
        left_words = left.split(wildcard.delimiter)
        right_words = right.split(wildcard.delimiter)
        for index, left_word in enumerate(left_words):
            if index >= len(right_words):
                return -1
            right_word = right_words[index]
            if left_word == single_word and right_word != single_word:
                return 1
            if left_word != single_word and right_word == single_word:
                return -1
    return len(left) - len(right)


class _Entry(Generic[T]):
    __slots__ = ("match", "regex", "value")

    def __init__(self, match: str, value: T, regex: re.Pattern[str] | None) -> None:
        self.match = match
        self.value = value
        self.regex = regex


class _MatchRepository(Generic[T]):
    """Matches of one kind, looked up by address with Artemis precedence."""

    def __init__(
        self,
        matches: Iterable[tuple[str, T]] = (),
        wildcard: WildcardConfig = _DEFAULT_WILDCARD,
        *,
        literal_match_markers: str | None = None,
        cache_size: int = _DEFAULT_CACHE_SIZE,
    ) -> None:
        if literal_match_markers is not None and len(literal_match_markers) != 2:
            raise ValueError("literal_match_markers must be two characters, e.g. '()'")
        self._wildcard = wildcard
        self._markers = literal_match_markers
        self._exact: dict[str, _Entry[T]] = {}
        self._literal: dict[str, _Entry[T]] = {}
        self._wild: dict[str, _Entry[T]] = {}  # insertion (document) order breaks ties
        self._cache: dict[str, object] = {}
        self._cache_size = cache_size
        for match, value in matches:
            self.add_match(match, value)

    @property
    def wildcard(self) -> WildcardConfig:
        """The wildcard syntax used for matching."""
        return self._wildcard

    def _literal_body(self, match: str) -> str | None:
        markers = self._markers
        if markers and len(match) >= 2 and match[0] == markers[0] and match[-1] == markers[1]:
            return match[1:-1]
        return None

    def add_match(self, match: str, value: T) -> None:
        """Add (or replace) the value for ``match``; the per-address cache is invalidated."""
        literal = self._literal_body(match)
        if literal is not None:
            self._literal[literal] = _Entry(match, value, None)
            self._cache.pop(literal, None)
        elif is_wild(match, self._wildcard):
            w = self._wildcard
            regex = _compile(match, w.delimiter, w.any_words, w.single_word)
            self._wild.pop(match, None)
            self._wild[match] = _Entry(match, value, regex)
            self._cache.clear()
        else:
            self._exact[match] = _Entry(match, value, None)
            self._cache.pop(match, None)

    def remove_match(self, match: str) -> bool:
        """Remove ``match``; returns whether it was there."""
        literal = self._literal_body(match)
        if literal is not None:
            removed = self._literal.pop(literal, None)
        elif is_wild(match, self._wildcard):
            removed = self._wild.pop(match, None)
        else:
            removed = self._exact.pop(match, None)
        if removed is not None:
            self._cache.clear()
        return removed is not None

    def contains_exact_match(self, match: str) -> bool:
        """Whether ``match`` was added as an exact (wildcard-free) match."""
        return match in self._exact

    def matches_for(self, address: str) -> list[tuple[str, T]]:
        """Every (match, value) covering ``address``, most specific first."""
        found: list[_Entry[T]] = []
        exact = self._exact.get(address)
        if exact is not None:
            found.append(exact)
        literal = self._literal.get(address)
        if literal is not None:
            found.append(literal)
        wild = [entry for entry in self._wild.values()
                if entry.regex is not None and entry.regex.fullmatch(address) is not None]
        w = self._wildcard
        wild.sort(key=functools.cmp_to_key(
            lambda a, b: compare_specificity(a.match, b.match, w)))
        found.extend(wild)
        return [(entry.match, entry.value) for entry in found]

    def _cached(self, address: str, compute: Callable[[str], object]) -> object:
        try:
            return self._cache[address]
        except KeyError:
            pass
        value = compute(address)
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[address] = value
        return value

    def __len__(self) -> int:
        return len(self._exact) + len(self._literal) + len(self._wild)

    def __iter__(self) -> Iterator[tuple[str, T]]:
        for table in (self._exact, self._literal, self._wild):
            for entry in table.values():
                yield entry.match, entry.value


class AddressSettingsRepository(_MatchRepository[AddressSettings]):
    """``<address-settings>`` lookup: every covering match merged by precedence."""

    def __init__(
        self,
        matches: Iterable[tuple[str, AddressSettings]] = (),
        wildcard: WildcardConfig = _DEFAULT_WILDCARD,
        *,
        literal_match_markers: str | None = None,
        defaults: AddressSettings = ADDRESS_SETTING_DEFAULTS,
        cache_size: int = _DEFAULT_CACHE_SIZE,
    ) -> None:
        self._defaults = defaults
        super().__init__(matches, wildcard, literal_match_markers=literal_match_markers,
                         cache_size=cache_size)

    def _compute(self, address: str) -> AddressSettings:
        merged = AddressSettings()
        for _, settings in self.matches_for(address):
            merged = merged.merged_over(settings)
        return merged.merged_over(self._defaults).with_derived_defaults()

    def match(self, address: str) -> AddressSettings:
        """The complete settings for ``address`` (every defaulted field filled in)."""
        return self._cached(address, self._compute)  # type: ignore[return-value]


class SecurityRepository(_MatchRepository[SecuritySetting]):
    """``<security-settings>`` lookup: only the most specific match applies (no merging)."""

    def _compute(self, address: str) -> SecuritySetting | None:
        found = self.matches_for(address)
        return found[0][1] if found else None

    def match(self, address: str) -> SecuritySetting | None:
        """The most specific security setting covering ``address``, or None."""
        return self._cached(address, self._compute)  # type: ignore[return-value]

    def match_queue(self, address: str, queue: str | None) -> SecuritySetting | None:
        """The setting for a queue of ``address``: an exact match on the FQQN
        ``address::queue`` if there is one (Artemis allows no wildcards there), else the
        address's own match."""
        if queue is not None:
            fqqn = f"{address}::{queue}"
            if self.contains_exact_match(fqqn):
                return self.match(fqqn)
        return self.match(address)


__all__ = [
    "AddressSettingsRepository",
    "SecurityRepository",
    "compare_specificity",
    "is_wild",
    "wildcard_matches",
]
