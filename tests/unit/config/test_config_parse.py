"""broker.xml parsing: the create-style file, the seed lab's edits, defaults and every error."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from pybroker.config import (
    ADDRESS_SETTING_DEFAULTS,
    DEFAULT_GLOBAL_MAX_SIZE,
    AddressSettings,
    Configuration,
    JournalConfig,
    RoutingType,
    default_config,
    instance_dir_for,
    load_config,
    parse_config,
)
from pybroker.config.parse import (
    ARTEMIS_ADDRESS_SETTING_ELEMENTS,
    ARTEMIS_CORE_ELEMENTS,
    parse_size,
    parse_url,
)
from pybroker.errors import ConfigError

INSTANCE = Path("/srv/broker1")

# The seed lab's snippets, exactly as the lab writes them.
LAB_DIRECTORIES = """
<paging-directory>../sharedstore/data/paging</paging-directory>
<bindings-directory>../sharedstore/data/bindings</bindings-directory>
<journal-directory>../sharedstore/data/journal</journal-directory>
<large-messages-directory>../sharedstore/data/large-messages</large-messages-directory>
"""
LAB_CLUSTER = """
<connectors>
   <connector name="netty-connector">tcp://localhost:{own}</connector>
   <connector name="netty-backup-connector">tcp://localhost:{other}</connector>
</connectors>
<cluster-user>cluster-admin</cluster-user>
<cluster-password>password-admin</cluster-password>
<cluster-connections>
   <cluster-connection name="my-cluster">
      <connector-ref>netty-connector</connector-ref>
      <retry-interval>500</retry-interval>
      <use-duplicate-detection>true</use-duplicate-detection>
      <message-load-balancing>STRICT</message-load-balancing>
      <max-hops>1</max-hops>
      <static-connectors>
         <connector-ref>netty-backup-connector</connector-ref>
      </static-connectors>
   </cluster-connection>
