"""Topic validation, matching, shared subscriptions and the Artemis address mapping.

The mapping vectors are the ones of Artemis's MQTTUtilTest and WildcardConfigurationTest
(default core syntax ``. * #`` and a custom ``| $ !``).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt_strategies import topic_filters, topic_names

from pybroker.errors import ProtocolError
from pybroker.protocol.mqtt.topics import (
    CORE_WILDCARDS,
    MQTT_WILDCARDS,
    InvalidTopicError,
    SharedSubscription,
    WildcardSyntax,
    convert_wildcards,
    core_retain_address,
    core_subscription_queue,
    core_to_mqtt_topic,
    is_shared_subscription,
    is_valid_topic_filter,
    is_valid_topic_name,
    mqtt_to_core_address,
    parse_shared_subscription,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

CUSTOM = WildcardSyntax("|", "$", "!")


@pytest.mark.parametrize("name", ["a", "/", "a/b/c", "/finance", "$SYS/x", " ", "a b", "ü/€"])
def test_valid_topic_names(name: str) -> None:
    assert is_valid_topic_name(name)
    validate_topic_name(name)


@pytest.mark.parametrize("name", ["", "a/+", "#", "a/#", "sport+", "a\x00b", "x" * 65_536, "\ud800"])
def test_invalid_topic_names(name: str) -> None:
    assert not is_valid_topic_name(name)
    with pytest.raises(InvalidTopicError) as caught:
        validate_topic_name(name)
    assert isinstance(caught.value, ProtocolError)


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "+", "+/+", "/+", "sport/#", "sport/tennis/+", "+/tennis/#", "a//b", "$SYS/#",
     "$share/group/a/+", "$share/g/#"],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    assert is_valid_topic_filter(topic_filter)
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    ["", "sport/tennis#", "sport/tennis/#/ranking", "sport+", "a/+b", "#/a", "a/b#", "a\x00",
     "$share/", "$share/g", "$share/g/", "$share//a", "$share/g+/a", "$share/g#/a",
     "$share/g/a/#/b"],
)
def test_invalid_topic_filters(topic_filter: str) -> None:
    assert not is_valid_topic_filter(topic_filter)
    with pytest.raises(InvalidTopicError):
        validate_topic_filter(topic_filter)


def test_shared_syntax_can_be_switched_off() -> None:
    assert is_valid_topic_filter("$share/g", shared_subscriptions=False)


def test_shared_subscriptions() -> None:
    assert parse_shared_subscription("$share/consumers/a/+/c") == SharedSubscription(
        "consumers", "a/+/c"
    )
    assert parse_shared_subscription("$share/g/#") == SharedSubscription("g", "#")
    assert parse_shared_subscription("a/b") is None
    assert parse_shared_subscription("$shared/g/a") is None
    assert is_shared_subscription("$share/g/a") and not is_shared_subscription("$SYS/a")
    with pytest.raises(InvalidTopicError, match="no topic filter"):
        parse_shared_subscription("$share/g")


# MQTT 3.1.1 §4.7 and MQTT 5 §4.7 examples.
@pytest.mark.parametrize(
    "topic_filter,topic,expected",
    [
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("#", "anything/at/all", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("+", "", True),
        ("a/b", "a/b", True),
        ("a/b", "a/B", False),
        ("a/b", "a/b/", False),
        ("#", "$SYS/monitor", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("a/+/#", "a/b", True),
        ("a/+/#", "a", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def _reference_match(topic_filter: str, topic: str) -> bool:
    """An independent recursive statement of §4.7, for the property test."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False

    def match(filters: list[str], topics: list[str]) -> bool:
        if not filters:
            return not topics
        if filters[0] == "#":
            return True
        if not topics:
            return False
        return (filters[0] in ("+", topics[0])) and match(filters[1:], topics[1:])

    return match(topic_filter.split("/"), topic.split("/"))


@settings(max_examples=300, deadline=None)
@given(topic_filter=topic_filters(), topic=topic_names, prefix=st.sampled_from(["", "$"]))
def test_topic_matches_agrees_with_reference(topic_filter: str, topic: str, prefix: str) -> None:
    topic = prefix + topic
    assert topic_matches(topic_filter, topic) is _reference_match(topic_filter, topic)


@settings(max_examples=100, deadline=None)
@given(topic=topic_names)
def test_a_topic_matches_itself_and_hash(topic: str) -> None:
    assert topic_matches(topic, topic)
    assert topic_matches("#", topic) is not topic.startswith("$")


# --- Artemis address mapping (MQTTUtilTest, WildcardConfigurationTest) --------------------------

