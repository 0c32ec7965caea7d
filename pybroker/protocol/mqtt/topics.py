"""MQTT topic names and filters: validation, matching, shared subscriptions, Artemis addresses.

MQTT rules (3.1.1 §4.7, 5.0 §4.7-4.8): levels are separated by ``/``; ``+`` matches exactly one
level and must be a whole level; ``#`` matches any number of levels (including the parent level
itself) and must be the whole last level; topic names carry no wildcards; names and filters are at
least one character and never contain U+0000; a filter that starts with a wildcard does not match
a topic that starts with ``$`` [MQTT-4.7.2-1]. ``$share/<ShareName>/<filter>`` is a shared
subscription: the share name is at least one character with no ``/``, ``+`` or ``#``.

Artemis maps MQTT topics onto core addresses with its ``WildcardConfiguration.convert`` (used by
``MQTTUtil.getCoreAddressFromMqttTopic`` / ``getMqttTopicFromCoreAddress``): the MQTT syntax
(``/``, ``+``, ``#``) is converted into the broker's (by default ``.``, ``*``, ``#``). Characters
that are wildcards or delimiters in the target syntax but plain text in the source are escaped with
a backslash, so ``1.0/device`` becomes ``1\\.0.device`` and back. :func:`convert_wildcards`
reproduces that algorithm step for step, including its quirks: an input that already contains an
escape of a source wildcard (``\\/``, ``\\+``, ``\\#``) is taken as pre-escaped and unescaped after
conversion instead, and a literal backslash is doubled on the way in but not halved on the way
back, so names with backslashes do not round-trip (as in Artemis).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pybroker.errors import ProtocolError

SHARED_SUBSCRIPTION_PREFIX = "$share/"
#: Artemis keeps retained messages on ``$sys.mqtt.retain.<address>`` (MQTTUtil).
MQTT_RETAIN_ADDRESS_PREFIX = "$sys.mqtt.retain."
_ESCAPE = "\\"


class InvalidTopicError(ProtocolError):
    """A topic name or topic filter that breaks the MQTT rules; the message says which."""


# --- validation -------------------------------------------------------------------------------


def topic_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid topic name, or None if it is."""
    if not name:
        return "topic name is empty"
    if "+" in name or "#" in name:
        return f"topic name {name!r} contains a wildcard"
    if "\x00" in name:
        return f"topic name {name!r} contains U+0000"
    return _string_problem(name, "topic name")


def topic_filter_problem(topic_filter: str, *, shared_subscriptions: bool = True) -> str | None:
    """Why ``topic_filter`` is not a valid filter, or None if it is.

    With ``shared_subscriptions`` (the default) a filter starting with ``$share/`` must be a well
    formed shared subscription.
    """
    if shared_subscriptions and topic_filter.startswith(SHARED_SUBSCRIPTION_PREFIX):
        rest = topic_filter[len(SHARED_SUBSCRIPTION_PREFIX) :]
        share_name, slash, inner = rest.partition("/")
        if not share_name:
            return f"shared subscription {topic_filter!r} has an empty share name"
        if "+" in share_name or "#" in share_name:
            return f"share name {share_name!r} contains a wildcard"
        if not slash or not inner:
            return f"shared subscription {topic_filter!r} has no topic filter"
        problem = topic_filter_problem(inner, shared_subscriptions=False)
        if problem is not None:
            return f"shared subscription {topic_filter!r}: {problem}"
        return None
    if not topic_filter:
        return "topic filter is empty"
    if "\x00" in topic_filter:
        return f"topic filter {topic_filter!r} contains U+0000"
    if "+" in topic_filter or "#" in topic_filter:
        levels = topic_filter.split("/")
        last = len(levels) - 1
        for index, level in enumerate(levels):
            if "#" in level and (level != "#" or index != last):
                return f"topic filter {topic_filter!r}: '#' must be the whole last level"
            if "+" in level and level != "+":
                return f"topic filter {topic_filter!r}: '+' must be a whole level"
    return _string_problem(topic_filter, "topic filter")


def _string_problem(text: str, what: str) -> str | None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{what} {text!r} is not valid Unicode (lone surrogate)"
    if size > 65_535:
        return f"{what} is {size} bytes of UTF-8, more than 65535"
    return None


def validate_topic_name(name: str) -> None:
    """Raise :class:`InvalidTopicError` unless ``name`` is a valid topic name."""
    problem = topic_name_problem(name)
    if problem is not None:
        raise InvalidTopicError(problem)