</cluster-connections>
"""
LAB_MASTER_HA = ("<ha-policy><shared-store><master><failover-on-shutdown>true"
                 "</failover-on-shutdown></master></shared-store></ha-policy>")
LAB_SLAVE_HA = ("<ha-policy><shared-store><slave><allow-failback>true</allow-failback>"
                "<failover-on-shutdown>true</failover-on-shutdown></slave></shared-store>"
                "</ha-policy>")

LAB_DIRECTORY_ELEMENTS = ("paging-directory", "bindings-directory", "journal-directory",
                          "large-messages-directory")


def _without_directories(xml: str) -> str:
    for tag in LAB_DIRECTORY_ELEMENTS:
        start = xml.index(f"<{tag}>")
        end = xml.index(f"</{tag}>") + len(f"</{tag}>")
        xml = xml[:start] + xml[end:]
    return xml


def lab_broker_xml(create_xml_text: str, with_in_core, role: str) -> str:
    own, other = (61616, 61617) if role == "master" else (61617, 61616)
    xml = _without_directories(create_xml_text)
    ha = LAB_MASTER_HA if role == "master" else LAB_SLAVE_HA
    return with_in_core(xml, LAB_DIRECTORIES + LAB_CLUSTER.format(own=own, other=other) + ha)


def parse(text: str, **kwargs) -> Configuration:
    kwargs.setdefault("instance_dir", INSTANCE)
    kwargs.setdefault("file", "broker.xml")
    return parse_config(text, **kwargs)


# --------------------------------------------------------------------------------------------
# The create-style broker.xml


def test_create_style_file_loads_without_warnings(create_xml_text):
    config = parse(create_xml_text)
    assert config.warnings == ()
    assert config.name == "master"
    assert config.persistence_enabled is True
    assert config.max_redelivery_records == 1
    assert config.journal == JournalConfig(
        type="ASYNCIO", min_files=2, pool_files=10, device_block_size=4096,
        file_size=10 * 1024 * 1024, buffer_timeout_ns=8000, max_io=4096, datasync=True)
    assert config.paging_directory == INSTANCE / "data/paging"
    assert config.bindings_directory == INSTANCE / "data/bindings"
    assert config.journal_directory == INSTANCE / "data/journal"
    assert config.large_messages_directory == INSTANCE / "data/large-messages"
    assert config.node_manager_lock_directory == config.journal_directory
    assert config.disk_scan_period == 5000
    assert config.max_disk_usage == 90
    assert config.critical_analyzer is True
    assert config.critical_analyzer_timeout == 120000
    assert config.critical_analyzer_check_period == 60000
    assert config.critical_analyzer_policy == "HALT"
    assert config.page_sync_timeout_ns == 188000
    assert config.global_max_messages == -1
    assert config.global_max_size == DEFAULT_GLOBAL_MAX_SIZE
    assert config.ha_policy.kind == "primary-only"


def test_create_style_acceptors(create_xml_text):
    config = parse(create_xml_text)
    assert [a.name for a in config.acceptors] == ["artemis", "amqp", "stomp", "hornetq", "mqtt"]
    assert [(a.host, a.port) for a in config.acceptors] == [
        ("0.0.0.0", 61616), ("0.0.0.0", 5672), ("0.0.0.0", 61613), ("0.0.0.0", 5445),
        ("0.0.0.0", 1883)]
    artemis = config.acceptor("artemis")
    assert artemis.protocols == frozenset({"CORE", "AMQP", "STOMP", "HORNETQ", "MQTT",
                                           "OPENWIRE"})
    assert artemis.param_int("tcpSendBufferSize", 0) == 1048576
    assert artemis.param_int("amqpCredits", 0) == 1000
    assert artemis.param_bool("amqpDuplicateDetection", False) is True
    assert artemis.param_bool("supportAdvisory", True) is False
    assert artemis.param_int("absent", 7) == 7
    hornetq = config.acceptor("hornetq")
    assert hornetq.params["anycastPrefix"] == "jms.queue."
    assert hornetq.params["multicastPrefix"] == "jms.topic."
    assert hornetq.protocols == frozenset({"HORNETQ", "STOMP"})
    assert config.acceptor("mqtt").accepts("mqtt") and not config.acceptor("mqtt").accepts("AMQP")


def test_create_style_security_address_settings_and_addresses(create_xml_text):
    config = parse(create_xml_text)
    assert config.security_enabled is True
    [(match, setting)] = config.security_settings
    assert match == "#"
    assert set(setting.permissions) == {
        "createNonDurableQueue", "deleteNonDurableQueue", "createDurableQueue",
        "deleteDurableQueue", "createAddress", "deleteAddress", "consume", "browse", "send",
        "manage"}
    assert all(roles == frozenset({"amq"}) for roles in setting.permissions.values())
    assert setting.roles_for("view") == frozenset()

    assert [m for m, _ in config.address_settings] == ["activemq.management#", "#"]
    management, catch_all = (s for _, s in config.address_settings)
    assert management.set_fields() == {
        "dead_letter_address": "DLQ", "expiry_address": "ExpiryQueue", "redelivery_delay": 0,
        "max_size_bytes": -1, "message_counter_history_day_limit": 10,
        "address_full_policy": "PAGE", "auto_create_queues": True,
        "auto_create_addresses": True}
    assert catch_all.page_size_bytes == 10 * 1024 * 1024
    assert catch_all.max_read_page_bytes == 20 * 1024 * 1024
    assert catch_all.auto_delete_queues is False
    assert catch_all.page_limit_messages == -1

    assert [(a.name, a.routing_types, [(q.name, q.routing_type, q.address) for q in a.queues])
            for a in config.addresses] == [
        ("DLQ", frozenset({RoutingType.ANYCAST}), [("DLQ", RoutingType.ANYCAST, "DLQ")]),
        ("ExpiryQueue", frozenset({RoutingType.ANYCAST}),
         [("ExpiryQueue", RoutingType.ANYCAST, "ExpiryQueue")]),
    ]


def test_load_config_uses_parent_of_etc_as_instance(tmp_path, create_xml_text):
    etc = tmp_path / "master" / "etc"
    etc.mkdir(parents=True)
    (etc / "broker.xml").write_text(create_xml_text)
    config = load_config(etc / "broker.xml")
    assert config.instance_dir == tmp_path / "master"
    assert config.config_file == etc / "broker.xml"
    assert config.journal_directory == tmp_path / "master" / "data" / "journal"


def test_load_config_outside_etc_uses_the_files_folder(tmp_path, create_xml_text):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "broker.xml").write_text(create_xml_text)
    assert load_config(folder / "broker.xml").instance_dir == folder
    assert load_config(folder / "broker.xml", instance_dir=tmp_path).instance_dir == tmp_path
    assert instance_dir_for(tmp_path / "x" / "etc" / "b.xml") == tmp_path / "x"


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "nope.xml")
    assert raised.value.file == str(tmp_path / "nope.xml")
    assert "cannot read" in str(raised.value)


# --------------------------------------------------------------------------------------------
# The seed lab


def test_lab_master(create_xml_text, with_in_core, caplog):
    text = lab_broker_xml(create_xml_text, with_in_core, "master")
    with caplog.at_level(logging.WARNING, logger="pybroker.config"):
        config = parse(text, instance_dir="/labs/master")
    shared = Path("/labs/sharedstore/data")
    assert config.paging_directory == shared / "paging"
    assert config.bindings_directory == shared / "bindings"
    assert config.journal_directory == shared / "journal"
    assert config.large_messages_directory == shared / "large-messages"
    assert config.node_manager_lock_directory == shared / "journal"
    assert {n: (c.host, c.port) for n, c in config.connectors.items()} == {
        "netty-connector": ("localhost", 61616), "netty-backup-connector": ("localhost", 61617)}
    assert config.cluster_user == "cluster-admin"
    assert config.cluster_password == "password-admin"
    [cluster] = config.cluster_connections
    assert cluster.name == "my-cluster"
    assert cluster.connector_ref == "netty-connector"
    assert cluster.retry_interval == 500
    assert cluster.use_duplicate_detection is True
    assert cluster.message_load_balancing == "STRICT"
    assert cluster.max_hops == 1
    assert cluster.static_connectors == ("netty-backup-connector",)
    assert cluster.discovery_group_ref is None
    assert config.ha_policy.kind == "shared-store-primary"
    assert config.ha_policy.failover_on_shutdown is True
    assert config.ha_policy.wait_for_activation is True
    [warning] = config.warnings
    assert "<master>" in warning and "deprecated" in warning and "primary" in warning
    assert any("deprecated" in r.getMessage() and r.name == "pybroker.config"
               for r in caplog.records)


def test_lab_slave(create_xml_text, with_in_core):
    config = parse(lab_broker_xml(create_xml_text, with_in_core, "slave"),
                   instance_dir="/labs/slave")
    assert config.connectors["netty-connector"].port == 61617
    assert config.connectors["netty-backup-connector"].port == 61616
    assert config.journal_directory == Path("/labs/sharedstore/data/journal")
    policy = config.ha_policy
    assert policy.kind == "shared-store-backup"
    assert policy.is_backup and policy.is_shared_store
    assert policy.allow_failback is True
    assert policy.failover_on_shutdown is True
    assert policy.restart_backup is True  # Artemis's code default
    assert policy.scale_down is None
    assert len(config.warnings) == 1 and "<slave>" in config.warnings[0]


@pytest.mark.parametrize(("role", "kind"), [("primary", "shared-store-primary"),
                                            ("backup", "shared-store-backup")])
def test_modern_role_names_have_no_warning(core_xml, role, kind):
    config = parse(core_xml(f"<ha-policy><shared-store><{role}/></shared-store></ha-policy>"))
    assert config.ha_policy.kind == kind
    assert config.warnings == ()
    assert config.ha_policy.failover_on_shutdown is False


def test_backup_options(core_xml):
    config = parse(core_xml("""
      <ha-policy><shared-store><backup>
         <allow-failback>false</allow-failback>
         <restart-backup>false</restart-backup>
         <failover-on-shutdown>true</failover-on-shutdown>
      </backup></shared-store></ha-policy>"""))
    assert (config.ha_policy.allow_failback, config.ha_policy.restart_backup,
            config.ha_policy.failover_on_shutdown) == (False, False, True)


def test_primary_wait_for_activation(core_xml):
    config = parse(core_xml("<ha-policy><shared-store><primary><wait-for-activation>false"
                            "</wait-for-activation></primary></shared-store></ha-policy>"))
    assert config.ha_policy.wait_for_activation is False


def test_no_ha_policy_is_primary_only(core_xml):
    config = parse(core_xml(""))
    assert config.ha_policy.kind == "primary-only"
    assert not config.ha_policy.is_shared_store


def test_live_only_is_primary_only_with_warning(core_xml):
    config = parse(core_xml("<ha-policy><live-only/></ha-policy>"))
    assert config.ha_policy.kind == "primary-only"
    assert "live-only" in config.warnings[0] and "deprecated" in config.warnings[0]
    assert parse(core_xml("<ha-policy><primary-only/></ha-policy>")).warnings == ()


def test_failback_delay_is_ignored_with_warning(core_xml):
    config = parse(core_xml("<ha-policy><shared-store><primary><failback-delay>5000"
                            "</failback-delay></primary></shared-store></ha-policy>"))
    assert config.ha_policy.kind == "shared-store-primary"
    assert "failback-delay" in config.warnings[0]


def test_scale_down_is_parsed_with_warning(core_xml):
    config = parse(core_xml("""
      <connectors><connector name="other">tcp://h:1</connector></connectors>
      <ha-policy><shared-store><backup>
        <scale-down>
          <enabled>false</enabled><group-name>g</group-name><commit-interval>5</commit-interval>
          <connectors><connector-ref>other</connector-ref></connectors>
        </scale-down>
      </backup></shared-store></ha-policy>"""))
    scale_down = config.ha_policy.scale_down
    assert (scale_down.enabled, scale_down.group_name, scale_down.commit_interval,
            scale_down.connectors) == (False, "g", 5, ("other",))
    assert any("scale down" in w for w in config.warnings)


def test_scale_down_unknown_connector(core_xml, line_of):
    text = core_xml("""<ha-policy><primary-only><scale-down><connectors>
        <connector-ref>missing</connector-ref></connectors></scale-down></primary-only>
        </ha-policy>""")
    with pytest.raises(ConfigError) as raised:
        parse(text)
    assert raised.value.line == line_of(text, "<connector-ref>missing")
    assert "missing" in str(raised.value)


@pytest.mark.parametrize("body", [
    "<ha-policy><replication><primary/></replication></ha-policy>",
    "<ha-policy><replication><slave/></replication></ha-policy>",
])
def test_replication_is_refused(core_xml, line_of, body):
    text = core_xml(body)
    with pytest.raises(ConfigError) as raised:
        parse(text)
    assert "shared-store" in str(raised.value) and "replication" in str(raised.value)
    assert raised.value.element == "replication"
    assert raised.value.line == line_of(text, "<replication>")


def test_colocated_is_refused(core_xml):
    with pytest.raises(ConfigError) as raised:
        parse(core_xml("<ha-policy><shared-store><colocated><primary/><backup/></colocated>"
                       "</shared-store></ha-policy>"))
    assert raised.value.element == "colocated"
    assert "colocated" in str(raised.value)


@pytest.mark.parametrize(("body", "message"), [
    ("<ha-policy><shared-store/></ha-policy>", "needs a <primary> or a <backup>"),
    ("<ha-policy><shared-store><primary/><backup/></shared-store></ha-policy>",
     "exactly one of"),
    ("<ha-policy><primary-only/><shared-store><primary/></shared-store></ha-policy>",
     "exactly one policy"),
    ("<ha-policy><shared-store><primary><allow-failback>true</allow-failback></primary>"
     "</shared-store></ha-policy>", "unknown element <allow-failback>"),
])
def test_bad_ha_policies(core_xml, body, message):
    with pytest.raises(ConfigError, match=message):
        parse(core_xml(body))


# --------------------------------------------------------------------------------------------
# Defaults


def test_defaults_of_an_empty_core(core_xml):
    config = parse(core_xml(""))
    assert config.warnings == ()
    assert config.name == "localhost"
    assert config.persistence_enabled is True
    assert config.security_enabled is True
    assert config.paging_directory == INSTANCE / "data/paging"
    assert config.bindings_directory == INSTANCE / "data/bindings"
    assert config.journal_directory == INSTANCE / "data/journal"
    assert config.large_messages_directory == INSTANCE / "data/largemessages"
    assert config.node_manager_lock_directory == INSTANCE / "data/journal"
    assert config.create_bindings_dir and config.create_journal_dir
    assert config.journal == JournalConfig()
    assert config.journal.buffer_timeout_ns == 500000 and config.journal.max_io == 4096
    assert config.journal.buffer_size == 490 * 1024
    assert config.journal.file_size == 10485760
    assert config.journal.lock_acquisition_timeout_ms == -1
    assert config.acceptors == () and dict(config.connectors) == {}
    assert config.cluster_user == "ACTIVEMQ.CLUSTER.ADMIN.USER"
    assert config.cluster_password == "CHANGE ME!!"
    assert config.global_max_size == 512 * 1024 * 1024
    assert config.global_max_messages == -1
    assert config.max_disk_usage == 90
    assert config.min_disk_free == -1
    assert config.disk_scan_period == 5000
    assert config.page_sync_timeout_ns == 3333333
    assert config.id_cache_size == 20000 and config.persist_id_cache is True
    assert config.message_expiry_scan_period == 30000
    assert config.address_queue_scan_period == 30000
    assert config.management_address == "activemq.management"
    assert config.internal_naming_prefix == "$.artemis.internal."
    assert config.critical_analyzer_check_period == 60000
    assert config.wildcard_addresses.delimiter == "."
    assert config.literal_match_markers is None


def test_nio_journal_defaults_and_page_sync_timeout(core_xml):
    config = parse(core_xml("<journal-type>NIO</journal-type>"))
    assert config.journal.buffer_timeout_ns == 3333333
    assert config.journal.max_io == 1
    assert config.page_sync_timeout_ns == 3333333
    tuned = parse(core_xml("<journal-type>NIO</journal-type>"
                           "<journal-buffer-timeout>1000</journal-buffer-timeout>"))
    assert tuned.page_sync_timeout_ns == 1000  # Artemis uses the NIO buffer timeout


def test_critical_analyzer_check_period_defaults_to_half_the_timeout(core_xml):
    config = parse(core_xml("<critical-analyzer-timeout>10000</critical-analyzer-timeout>"))
    assert config.critical_analyzer_check_period == 5000


def test_global_max_size(core_xml):
    assert parse(core_xml("<global-max-size>-1</global-max-size>")).global_max_size == \
        DEFAULT_GLOBAL_MAX_SIZE
    assert parse(core_xml("<global-max-size>100Mb</global-max-size>")).global_max_size == \
        100 * 1024 * 1024


def test_node_manager_lock_directory_and_absolute_paths(core_xml):
    config = parse(core_xml("<journal-directory>/shared/journal</journal-directory>"
                            "<node-manager-lock-directory>locks</node-manager-lock-directory>"))
    assert config.journal_directory == Path("/shared/journal")
    assert config.node_manager_lock_directory == INSTANCE / "locks"


def test_bare_core_root_and_no_namespaces():
    config = parse("<core><name>plain</name><journal-type>NIO</journal-type></core>")
    assert config.name == "plain" and config.journal.type == "NIO"
    config = parse("<configuration><core><name>nons</name></core></configuration>")
    assert config.name == "nons"
    config = parse('<core xmlns="urn:activemq:core"><name>ns</name></core>')
    assert config.name == "ns"


def test_other_children_of_configuration_are_ignored_with_warning():
    config = parse('<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core"/>'
                   '<jms xmlns="urn:activemq:jms"/></configuration>')
    assert "<jms>" in config.warnings[0]


@pytest.mark.parametrize(("text", "message"), [
    ("<broker/>", "root element must be"),
    ('<configuration xmlns="urn:activemq"/>', "no <core"),
    ("<configuration><core/><core/></configuration>", "more than one <core>"),
    ('<core xmlns="urn:other"/>', "root element must be"),
])
def test_bad_document_structure(text, message):
    with pytest.raises(ConfigError, match=message):
        parse(text)


def test_default_config(tmp_path):
    config = default_config(instance_dir=tmp_path)
    assert config.warnings == ()
    [acceptor] = config.acceptors
    assert (acceptor.scheme, acceptor.host, acceptor.port, acceptor.protocols) == \
        ("tcp", "localhost", 61616, None)
    assert config.security_enabled is False
    assert config.persistence_enabled is True
    assert config.journal_directory == tmp_path / "data" / "journal"
    assert config.large_messages_directory == tmp_path / "data" / "large-messages"
    assert [m for m, _ in config.address_settings] == ["activemq.management#", "#"]
    assert dict(config.address_settings)["#"].dead_letter_address == "DLQ"
    assert [a.name for a in config.addresses] == ["DLQ", "ExpiryQueue"]
    other = default_config(instance_dir=tmp_path, port=0, persistence_enabled=False)
    assert other.acceptors[0].port == 0
    assert other.persistence_enabled is False


def test_default_config_instance_dir_defaults_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_config().instance_dir == tmp_path


# --------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize(("text", "expected"), [
    ("10485760", 10485760), ("-1", -1), ("0", 0), ("10b", 10), ("10B", 10),
    ("1K", 1024), ("1k", 1024), ("1KB", 1024), ("1kb", 1024), ("1KiB", 1024), ("1kib", 1024),
    ("10M", 10 * 1024**2), ("10MB", 10 * 1024**2), ("10MiB", 10 * 1024**2),
    ("10mib", 10 * 1024**2), ("2G", 2 * 1024**3), ("2GB", 2 * 1024**3),
    ("2GiB", 2 * 1024**3), (" 10 M ", 10 * 1024**2), ("10 MiB", 10 * 1024**2),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["ten", "10T", "1.5M", "10 M B", "M", "", "10ib", "- 1",
                                  "0x10", "10KK"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_size_suffixes_in_elements(core_xml):
    config = parse(core_xml("<journal-file-size>1MiB</journal-file-size>"
                            "<journal-buffer-size>490KB</journal-buffer-size>"
                            "<min-disk-free>1g</min-disk-free>"))
    assert config.journal.file_size == 1024 * 1024
    assert config.journal.buffer_size == 490 * 1024
    assert config.min_disk_free == 1024**3


# --------------------------------------------------------------------------------------------
# Errors: file, line, element, and "did you mean"


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        parse(text)
    return raised.value


def test_misspelt_element(core_xml, line_of):
    text = core_xml("<name>x</name>\n<journal-fille-size>10M</journal-fille-size>")
    error = _error(text)
    assert error.file == "broker.xml"
    assert error.line == line_of(text, "<journal-fille-size>")
    assert error.element == "journal-fille-size"
    assert "did you mean <journal-file-size>?" in str(error)
    assert str(error).startswith(f"broker.xml:{error.line}: <journal-fille-size>: ")


def test_misspelt_element_in_address_setting(core_xml, line_of):
    text = core_xml('<address-settings><address-setting match="#">\n'
                    "<max-size-byte>1</max-size-byte></address-setting></address-settings>")
    error = _error(text)
    assert error.line == line_of(text, "<max-size-byte>")
    assert "did you mean <max-size-bytes>?" in str(error)


def test_misspelt_element_in_cluster_connection(core_xml):
    error = _error(core_xml("""<connectors><connector name="c">tcp://h:1</connector></connectors>
        <cluster-connections><cluster-connection name="x"><connector-ref>c</connector-ref>
        <max-hop>1</max-hop></cluster-connection></cluster-connections>"""))
    assert "did you mean <max-hops>?" in str(error)


def test_element_in_the_wrong_place(core_xml):
    error = _error(core_xml("<max-size-bytes>10M</max-size-bytes>"))
    assert "belongs inside <address-setting>" in str(error)
    assert error.element == "max-size-bytes"


def test_unknown_element_without_suggestion(core_xml):
    error = _error(core_xml("<zzzz>1</zzzz>"))
    assert "unknown element <zzzz> in <core>" in str(error)
    assert "did you mean" not in str(error)


def test_case_suggestion(core_xml):
    assert "did you mean <journal-type>?" in str(_error(core_xml(
        "<Journal-Type>NIO</Journal-Type>")))


@pytest.mark.parametrize(("body", "element", "message"), [
    ("<journal-min-files>two</journal-min-files>", "journal-min-files", "bad integer 'two'"),
    ("<journal-min-files>1.5</journal-min-files>", "journal-min-files", "bad integer"),
    ("<journal-min-files>0</journal-min-files>", "journal-min-files", "greater than 0"),
    ("<journal-min-files>99999999999</journal-min-files>", "journal-min-files", "32-bit"),
    ("<journal-pool-files>-2</journal-pool-files>", "journal-pool-files", "-1 or greater"),
    ("<journal-compact-percentage>101</journal-compact-percentage>",
     "journal-compact-percentage", "percentage"),
    ("<persistence-enabled>yes</persistence-enabled>", "persistence-enabled",
     "bad boolean 'yes'"),
    ("<persistence-enabled>1</persistence-enabled>", "persistence-enabled", "bad boolean"),
    ("<journal-type>nio</journal-type>", "journal-type", "did you mean NIO?"),
    ("<journal-type>AIO</journal-type>", "journal-type", "expected one of ASYNCIO, NIO, MAPPED"),
    ("<critical-analyzer-policy>HALTT</critical-analyzer-policy>", "critical-analyzer-policy",
     "did you mean HALT?"),
    ("<journal-file-size>ten</journal-file-size>", "journal-file-size", "bad size 'ten'"),
    ("<journal-file-size>3G</journal-file-size>", "journal-file-size", "out of range"),
    ("<global-max-size>0</global-max-size>", "global-max-size", "-1 or greater than 0"),
    ("<max-disk-usage>120</max-disk-usage>", "max-disk-usage", "percentage"),
    ("<journal-directory></journal-directory>", "journal-directory", "must not be empty"),
    ("<literal-match-markers>(</literal-match-markers>", "literal-match-markers",
     "two characters"),
    ("<name>a</name><name>b</name>", "name", "more than once"),
])
def test_bad_values(core_xml, line_of, body, element, message):
    text = core_xml("\n" + body)
    error = _error(text)
    assert error.element == element
    assert message in str(error)
    assert error.line == line_of(text, f"<{element}>")
    assert error.file == "broker.xml"


@pytest.mark.parametrize(("url", "message"), [
    ("localhost:61616", "bad URL"),
    ("tcp://localhost:notaport", "bad port"),
    ("tcp://localhost:70000", "bad port"),
    ("amqp://localhost:5672", "unsupported scheme"),
    ("tcp://localhost:61616?protocols", "not key=value"),
    ("tcp://local host:1", "bad URL"),
    ("", "missing URL"),
])
def test_bad_acceptor_urls(core_xml, line_of, url, message):
    text = core_xml(f'<acceptors>\n<acceptor name="a">{url}</acceptor></acceptors>')
    error = _error(text)
    assert error.element == "acceptor"
    assert error.line == line_of(text, '<acceptor name="a">')
    assert message in str(error)


def test_missing_attribute(core_xml, line_of):
    text = core_xml("<connectors>\n<connector>tcp://h:1</connector></connectors>")
    error = _error(text)
    assert error.element == "connector"
    assert error.line == line_of(text, "<connector>tcp")
    assert "missing required attribute 'name'" in str(error)


def test_missing_connector_ref(core_xml, line_of):
    text = core_xml("<cluster-connections>\n<cluster-connection name='c'>"
                    "<max-hops>1</max-hops></cluster-connection></cluster-connections>")
    error = _error(text)
    assert error.element == "cluster-connection"
    assert "missing required element <connector-ref>" in str(error)
    assert error.line == line_of(text, "<cluster-connection name")


def test_connector_ref_to_missing_connector(core_xml, line_of):
    text = core_xml("""<connectors><connector name="netty-connector">tcp://h:1</connector>
        </connectors>
        <cluster-connections><cluster-connection name="c">
        <connector-ref>netty-conector</connector-ref>
        </cluster-connection></cluster-connections>""")
    error = _error(text)
    assert error.element == "connector-ref"
    assert error.line == line_of(text, "<connector-ref>netty-conector")
    assert "'netty-conector' names no connector" in str(error)
    assert "did you mean netty-connector?" in str(error)


def test_static_connector_to_missing_connector(core_xml, line_of):
    text = core_xml("""<connectors><connector name="me">tcp://h:1</connector></connectors>
        <cluster-connections><cluster-connection name="c"><connector-ref>me</connector-ref>
        <static-connectors>
          <connector-ref>other</connector-ref>
        </static-connectors></cluster-connection></cluster-connections>""")
    error = _error(text)
    assert "static connector 'other'" in str(error)
    assert error.line == line_of(text, "<connector-ref>other")


def test_unknown_attribute_with_suggestion(core_xml, line_of):
    text = core_xml('<addresses><address name="a"><anycast>\n'
                    '<queue name="q" max-consumer="3"/></anycast></address></addresses>')
    error = _error(text)
    assert error.element == "queue"
    assert "unknown attribute 'max-consumer'" in str(error)
    assert "did you mean max-consumers?" in str(error)
    assert error.line == line_of(text, '<queue name="q"')


def test_bad_attribute_value(core_xml):
    error = _error(core_xml('<addresses><address name="a"><anycast>'
                            '<queue name="q" max-consumers="many"/></anycast></address>'
                            "</addresses>"))
    assert "attribute 'max-consumers'" in str(error) and "bad integer" in str(error)


def test_wildcard_any_words_only_at_the_end(core_xml):
    error = _error(core_xml('<address-settings><address-setting match="a.#.b"/>'
                            "</address-settings>"))
    assert "may only appear at the end" in str(error)
    error = _error(core_xml('<security-settings><security-setting match="#.b"/>'
                            "</security-settings>"))
    assert error.element == "security-setting"


def test_bad_permission_type(core_xml):
    error = _error(core_xml('<security-settings><security-setting match="#">'
                            '<permission type="sned" roles="a"/></security-setting>'
                            "</security-settings>"))
    assert error.element == "permission"
    assert "did you mean send?" in str(error)


def test_database_store_is_refused(core_xml):
    error = _error(core_xml("<store><database-store><jdbc-connection-url>x"
                            "</jdbc-connection-url></database-store></store>"))
    assert error.element == "database-store"
    assert parse(core_xml("<store><file-store/></store>")).warnings == ()


def test_address_without_routing_type(core_xml):
    assert "needs <anycast> or <multicast>" in str(_error(core_xml(
        '<addresses><address name="x"/></addresses>')))


def test_duplicate_address_and_queue(core_xml):
    assert "duplicate address" in str(_error(core_xml(
        '<addresses><address name="x"><anycast/></address><address name="x"><anycast/>'
        "</address></addresses>")))
    assert "duplicate queue" in str(_error(core_xml(
        '<addresses><address name="x"><anycast><queue name="q"/></anycast><multicast>'
        '<queue name="q"/></multicast></address></addresses>')))


def test_duplicate_acceptor_name(core_xml):
    assert "duplicate acceptor" in str(_error(core_xml(
        '<acceptors><acceptor name="a">tcp://h:1</acceptor><acceptor name="a">tcp://h:2'
        "</acceptor></acceptors>")))


def test_static_connectors_and_discovery_group_together(core_xml):
    error = _error(core_xml("""<connectors><connector name="c">tcp://h:1</connector></connectors>
        <cluster-connections><cluster-connection name="x"><connector-ref>c</connector-ref>
        <static-connectors><connector-ref>c</connector-ref></static-connectors>
        <discovery-group-ref discovery-group-name="g"/>
        </cluster-connection></cluster-connections>"""))
    assert "either <static-connectors> or <discovery-group-ref>" in str(error)


# --------------------------------------------------------------------------------------------
# Known elements pybroker ignores: warnings


@pytest.mark.parametrize("body", [
    "<broadcast-groups><broadcast-group name='b'/></broadcast-groups>",
    "<discovery-groups><discovery-group name='d'/></discovery-groups>",
    "<bridges><bridge name='x'/></bridges>",
    "<diverts><divert name='d'/></diverts>",
    "<federations/>",
    "<metrics><jvm-memory>true</jvm-memory></metrics>",
    "<jmx-management-enabled>true</jmx-management-enabled>",
    "<thread-pool-max-size>30</thread-pool-max-size>",
    "<global-max-size-percent-of-jvm-max-memory>50</global-max-size-percent-of-jvm-max-memory>",
    "<network-check-list>10.0.0.1</network-check-list>",
    "<broker-plugins><broker-plugin class-name='x'/></broker-plugins>",
    "<journal-retention-directory period='7'>history</journal-retention-directory>",
])
def test_ignored_known_elements_warn(core_xml, caplog, body):
    name = re.match(r"<([\w-]+)", body).group(1)
    with caplog.at_level(logging.WARNING, logger="pybroker.config"):
        config = parse(core_xml(body))
    [warning] = config.warnings
    assert f"<{name}>" in warning and "ignored" in warning
    assert warning.startswith("broker.xml:")
    assert [r.getMessage() for r in caplog.records if r.name == "pybroker.config"] == [warning]


def test_every_artemis_core_element_is_accepted(core_xml):
    """Each element of Artemis's schema is parsed or ignored with a warning, never an error."""
    samples = {
        "connectors": "<connectors/>", "acceptors": "<acceptors/>",
        "cluster-connections": "<cluster-connections/>", "ha-policy": "<ha-policy/>",
        "address-settings": "<address-settings/>", "security-settings": "<security-settings/>",
        "addresses": "<addresses/>", "queues": "<queues/>",
        "wildcard-addresses": "<wildcard-addresses/>", "store": "<store/>",
    }
    from pybroker.config.parse import _CORE_IGNORED, _CORE_VALUES

    values = {"journal-type": "NIO", "critical-analyzer-policy": "LOG",
              "literal-match-markers": "()", "cluster-password": "x"}
    for name in sorted(ARTEMIS_CORE_ELEMENTS):
        if name in samples:
            body = samples[name]
        elif name in _CORE_IGNORED:
            body = f"<{name}/>"
        else:
            _, converter = _CORE_VALUES[name]
            text = values.get(name)
            if text is None:
                for candidate in ("true", "5", "x"):
                    try:
                        converter(candidate, None, None)  # type: ignore[arg-type]
                    except Exception:
                        continue
                    text = candidate
                    break
            body = f"<{name}>{text}</{name}>"
        config = parse(core_xml(body))
        if name in _CORE_IGNORED:
            assert len(config.warnings) == 1, name


