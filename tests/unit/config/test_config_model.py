"""The configuration dataclasses: defaults, merging, helpers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pybroker.config import (
    ADDRESS_SETTING_DEFAULTS,
    AcceptorConfig,
    AddressSettings,
    Configuration,
    JournalConfig,
    RoutingType,
    SecuritySetting,
)
from pybroker.config.model import resolve_path
from pybroker.errors import ConfigError


def test_routing_type_parse():
    assert RoutingType.parse("anycast") is RoutingType.ANYCAST
    assert RoutingType.parse(" MULTICAST ") is RoutingType.MULTICAST
    with pytest.raises(ValueError, match="ANYCAST or MULTICAST"):
        RoutingType.parse("broadcast")


@pytest.mark.parametrize(("kind", "timeout", "max_io"), [
    ("ASYNCIO", 500000, 4096), ("NIO", 3333333, 1), ("MAPPED", 3333333, 1)])
def test_journal_defaults_by_type(kind, timeout, max_io):
    journal = JournalConfig(type=kind)
    assert (journal.buffer_timeout_ns, journal.max_io) == (timeout, max_io)
    assert JournalConfig(type=kind, buffer_timeout_ns=0).buffer_timeout_ns == 0


def test_writer_buffer_timeout_is_nio_unless_configured():
    # the parsed value stays Artemis's (its AIO default); the writer is NIO (no libaio)
    assert JournalConfig().buffer_timeout_ns == 500000
    assert JournalConfig().writer_buffer_timeout_ns == 3333333
    assert JournalConfig(buffer_timeout_ns=500000).writer_buffer_timeout_ns == 500000
    assert JournalConfig(type="NIO", buffer_timeout_ns=8000).writer_buffer_timeout_ns == 8000
    assert dataclasses.replace(JournalConfig(buffer_timeout_ns=7), file_size=1 << 20) \
        .writer_buffer_timeout_ns == 7
    assert JournalConfig() == JournalConfig(buffer_timeout_ns=500000)  # same configuration


def test_journal_defaults():
    journal = JournalConfig()
    assert (journal.file_size, journal.min_files, journal.pool_files, journal.buffer_size,
            journal.sync_transactional, journal.sync_non_transactional, journal.datasync,
            journal.compact_min_files, journal.compact_percentage,
            journal.lock_acquisition_timeout_ms, journal.file_open_timeout_s,
            journal.max_attic_files) == (
        10485760, 2, -1, 501760, True, True, True, 10, 30, -1, 5, 10)


def test_merged_over_is_field_by_field():
    specific = AddressSettings(max_delivery_attempts=3, dead_letter_address="A")
    general = AddressSettings(max_delivery_attempts=10, expiry_address="E",
                              dead_letter_address="B")
    merged = specific.merged_over(general)
    assert (merged.max_delivery_attempts, merged.dead_letter_address, merged.expiry_address) \
        == (3, "A", "E")
    assert merged.redelivery_delay is None
    assert specific.max_delivery_attempts == 3 and specific.expiry_address is None  # unchanged
    assert AddressSettings().merged_over(general) == general


def test_derived_defaults():
    complete = AddressSettings(redelivery_delay=100, page_size_bytes=1000,
                               max_read_page_messages=7).with_derived_defaults()
    assert complete.max_redelivery_delay == 1000
    assert complete.max_read_page_bytes == 2000
    assert complete.prefetch_page_bytes == 2000
    assert complete.prefetch_page_messages == 7
    explicit = AddressSettings(redelivery_delay=100, max_redelivery_delay=5,
                               page_size_bytes=1000, max_read_page_bytes=10,
                               prefetch_page_bytes=3).with_derived_defaults()
    assert (explicit.max_redelivery_delay, explicit.max_read_page_bytes,
            explicit.prefetch_page_bytes) == (5, 10, 3)


def test_address_setting_defaults_are_artemis_defaults():
    d = ADDRESS_SETTING_DEFAULTS.with_derived_defaults()
    assert (d.max_delivery_attempts, d.redelivery_delay, d.max_redelivery_delay,
            d.redelivery_delay_multiplier, d.max_size_bytes, d.max_size_messages,
            d.page_size_bytes, d.max_read_page_bytes, d.prefetch_page_bytes,
            d.address_full_policy, d.redistribution_delay, d.auto_create_queues,
            d.auto_delete_queues, d.auto_create_addresses, d.auto_delete_addresses,
            d.default_address_routing_type, d.default_queue_routing_type,
            d.dead_letter_queue_prefix, d.expiry_queue_prefix, d.default_max_consumers,
            d.slow_consumer_policy, d.config_delete_queues) == (
        10, 0, 0, 1.0, -1, -1, 10485760, 20971520, 20971520, "PAGE", -1, True, True, True,
        True, RoutingType.MULTICAST, RoutingType.MULTICAST, "DLQ.", "EXP.", -1, "NOTIFY", "OFF")
    unset = {f.name for f in dataclasses.fields(d) if getattr(d, f.name) is None}
    assert unset == {"dead_letter_address", "expiry_address", "page_limit_bytes",
                     "page_limit_messages", "page_full_policy", "disk_full_policy",
                     "default_last_value_key", "default_group_first_key", "id_cache_size"}


def test_address_settings_repr_shows_set_fields_only():
    assert repr(AddressSettings(max_delivery_attempts=2)) == \
        "AddressSettings(max_delivery_attempts=2)"


def test_configuration_paths_and_replace(tmp_path):
    config = Configuration(instance_dir=tmp_path, journal_directory="../shared/journal")
    assert config.journal_directory == tmp_path.parent / "shared" / "journal"
    assert config.node_manager_lock_directory == config.journal_directory
    assert config.paging_directory == tmp_path / "data" / "paging"
    changed = config.replace(name="other")
    assert changed.name == "other" and changed.journal_directory == config.journal_directory
    assert config.name == "localhost"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "x"  # type: ignore[misc]


def test_relative_instance_dir_becomes_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    config = Configuration(instance_dir=Path("inst"))
    assert config.instance_dir == tmp_path / "inst"
    assert config.journal_directory == tmp_path / "inst" / "data" / "journal"


def test_resolve_path_keeps_absolute_and_normalises(tmp_path):
    assert resolve_path(tmp_path, "/a/b/../c") == Path("/a/c")
    assert resolve_path(tmp_path / "x", "../y") == tmp_path / "y"


def test_acceptor_params_are_read_only():
    acceptor = AcceptorConfig(name="a", url="tcp://h:1", params={"x": "1"})
    with pytest.raises(TypeError):
        acceptor.params["x"] = "2"  # type: ignore[index]
    assert acceptor.param("x") == "1" and acceptor.param("y", "d") == "d"
    assert acceptor.accepts("AMQP")
    with pytest.raises(ConfigError):
        AcceptorConfig(name="a", url="u", params={"n": "x"}).param_int("n", 1)


def test_security_setting():
    setting = SecuritySetting({"send": frozenset({"a"}), "createNonDurableQueue":
                               frozenset({"t"})})
    assert setting.roles_for("send") == {"a"}
    assert setting.roles_for("consume") == frozenset()
    assert setting.roles_for("deleteTempQueue") == frozenset()
    assert setting.allows("createTempQueue", {"t"})
    assert not setting.allows("send", set())


def test_replace_moves_a_following_lock_directory(tmp_path):
    config = Configuration(instance_dir=tmp_path)
    moved = config.replace(journal_directory="shared/journal")
    assert moved.journal_directory == tmp_path / "shared" / "journal"
    assert moved.node_manager_lock_directory == moved.journal_directory
    pinned = Configuration(instance_dir=tmp_path, node_manager_lock_directory="/locks")
    assert pinned.replace(journal_directory="j").node_manager_lock_directory == Path("/locks")