DEFAULT_VECTORS = [
    ("a/b/c", "a.b.c"),
    ("a/+/c", "a.*.c"),
    ("a/+/#", "a.*.#"),
    ("1.0/device", "1\\.0.device"),
    ("+", "*"),
    ("/", "."),
    ("#", "#"),
    ("foo/foo", "foo.foo"),
    ("foo/+/foo/#", "foo.*.foo.#"),
    ("foo.foo/foo", "foo\\.foo.foo"),
    ("a*b/c", "a\\*b.c"),
]
CUSTOM_VECTORS = [
    ("a/b/c", "a|b|c"),
    ("a/+/c", "a|$|c"),
    ("a/+/#", "a|$|!"),
    ("1.0/device", "1.0|device"),
    ("+", "$"),
    ("/", "|"),
    ("#", "!"),
]


@pytest.mark.parametrize("mqtt,core", DEFAULT_VECTORS)
def test_default_core_mapping(mqtt: str, core: str) -> None:
    assert mqtt_to_core_address(mqtt) == core
    assert core_to_mqtt_topic(core) == mqtt


@pytest.mark.parametrize("mqtt,core", CUSTOM_VECTORS)
def test_custom_core_mapping(mqtt: str, core: str) -> None:
    assert mqtt_to_core_address(mqtt, CUSTOM) == core
    assert core_to_mqtt_topic(core, CUSTOM) == mqtt


def test_retain_and_queue_names() -> None:
    assert core_retain_address("a/b/c") == "$sys.mqtt.retain.a.b.c"
    assert core_to_mqtt_topic("$sys.mqtt.retain.a.b.c") == "a/b/c"
    assert core_subscription_queue("a/+/#", "client1") == "client1.a.*.#"
    assert core_subscription_queue("1.0/device", "c") == "c.1\\.0.device"
    assert core_subscription_queue("$share/shareName/a/b/c", "c") == "shareName.a.b.c"
    assert core_subscription_queue("$share/shareName/a/b/c", "c", CUSTOM) == "shareName.a|b|c"
    assert core_subscription_queue("/", "c", CUSTOM) == "c.|"


def test_conversion_quirks_follow_artemis() -> None:
    # Input already escaping an MQTT wildcard: taken as pre-escaped, unescaped afterwards.
    assert mqtt_to_core_address("a\\/b") == "a/b"
    assert mqtt_to_core_address("a\\+b/c") == "a+b.c"
    # A plain backslash is doubled towards core, and not halved back (as in Artemis).
    assert mqtt_to_core_address("a\\b") == "a\\\\b"
    assert core_to_mqtt_topic("a\\\\b") == "a\\\\\\\\b"
    # Same syntax on both sides: returned unchanged.
    assert convert_wildcards("x.y/z", CORE_WILDCARDS, WildcardSyntax(".", "*", "#")) == "x.y/z"


def _java_convert(text: str, source: WildcardSyntax, target: WildcardSyntax) -> str:
    """WildcardConfiguration.convert transcribed step by step (no fast path), as the oracle."""
    if source == target:
        return text
    specials = (source.delimiter, source.single_word, source.any_words)
    escaped = any(text[i] == "\\" and text[i + 1] in specials for i in range(len(text) - 1))
    if escaped:
        chars = list(text)
    else:
        result = text.replace("\\", "\\\\")
        for mine, theirs in (
            (target.delimiter, source.delimiter),
            (target.single_word, source.single_word),
            (target.any_words, source.any_words),
        ):
            if mine != theirs:
                result = result.replace(mine, "\\" + mine)
        chars = list(result)
    for old, new in (
        (source.delimiter, target.delimiter),
        (source.single_word, target.single_word),
        (source.any_words, target.any_words),
    ):
        if old == new:
            continue
        for i in range(len(chars)):
            if chars[i] == old and (i == 0 or chars[i - 1] != "\\"):
                chars[i] = new
    out = "".join(chars)
    if escaped:
        out = out.replace("\\\\", "\\")
        for char in specials:
            out = out.replace("\\" + char, char)
    return out


_SYNTAX_CHARS = "./*+#|$!"
syntaxes = st.lists(st.sampled_from(_SYNTAX_CHARS), min_size=3, max_size=3, unique=True).map(
    lambda chars: WildcardSyntax(*chars)
)


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(st.sampled_from(_SYNTAX_CHARS + "\\ab"), max_size=12),
    source=st.one_of(st.just(MQTT_WILDCARDS), st.just(CORE_WILDCARDS), syntaxes),
    target=st.one_of(st.just(CORE_WILDCARDS), st.just(MQTT_WILDCARDS), syntaxes),
)
def test_conversion_equals_the_stepwise_definition(
    text: str, source: WildcardSyntax, target: WildcardSyntax
) -> None:
    assert convert_wildcards(text, source, target) == _java_convert(text, source, target)


@settings(max_examples=300, deadline=None)
@given(topic=st.one_of(topic_names, topic_filters()).filter(lambda t: "\\" not in t))
def test_mapping_round_trips_without_backslashes(topic: str) -> None:
    for core in (CORE_WILDCARDS, CUSTOM):
        assert core_to_mqtt_topic(mqtt_to_core_address(topic, core), core) == topic