def test_address_setting_fields_cover_the_schema():
    fields = {f.replace("_", "-") for f in AddressSettings.__dataclass_fields__}
    assert fields == ARTEMIS_ADDRESS_SETTING_ELEMENTS
    assert len(fields) == 79


# --------------------------------------------------------------------------------------------
# Sections in detail


def test_acceptor_url_forms(core_xml):
    config = parse(core_xml("""<acceptors>
      <acceptor name="a">tcp://[::1]:5672?a=1&amp;b=2;c=x%3Dy;d=a+b</acceptor>
      <acceptor name="b">tcp://example.org</acceptor>
      <acceptor name="c">tcp://0.0.0.0:0?protocols=amqp,mqtt</acceptor>
      <acceptor name="d">vm://0</acceptor>
      <acceptor name="e">tcp://h:1?host=other&amp;port=2</acceptor>
      <acceptor>tcp://unnamed:3</acceptor>
    </acceptors>"""))
    a, b, c, d, e, unnamed = config.acceptors
    assert (a.host, a.port, dict(a.params)) == ("::1", 5672, {"a": "1", "b": "2", "c": "x=y",
                                                              "d": "a b"})
    assert (b.host, b.port, b.protocols) == ("example.org", 61616, None)
    assert (c.port, c.protocols) == (0, frozenset({"AMQP", "MQTT"}))
    assert (d.scheme, d.host, d.port) == ("vm", "0", None)
    assert (e.host, e.port) == ("other", 2)
    assert unnamed.name == "tcp://unnamed:3"


