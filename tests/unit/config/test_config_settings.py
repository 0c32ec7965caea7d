"""Address-settings and security-settings matching with Artemis precedence."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybroker.broker.settings import (
    AddressSettingsRepository,
    SecurityRepository,
    compare_specificity,
    wildcard_matches,
)
from pybroker.config import (
    ADDRESS_SETTING_DEFAULTS,
    AddressSettings,
    SecuritySetting,
    WildcardConfig,
    parse_config,
)

# --------------------------------------------------------------------------------------------
# Wildcard matching


@pytest.mark.parametrize(("pattern", "address", "expected"), [
    ("news.europe", "news.europe", True),
    ("news.europe", "news.europe.sport", False),
    ("news.*", "news.europe", True),
    ("news.*", "news", False),
    ("news.*", "news.europe.sport", False),
    ("news.*.sport", "news.europe.sport", True),
    ("news.*.sport", "news.europe.uk.sport", False),
    ("news.#", "news", True),  # zero words
    ("news.#", "news.europe", True),
    ("news.#", "news.europe.sport.uk", True),
    ("news.#", "newsletter", False),
    ("news.europe.#", "news.europe", True),
    ("news.europe.#", "news.usa", False),
    ("#", "anything.at.all", True),
    ("#", "", True),
    ("*", "one", True),
    ("*", "one.two", False),
    ("#.sport", "sport", True),
    ("#.sport", "news.europe.sport", True),
    ("#.sport", "news.europe.sports", False),
    ("news.#.sport", "news.sport", True),
    ("news.#.sport", "news.a.b.sport", True),
    ("news.#.sport", "news.a.b.sports", False),
    ("a+b.*", "a+b.c", True),  # regex characters are literal
    ("a+b.*", "aab.c", False),
    ("a.b", "aXb", False),
    ("q(1).#", "q(1).x", True),
])
def test_wildcard_matches(pattern, address, expected):
    assert wildcard_matches(pattern, address) is expected


def test_wildcard_matches_with_another_syntax():
    mqtt = WildcardConfig(delimiter="/", any_words="+", single_word="?")
    assert wildcard_matches("a/+", "a/b/c", mqtt)
    assert wildcard_matches("a/?/c", "a/b/c", mqtt)
    assert not wildcard_matches("a/?", "a/b/c", mqtt)
    assert not wildcard_matches("a.#", "a.b", mqtt)  # '#' is ordinary here
    assert wildcard_matches("a.#", "a.#", mqtt)


def reference_match(pattern: list[str], address: list[str]) -> bool:
    """Word-by-word definition: '#' = zero or more words, '*' = exactly one word."""
    if not pattern:
        return not address
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return reference_match(rest, address) or (bool(address) and reference_match(
            pattern, address[1:]))
    if not address:
        return False
    if head == "*":
        return reference_match(rest, address[1:])
    return head == address[0] and reference_match(rest, address[1:])


WORDS = st.sampled_from(["a", "b", "ab", "news", "x1"])
ADDRESSES = st.lists(WORDS, min_size=1, max_size=6)
PATTERNS = st.lists(st.one_of(WORDS, st.just("*"), st.just("#")), min_size=1, max_size=5)


@settings(max_examples=400, deadline=None)
@given(pattern=PATTERNS, address=ADDRESSES)
def test_wildcard_matches_agrees_with_the_reference(pattern, address):
    assert wildcard_matches(".".join(pattern), ".".join(address)) == \
        reference_match(pattern, address)


@settings(max_examples=200, deadline=None)
@given(pattern=PATTERNS, address=ADDRESSES)
def test_custom_delimiter_agrees_with_the_reference(pattern, address):
    syntax = WildcardConfig(delimiter="/", any_words="#", single_word="*")
    assert wildcard_matches("/".join(pattern), "/".join(address), syntax) == \
        reference_match(pattern, address)


# --------------------------------------------------------------------------------------------
# Precedence (Artemis's MatchComparator)


def most_specific_first(patterns, address):
    repository = SecurityRepository([(p, SecuritySetting()) for p in patterns])
    return [match for match, _ in repository.matches_for(address)]


def test_exact_beats_single_word_beats_any_words():
    assert most_specific_first(["#", "news.*", "news.europe", "news.#"], "news.europe") == \
        ["news.europe", "news.*", "news.#", "#"]


def test_longer_any_words_match_wins():
    assert most_specific_first(["#", "a.#", "a.b.#", "a.b.c.#"], "a.b.c.d") == \
        ["a.b.c.#", "a.b.#", "a.#", "#"]


def test_single_word_compared_word_by_word():
    # An earlier '*' is less specific: 'a.*.c' beats '*.b.c' beats '*.*.c'.
    assert most_specific_first(["*.*.c", "*.b.c", "a.*.c", "a.b.*"], "a.b.c") == \
        ["a.b.*", "a.*.c", "*.b.c", "*.*.c"]


def test_order_is_independent_of_insertion():
    patterns = ["#", "orders.#", "orders.*", "orders.eu.*", "*.eu.#", "orders.eu.fr"]
    expected = most_specific_first(patterns, "orders.eu.fr")
    for seed in range(20):
        shuffled = patterns[:]
        random.Random(seed).shuffle(shuffled)
        assert most_specific_first(shuffled, "orders.eu.fr") == expected
    assert expected[0] == "orders.eu.fr" and expected[-1] == "#"


def test_compare_specificity_signs():
    assert compare_specificity("a.b", "a.*") < 0
    assert compare_specificity("a.*", "a.#") < 0
    assert compare_specificity("a.#", "a.b.#") > 0
    assert compare_specificity("a.*.c", "*.b.c") < 0


# --------------------------------------------------------------------------------------------
# Address settings: merge field by field


def test_merge_field_by_field():
    repository = AddressSettingsRepository([
        ("#", AddressSettings(max_delivery_attempts=5, dead_letter_address="DLQ",
                              redelivery_delay=100)),
        ("orders.#", AddressSettings(max_delivery_attempts=3)),
        ("orders.eu", AddressSettings(expiry_address="EXP")),
    ], WildcardConfig())
    eu = repository.match("orders.eu")
    assert (eu.expiry_address, eu.max_delivery_attempts, eu.dead_letter_address,
            eu.redelivery_delay) == ("EXP", 3, "DLQ", 100)
    assert eu.max_redelivery_delay == 1000  # derived after merging
    assert eu.address_full_policy == "PAGE"  # from the defaults
    other = repository.match("payments")
    assert (other.max_delivery_attempts, other.expiry_address) == (5, None)


def test_no_match_gives_the_defaults():
    repository = AddressSettingsRepository([])
    assert repository.match("x") == ADDRESS_SETTING_DEFAULTS.with_derived_defaults()


def test_more_specific_unset_field_does_not_hide_the_general_one():
    repository = AddressSettingsRepository([
        ("a.*", AddressSettings(max_size_bytes=10)),
        ("a.b", AddressSettings(page_size_bytes=1000)),
    ])
    settings = repository.match("a.b")
    assert (settings.max_size_bytes, settings.page_size_bytes, settings.max_read_page_bytes) \
        == (10, 1000, 2000)


def test_cache_invalidation_on_add_and_remove():
    repository = AddressSettingsRepository([("#", AddressSettings(max_delivery_attempts=5))])
    assert repository.match("a.b").max_delivery_attempts == 5
    repository.add_match("a.*", AddressSettings(max_delivery_attempts=2))
    assert repository.match("a.b").max_delivery_attempts == 2
    repository.add_match("a.b", AddressSettings(max_delivery_attempts=1))
    assert repository.match("a.b").max_delivery_attempts == 1
    assert repository.remove_match("a.b") is True
    assert repository.match("a.b").max_delivery_attempts == 2
    assert repository.remove_match("a.*") is True
    assert repository.match("a.b").max_delivery_attempts == 5
    assert repository.remove_match("nope") is False
    repository.add_match("#", AddressSettings(max_delivery_attempts=9))  # replaces
    assert repository.match("a.b").max_delivery_attempts == 9
    assert len(repository) == 1


def test_match_is_cached_per_address():
    repository = AddressSettingsRepository([("#", AddressSettings(max_delivery_attempts=5))])
    assert repository.match("a") is repository.match("a")


def test_cache_is_bounded():
    repository = AddressSettingsRepository([("#", AddressSettings())], cache_size=3)
    for index in range(10):
        repository.match(f"a{index}")
    assert len(repository._cache) == 3
    assert repository.match("a9").max_delivery_attempts == 10


def test_literal_match_markers():
    repository = AddressSettingsRepository([
        ("#", AddressSettings(max_delivery_attempts=5)),
        ("(orders.#)", AddressSettings(max_delivery_attempts=1)),
    ], literal_match_markers="()")
    assert repository.match("orders.#").max_delivery_attempts == 1  # the literal address
    assert repository.match("orders.eu").max_delivery_attempts == 5  # not a wildcard
    assert repository.remove_match("(orders.#)")
    assert repository.match("orders.#").max_delivery_attempts == 5
    with pytest.raises(ValueError):
        AddressSettingsRepository([], literal_match_markers="(")


def test_repository_from_parsed_configuration():
    config = parse_config("""<core>
        <address-settings>
          <address-setting match="#"><max-delivery-attempts>7</max-delivery-attempts>
            <dead-letter-address>DLQ</dead-letter-address></address-setting>
          <address-setting match="jobs.*"><max-delivery-attempts>2</max-delivery-attempts>
          </address-setting>
        </address-settings></core>""", instance_dir="/x")
    repository = AddressSettingsRepository(config.address_settings, config.wildcard_addresses)
    jobs = repository.match("jobs.nightly")
    assert (jobs.max_delivery_attempts, jobs.dead_letter_address) == (2, "DLQ")


# --------------------------------------------------------------------------------------------
# Security settings: most specific only


def test_security_uses_the_most_specific_match_only():
    general = SecuritySetting({"send": frozenset({"amq"}), "consume": frozenset({"amq"})})
    specific = SecuritySetting({"consume": frozenset({"readers"})})
    repository = SecurityRepository([("#", general), ("orders.#", specific)])
    setting = repository.match("orders.eu")
    assert setting is specific
    assert setting.roles_for("send") == frozenset()  # not merged: omitted = denied
    assert repository.match("payments") is general


def test_security_no_match_is_none_and_cached():
    repository = SecurityRepository([("orders", SecuritySetting())])
    assert repository.match("other") is None
    assert repository.match("other") is None
    repository.add_match("#", SecuritySetting({"send": frozenset({"x"})}))
    assert repository.match("other").roles_for("send") == {"x"}


def test_security_fqqn_needs_an_exact_match():
    by_address = SecuritySetting({"consume": frozenset({"a"})})
    by_queue = SecuritySetting({"consume": frozenset({"q"})})
    repository = SecurityRepository([("#", SecuritySetting()), ("orders", by_address),
                                     ("orders::audit", by_queue)])
    assert repository.match_queue("orders", "audit") is by_queue
    assert repository.match_queue("orders", "other") is by_address
    assert repository.match_queue("orders", None) is by_address
    assert repository.contains_exact_match("orders::audit")
    assert not repository.contains_exact_match("#")