def validate_topic_filter(topic_filter: str, *, shared_subscriptions: bool = True) -> None:
    """Raise :class:`InvalidTopicError` unless ``topic_filter`` is a valid topic filter."""
    problem = topic_filter_problem(topic_filter, shared_subscriptions=shared_subscriptions)
    if problem is not None:
        raise InvalidTopicError(problem)


def is_valid_topic_name(name: str) -> bool:
    """True if ``name`` is a valid topic name."""
    return topic_name_problem(name) is None


def is_valid_topic_filter(topic_filter: str, *, shared_subscriptions: bool = True) -> bool:
    """True if ``topic_filter`` is a valid topic filter."""
    return topic_filter_problem(topic_filter, shared_subscriptions=shared_subscriptions) is None


def has_wildcards(topic_filter: str) -> bool:
    """True if the filter contains ``+`` or ``#``."""
    return "+" in topic_filter or "#" in topic_filter


# --- shared subscriptions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SharedSubscription:
    """``$share/<share_name>/<topic_filter>`` taken apart."""

    share_name: str
    topic_filter: str


def is_shared_subscription(topic_filter: str) -> bool:
    """True if the filter starts with ``$share/`` (Artemis MQTTUtil.isSharedSubscription)."""
    return topic_filter.startswith(SHARED_SUBSCRIPTION_PREFIX)


def parse_shared_subscription(topic_filter: str) -> SharedSubscription | None:
    """Split a shared subscription filter; None for an ordinary filter.

    Raises :class:`InvalidTopicError` for ``$share/`` filters that are not well formed.
    """
    if not is_shared_subscription(topic_filter):
        return None
    validate_topic_filter(topic_filter)
    share_name, _, inner = topic_filter[len(SHARED_SUBSCRIPTION_PREFIX) :].partition("/")
    return SharedSubscription(share_name, inner)


# --- matching ---------------------------------------------------------------------------------


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True if the topic name matches the (non-shared) topic filter, per MQTT §4.7.

    The reference implementation for the broker's matching: ``sport/#`` matches ``sport``,
    ``+`` matches one level (possibly empty), and ``#`` or ``+`` in the first level does not
    match topics beginning with ``$``. Both arguments are assumed valid.
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    if not has_wildcards(topic_filter):
        return topic_filter == topic
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


# --- Artemis address mapping ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WildcardSyntax:
    """A wildcard syntax: Artemis's ``WildcardConfiguration`` (delimiter, single word, any words).

    The broker's is configurable in broker.xml (``<wildcard-addresses>``); it defaults to
    :data:`CORE_WILDCARDS`.
    """

    delimiter: str = "."
    single_word: str = "*"
    any_words: str = "#"


#: Artemis's default core wildcard syntax.
CORE_WILDCARDS = WildcardSyntax(".", "*", "#")
#: MQTT's syntax (MQTTUtil.MQTT_WILDCARD).
MQTT_WILDCARDS = WildcardSyntax("/", "+", "#")


def _is_escaped(text: str, syntax: WildcardSyntax) -> bool:
    specials = (syntax.delimiter, syntax.single_word, syntax.any_words)
    return any(
        text[index] == _ESCAPE and text[index + 1] in specials for index in range(len(text) - 1)
    )


def _escape(text: str, target: WildcardSyntax, source: WildcardSyntax) -> str:
    result = text.replace(_ESCAPE, _ESCAPE + _ESCAPE)
    if target.delimiter != source.delimiter:
        result = result.replace(target.delimiter, _ESCAPE + target.delimiter)
    if target.single_word != source.single_word:
        result = result.replace(target.single_word, _ESCAPE + target.single_word)
    if target.any_words != source.any_words:
        result = result.replace(target.any_words, _ESCAPE + target.any_words)
    return result


def _unescape(text: str, syntax: WildcardSyntax) -> str:
    return (
        text.replace(_ESCAPE + _ESCAPE, _ESCAPE)
        .replace(_ESCAPE + syntax.delimiter, syntax.delimiter)
        .replace(_ESCAPE + syntax.single_word, syntax.single_word)
        .replace(_ESCAPE + syntax.any_words, syntax.any_words)
    )


def _replace_unescaped(chars: list[str], old: str, new: str) -> None:
    if old == new:
        return
    for index, char in enumerate(chars):
        if char == old and (index == 0 or chars[index - 1] != _ESCAPE):
            chars[index] = new