def test_acceptor_param_errors_name_the_acceptor(core_xml, line_of):
    text = core_xml('<acceptors>\n<acceptor name="x">tcp://h:1?n=abc;f=maybe</acceptor>'
                    "</acceptors>")
    [acceptor] = parse(text).acceptors
    with pytest.raises(ConfigError) as raised:
        acceptor.param_int("n", 0)
    assert "acceptor 'x'" in str(raised.value) and "'abc'" in str(raised.value)
    assert raised.value.line == line_of(text, '<acceptor name="x">')
    with pytest.raises(ConfigError, match="not true or false"):
        acceptor.param_bool("f", False)


def test_unknown_protocol_warns(core_xml):
    config = parse(core_xml("<acceptors><acceptor name='x'>tcp://h:1?protocols=AMQP,FOO"
                            "</acceptor></acceptors>"))
    assert "FOO" in config.warnings[0]


def test_parse_url_function():
    assert parse_url("tcp://h:1?x=1") == ("tcp", "h", 1, {"x": "1"})
    with pytest.raises(ValueError):
        parse_url("vm://abc")


def test_duplicate_connector_keeps_the_first_with_warning(core_xml):
    config = parse(core_xml("<connectors><connector name='c'>tcp://a:1</connector>"
                            "<connector name='c'>tcp://b:2</connector></connectors>"))
    assert config.connectors["c"].host == "a"
    assert "defined twice" in config.warnings[0]


def test_cluster_connection_defaults_and_options(core_xml):
    config = parse(core_xml("""<connectors><connector name="c">tcp://h:1?sslEnabled=true
        </connector></connectors>
        <cluster-connections>
          <cluster-connection name="plain"><connector-ref>c</connector-ref></cluster-connection>
          <cluster-connection name="tuned">
            <address>jms,!jms.x</address><connector-ref>c</connector-ref>
            <check-period>1000</check-period><connection-ttl>2000</connection-ttl>
            <min-large-message-size>50K</min-large-message-size><call-timeout>3</call-timeout>
            <retry-interval>10</retry-interval>
            <retry-interval-multiplier>2.5</retry-interval-multiplier>
            <max-retry-interval>100</max-retry-interval>
            <initial-connect-attempts>3</initial-connect-attempts>
            <reconnect-attempts>0</reconnect-attempts>
            <use-duplicate-detection>false</use-duplicate-detection>
            <message-load-balancing>OFF_WITH_REDISTRIBUTION</message-load-balancing>
            <max-hops>0</max-hops><confirmation-window-size>1M</confirmation-window-size>
            <producer-window-size>-1</producer-window-size>
            <call-failover-timeout>5</call-failover-timeout>
            <notification-interval>7</notification-interval>
            <notification-attempts>8</notification-attempts>
            <client-id>cid</client-id><topology-scanner-attempts>-1</topology-scanner-attempts>
            <static-connectors allow-direct-connections-only="true">
              <connector-ref>c</connector-ref></static-connectors>
          </cluster-connection>
        </cluster-connections>"""))
    plain, tuned = config.cluster_connections
    assert config.connectors["c"].params["sslEnabled"] == "true"
    assert (plain.address, plain.message_load_balancing, plain.max_hops, plain.retry_interval,
            plain.retry_interval_multiplier, plain.max_retry_interval,
            plain.initial_connect_attempts, plain.reconnect_attempts,
            plain.use_duplicate_detection, plain.check_period, plain.connection_ttl,
            plain.min_large_message_size, plain.call_timeout, plain.call_failover_timeout,
            plain.confirmation_window_size, plain.producer_window_size,
            plain.notification_interval, plain.notification_attempts,
            plain.topology_scanner_attempts, plain.client_id, plain.static_connectors) == (
        "", "ON_DEMAND", 1, 500, 1.0, 2000, -1, -1, True, 30000, 60000, 102400, 30000, -1,
        10485760, 1048576, 1000, 2, 30, None, ())
    assert (tuned.address, tuned.check_period, tuned.connection_ttl,
            tuned.min_large_message_size, tuned.retry_interval_multiplier,
            tuned.reconnect_attempts, tuned.use_duplicate_detection,
            tuned.message_load_balancing, tuned.max_hops, tuned.confirmation_window_size,
            tuned.producer_window_size, tuned.client_id, tuned.topology_scanner_attempts,
            tuned.allow_direct_connections_only, tuned.static_connectors) == (
        "jms,!jms.x", 1000, 2000, 50 * 1024, 2.5, 0, False, "OFF_WITH_REDISTRIBUTION", 0,
        1024 * 1024, -1, "cid", -1, True, ("c",))