@lru_cache(maxsize=64)
def _fast_table(
    source: WildcardSyntax, target: WildcardSyntax
) -> tuple[dict[int, str], frozenset[str]] | None:
    """A one-pass translation for inputs needing no escapes, when it equals the stepwise one."""
    pairs = [
        (source.delimiter, target.delimiter),
        (source.single_word, target.single_word),
        (source.any_words, target.any_words),
    ]
    sources = {old for old, new in pairs if old != new}
    targets = {new for old, new in pairs if old != new}
    if sources & targets:  # a replacement would feed the next step: use the stepwise path
        return None
    unsafe = frozenset({_ESCAPE} | targets)
    return {ord(old): new for old, new in pairs if old != new}, unsafe


def convert_wildcards(text: str, source: WildcardSyntax, target: WildcardSyntax) -> str:
    """Convert ``text`` from one wildcard syntax to another as Artemis's
    ``WildcardConfiguration.convert`` does (see the module docstring)."""
    if source == target:
        return text
    fast = _fast_table(source, target)
    if fast is not None:
        table, unsafe = fast
        if not any(char in text for char in unsafe):
            return text.translate(table)
    escaped = _is_escaped(text, source)
    chars = list(text if escaped else _escape(text, target, source))
    _replace_unescaped(chars, source.delimiter, target.delimiter)
    _replace_unescaped(chars, source.single_word, target.single_word)
    _replace_unescaped(chars, source.any_words, target.any_words)
    result = "".join(chars)
    return _unescape(result, source) if escaped else result


def mqtt_to_core_address(topic: str, core: WildcardSyntax = CORE_WILDCARDS) -> str:
    """The core address (or address filter) for an MQTT topic name or (non-shared) filter.

    ``a/b/c`` -> ``a.b.c``, ``a/+/#`` -> ``a.*.#``, ``1.0/device`` -> ``1\\.0.device``
    (Artemis MQTTUtil.getCoreAddressFromMqttTopic).
    """
    return convert_wildcards(topic, MQTT_WILDCARDS, core)


def core_retain_address(topic: str, core: WildcardSyntax = CORE_WILDCARDS) -> str:
    """The address holding the retained message of a topic: ``$sys.mqtt.retain.`` + address."""
    return MQTT_RETAIN_ADDRESS_PREFIX + mqtt_to_core_address(topic, core)


def core_to_mqtt_topic(address: str, core: WildcardSyntax = CORE_WILDCARDS) -> str:
    """The MQTT topic for a core address; a ``$sys.mqtt.retain.`` prefix is dropped first
    (Artemis MQTTUtil.getMqttTopicFromCoreAddress)."""
    if address.startswith(MQTT_RETAIN_ADDRESS_PREFIX):
        address = address[len(MQTT_RETAIN_ADDRESS_PREFIX) :]
    return convert_wildcards(address, core, MQTT_WILDCARDS)


def core_subscription_queue(
    topic_filter: str, client_id: str, core: WildcardSyntax = CORE_WILDCARDS
) -> str:
    """The core queue name of a subscription (Artemis MQTTUtil.getCoreQueueFromMqttTopic).

    ``<client_id>.<address>`` for an ordinary subscription, ``<share_name>.<address>`` for a
    shared one (the joining ``.`` is literal whatever the core syntax).
    """
    if is_shared_subscription(topic_filter):
        shared = parse_shared_subscription(topic_filter)
        assert shared is not None
        return f"{shared.share_name}.{mqtt_to_core_address(shared.topic_filter, core)}"
    return f"{client_id}.{mqtt_to_core_address(topic_filter, core)}"


__all__ = [
    "CORE_WILDCARDS",
    "MQTT_RETAIN_ADDRESS_PREFIX",
    "MQTT_WILDCARDS",
    "SHARED_SUBSCRIPTION_PREFIX",
    "InvalidTopicError",
    "SharedSubscription",
    "WildcardSyntax",
    "convert_wildcards",
    "core_retain_address",
    "core_subscription_queue",
    "core_to_mqtt_topic",
    "has_wildcards",
    "is_shared_subscription",
    "is_valid_topic_filter",
    "is_valid_topic_name",
    "mqtt_to_core_address",
    "parse_shared_subscription",
    "topic_filter_problem",
    "topic_matches",
    "topic_name_problem",
    "validate_topic_filter",
    "validate_topic_name",
]