def test_forward_when_no_consumers_is_deprecated(core_xml):
    config = parse(core_xml("""<connectors><connector name="c">tcp://h:1</connector></connectors>
        <cluster-connections><cluster-connection name="x"><connector-ref>c</connector-ref>
        <forward-when-no-consumers>true</forward-when-no-consumers>
        <message-load-balancing>OFF</message-load-balancing>
        </cluster-connection></cluster-connections>"""))
    assert config.cluster_connections[0].message_load_balancing == "STRICT"
    assert "deprecated" in config.warnings[0]


def test_discovery_group_ref_warns(core_xml):
    config = parse(core_xml("""<connectors><connector name="c">tcp://h:1</connector></connectors>
        <cluster-connections><cluster-connection name="x"><connector-ref>c</connector-ref>
        <discovery-group-ref discovery-group-name="dg"/></cluster-connection>
        </cluster-connections>"""))
    assert config.cluster_connections[0].discovery_group_ref == "dg"
    assert "static-connectors" in config.warnings[0]


def test_address_setting_values(core_xml):
    config = parse(core_xml("""<address-settings><address-setting match="orders.*">
        <dead-letter-address>DLA</dead-letter-address>
        <auto-create-dead-letter-resources>true</auto-create-dead-letter-resources>
        <dead-letter-queue-prefix></dead-letter-queue-prefix>
        <expiry-delay>1000</expiry-delay>
        <redelivery-delay-multiplier>1.5</redelivery-delay-multiplier>
        <redelivery-collision-avoidance-factor>0.25</redelivery-collision-avoidance-factor>
        <max-delivery-attempts>3</max-delivery-attempts>
        <max-size-bytes>10MB</max-size-bytes>
        <address-full-policy>BLOCK</address-full-policy>
        <page-full-policy>FAIL</page-full-policy>
        <page-limit-bytes>1G</page-limit-bytes>
        <default-queue-routing-type>ANYCAST</default-queue-routing-type>
        <slow-consumer-threshold-measurement-unit>MESSAGES_PER_MINUTE
        </slow-consumer-threshold-measurement-unit>
        <config-delete-queues>FORCE</config-delete-queues>
        <initial-queue-buffer-size>1024</initial-queue-buffer-size>
        <id-cache-size>0</id-cache-size>
        </address-setting></address-settings>"""))
    [(match, settings)] = config.address_settings
    assert match == "orders.*"
    assert settings.set_fields() == {
        "dead_letter_address": "DLA", "auto_create_dead_letter_resources": True,
        "dead_letter_queue_prefix": "", "expiry_delay": 1000,
        "redelivery_delay_multiplier": 1.5, "redelivery_collision_avoidance_factor": 0.25,
        "max_delivery_attempts": 3, "max_size_bytes": 10 * 1024 * 1024,
        "address_full_policy": "BLOCK", "page_full_policy": "FAIL", "page_limit_bytes": 1024**3,
        "default_queue_routing_type": RoutingType.ANYCAST,
        "slow_consumer_threshold_measurement_unit": "MESSAGES_PER_MINUTE",
        "config_delete_queues": "FORCE", "initial_queue_buffer_size": 1024,
        "id_cache_size": 0}


@pytest.mark.parametrize(("element", "value", "message"), [
    ("address-full-policy", "PAGING", "did you mean PAGE?"),
    ("redelivery-collision-avoidance-factor", "2", "between 0 and 1"),
    ("initial-queue-buffer-size", "1000", "power of two"),
    ("default-address-routing-type", "BROADCAST", "ANYCAST, MULTICAST"),
    ("page-size-bytes", "0", "greater than 0"),
    ("max-size-bytes", "lots", "bad size"),
    ("redelivery-delay-multiplier", "nan", "finite"),
    ("auto-create-queues", "ture", "bad boolean"),
])
def test_bad_address_setting_values(core_xml, element, value, message):
    error = _error(core_xml(f'<address-settings><address-setting match="#"><{element}>{value}'
                            f"</{element}></address-setting></address-settings>"))
    assert error.element == element and message in str(error)


def test_address_setting_deprecations_and_duplicates(core_xml):
    config = parse(core_xml("""<address-settings>
        <address-setting match="a"><last-value-queue>true</last-value-queue>
          <page-max-cache-size>5</page-max-cache-size></address-setting>
        <address-setting match="a"><max-delivery-attempts>1</max-delivery-attempts>
        </address-setting></address-settings>"""))
    [(_, settings)] = config.address_settings
    assert settings.default_last_value_queue is True and settings.last_value_queue is True
    assert settings.max_delivery_attempts is None  # the duplicate was dropped
    assert len(config.warnings) == 3


def test_security_settings(core_xml):
    config = parse(core_xml("""<security-settings>
        <role-mapping from="cn=admins,dc=x" to="admin, ops"/>
        <security-setting match="orders.#">
          <permission type="send" roles="admin, writer"/>
          <permission type="createTempQueue" roles="temp"/>
          <permission type="view" roles="ops"/>
        </security-setting>
        <security-setting match="orders.#">
          <permission type="consume" roles="reader"/>
        </security-setting>
        <security-setting match="other"><permission type="edit" roles=""/></security-setting>
        </security-settings>"""))
    settings = dict(config.security_settings)
    assert list(settings) == ["orders.#", "other"]
    # Artemis keeps the last of two identical matches.
    assert dict(settings["orders.#"].permissions) == {"consume": frozenset({"reader"})}
    assert "duplicate security-setting" in config.warnings[0]
    assert settings["other"].roles_for("edit") == frozenset()

    config = parse(core_xml("""<security-settings>
        <role-mapping from="cn=admins,dc=x" to="admin, ops"/>
        <security-setting match="orders.#">
          <permission type="send" roles="admin, writer"/>
          <permission type="createTempQueue" roles="temp"/>
        </security-setting></security-settings>"""))
    setting = dict(config.security_settings)["orders.#"]
    assert setting.roles_for("send") == frozenset({"admin", "writer", "cn=admins,dc=x"})
    assert setting.roles_for("createNonDurableQueue") == frozenset({"temp"})
    assert setting.roles_for("createTempQueue") == frozenset({"temp"})
    assert setting.allows("send", {"writer"}) and not setting.allows("send", {"temp"})


def test_addresses_and_queue_options(core_xml):
    config = parse(core_xml("""<addresses>
        <address name="news"><multicast/></address>
        <address name="orders">
          <anycast>
            <queue name="orders" max-consumers="2" exclusive="true" last-value-key="k"
                   ring-size="10" enabled="false" purge-on-no-consumers="true"
                   consumers-before-dispatch="1" delay-before-dispatch="50"
                   group-buckets="4" group-rebalance="true" non-destructive="true">
              <filter string="color = 'red'"/>
              <durable>false</durable>
              <user>bob</user>
            </queue>
          </anycast>
          <multicast><queue name="audit"/></multicast>
        </address></addresses>"""))
    news, orders = config.addresses
    assert news.routing_types == frozenset({RoutingType.MULTICAST}) and news.queues == ()
    assert orders.routing_types == frozenset({RoutingType.ANYCAST, RoutingType.MULTICAST})
    queue, audit = orders.queues
    assert (queue.name, queue.address, queue.routing_type, queue.max_consumers, queue.exclusive,
            queue.last_value_key, queue.ring_size, queue.enabled, queue.purge_on_no_consumers,
            queue.consumers_before_dispatch, queue.delay_before_dispatch, queue.group_buckets,
            queue.group_rebalance, queue.non_destructive, queue.filter, queue.durable,
            queue.user) == (
        "orders", "orders", RoutingType.ANYCAST, 2, True, "k", 10, False, True, 1, 50, 4, True,
        True, "color = 'red'", False, "bob")
    assert (audit.routing_type, audit.durable, audit.set_fields) == \
        (RoutingType.MULTICAST, True, frozenset())
    assert "max_consumers" in queue.set_fields and "exclusive" in queue.set_fields


def test_queue_takes_unset_fields_from_address_settings(core_xml):
    config = parse(core_xml("""<addresses><address name="a"><anycast>
        <queue name="q" exclusive="false"/></anycast></address></addresses>"""))
    queue = config.addresses[0].queues[0]
    settings = ADDRESS_SETTING_DEFAULTS.__class__(
        default_exclusive_queue=True, default_max_consumers=5,
        default_last_value_key="lvk").merged_over(ADDRESS_SETTING_DEFAULTS)
    resolved = queue.with_defaults_from(settings)
    assert resolved.exclusive is False  # set in the XML
    assert resolved.max_consumers == 5
    assert resolved.last_value_key == "lvk"


def test_legacy_queues_element(core_xml):
    config = parse(core_xml("""<queues><queue name="q1"><address>a1</address>
        <filter string="x = 1"/><durable>false</durable></queue><queue name="q2"/></queues>"""))
    q1, q2 = config.queues
    assert (q1.name, q1.address, q1.routing_type, q1.filter, q1.durable) == \
        ("q1", "a1", RoutingType.MULTICAST, "x = 1", False)
    assert q2.address == "q2"
    assert "deprecated" in config.warnings[0]


def test_wildcard_addresses(core_xml):
    config = parse(core_xml("""<wildcard-addresses><routing-enabled>false</routing-enabled>
        <delimiter>/</delimiter><any-words>+</any-words><single-word>?</single-word>
        </wildcard-addresses>
        <address-settings><address-setting match="a/+"/></address-settings>"""))
    wildcard = config.wildcard_addresses
    assert (wildcard.routing_enabled, wildcard.delimiter, wildcard.any_words,
            wildcard.single_word) == (False, "/", "+", "?")
    # '#' is an ordinary character under this syntax.
    assert parse(core_xml("""<address-settings><address-setting match="a.#.b"/>
        </address-settings><wildcard-addresses><any-words>+</any-words></wildcard-addresses>
        """)).address_settings[0][0] == "a.#.b"


@pytest.mark.parametrize(("body", "message"), [
    ("<delimiter>::</delimiter>", "single character"),
    ("<delimiter>#</delimiter>", "three different characters"),
])
def test_bad_wildcard_addresses(core_xml, body, message):
    assert message in str(_error(core_xml(f"<wildcard-addresses>{body}</wildcard-addresses>")))


def test_literal_match_markers_allow_wildcard_characters(core_xml):
    config = parse(core_xml("<literal-match-markers>()</literal-match-markers>"
                            '<address-settings><address-setting match="(a.#.b)"/>'
                            "</address-settings>"))
    assert config.literal_match_markers == "()"
    assert config.address_settings[0][0] == "(a.#.b)"


def test_masked_password_warns(core_xml):
    config = parse(core_xml("<cluster-password>ENC(abc)</cluster-password>"))
    assert config.cluster_password == "ENC(abc)"
    assert "masked" in config.warnings[0]


def test_property_substitution_through_parse_config(core_xml, monkeypatch):
    monkeypatch.setenv("PYBROKER_TEST_PORT", "7000")
    config = parse(core_xml("<name>${broker.name}</name><acceptors><acceptor name='a'>"
                            "tcp://${host:127.0.0.1}:${PYBROKER_TEST_PORT}</acceptor>"
                            "</acceptors>"), properties={"broker.name": "b1"})
    assert config.name == "b1"
    assert (config.acceptors[0].host, config.acceptors[0].port) == ("127.0.0.1", 7000)


def test_xinclude_warns(core_xml):
    text = core_xml("").replace(
        '<configuration xmlns="urn:activemq">',
        '<configuration xmlns="urn:activemq" xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<xi:include href="extra.xml"/>')
    config = parse(text)
    assert "XInclude" in config.warnings[0] and "extra.xml" in config.warnings[0]


@pytest.mark.parametrize(("body", "message"), [
    ("<acceptors>tcp://h:1</acceptors>", "unexpected text 'tcp://h:1' in <acceptors>"),
    ("<acceptors><acceptor name='a'>tcp://h:1</acceptor>junk</acceptors>",
     "unexpected text 'junk' after <acceptor>"),
    ("<name><first>x</first></name>", "<name> takes a value"),
])
def test_text_and_elements_in_the_wrong_places(core_xml, body, message):
    assert message in str(_error(core_xml(body)))


def test_xinclude_inside_core_warns_once(core_xml):
    text = core_xml('<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="a.xml"/>')
    config = parse(text)
    assert len(config.warnings) == 1 and "XInclude" in config.warnings[0]


def test_foreign_namespace_element_in_core_warns(core_xml):
    config = parse(core_xml('<x:thing xmlns:x="urn:other"/>'))
    assert "foreign namespace" in config.warnings[0]


def test_shared_store_without_persistence_warns(core_xml):
    config = parse(core_xml("<persistence-enabled>false</persistence-enabled>"
                            "<ha-policy><shared-store><primary/></shared-store></ha-policy>"))
    assert config.ha_policy.kind == "shared-store-primary"
    assert "persistence disabled" in config.warnings[0]
