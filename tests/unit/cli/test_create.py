"""`pybroker create`: instances shaped like `artemis create` output, element by element."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from lxml import etree

from pybroker.cli.create import CreateOptions, create_instance
from pybroker.cli.main import cli
from pybroker.config.passwords import is_hashed, verify_password
from pybroker.errors import ConfigError
from pybroker.testing.lab import apply_lab_edits

CORE = "urn:activemq:core"
NS = {"c": CORE}
REFERENCE_ARGS = ["--name", "master", "--user", "admin", "--password", "admin", "--allow-anonymous"]

# ---------------------------------------------------------------------------------------------
# artemis-create-output.md, "Every element of the generated file, in order": (path under
# <core>, attributes, text). Text None marks an element with children (only attributes count).

ARTEMIS_URL = (
    "tcp://0.0.0.0:61616?tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576;"
    "amqpMinLargeMessageSize=102400;protocols=CORE,AMQP,STOMP,HORNETQ,MQTT,OPENWIRE;useEpoll=true;"
    "amqpCredits=1000;amqpLowCredits=300;amqpDuplicateDetection=true;supportAdvisory=false;"
    "suppressInternalManagementObjects=false"
)
AMQP_URL = (
    "tcp://0.0.0.0:5672?tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576;protocols=AMQP;"
    "useEpoll=true;amqpCredits=1000;amqpLowCredits=300;amqpMinLargeMessageSize=102400;"
    "amqpDuplicateDetection=true"
)
STOMP_URL = (
    "tcp://0.0.0.0:61613?tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576;protocols=STOMP;"
    "useEpoll=true"
)
HORNETQ_URL = (
    "tcp://0.0.0.0:5445?anycastPrefix=jms.queue.;multicastPrefix=jms.topic.;"
    "protocols=HORNETQ,STOMP;useEpoll=true"
)
MQTT_URL = (
    "tcp://0.0.0.0:1883?tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576;protocols=MQTT;"
    "useEpoll=true"
)
PERMISSIONS = [
    "createNonDurableQueue",
    "deleteNonDurableQueue",
    "createDurableQueue",
    "deleteDurableQueue",
    "createAddress",
    "deleteAddress",
    "consume",
    "browse",
    "send",
    "manage",
]
SETTING = "/address-settings/address-setting"

REFERENCE_TABLE: list[tuple[str, dict[str, str], str | None]] = [
    ("/name", {}, "master"),
    ("/persistence-enabled", {}, "true"),
    ("/max-redelivery-records", {}, "1"),
    ("/journal-type", {}, "ASYNCIO"),
    ("/paging-directory", {}, "data/paging"),
    ("/bindings-directory", {}, "data/bindings"),
    ("/journal-directory", {}, "data/journal"),
    ("/large-messages-directory", {}, "data/large-messages"),
    ("/journal-datasync", {}, "true"),
    ("/journal-min-files", {}, "2"),
    ("/journal-pool-files", {}, "10"),
    ("/journal-device-block-size", {}, "4096"),
    ("/journal-file-size", {}, "10M"),
    ("/journal-buffer-timeout", {}, "8000"),
    ("/journal-max-io", {}, "4096"),
    ("/disk-scan-period", {}, "5000"),
    ("/max-disk-usage", {}, "90"),
    ("/critical-analyzer", {}, "true"),
    ("/critical-analyzer-timeout", {}, "120000"),
    ("/critical-analyzer-check-period", {}, "60000"),
    ("/critical-analyzer-policy", {}, "HALT"),
    ("/page-sync-timeout", {}, "188000"),
    ("/global-max-messages", {}, "-1"),
    ("/acceptors/acceptor", {"name": "artemis"}, ARTEMIS_URL),
    ("/acceptors/acceptor", {"name": "amqp"}, AMQP_URL),
    ("/acceptors/acceptor", {"name": "stomp"}, STOMP_URL),
    ("/acceptors/acceptor", {"name": "hornetq"}, HORNETQ_URL),
    ("/acceptors/acceptor", {"name": "mqtt"}, MQTT_URL),
    ("/security-settings/security-setting", {"match": "#"}, None),
    *[
        ("/security-settings/security-setting/permission", {"type": kind, "roles": "amq"}, "")
        for kind in PERMISSIONS
    ],
    (SETTING, {"match": "activemq.management#"}, None),
    (SETTING + "/dead-letter-address", {}, "DLQ"),
    (SETTING + "/expiry-address", {}, "ExpiryQueue"),
    (SETTING + "/redelivery-delay", {}, "0"),
    (SETTING + "/max-size-bytes", {}, "-1"),
    (SETTING + "/message-counter-history-day-limit", {}, "10"),
    (SETTING + "/address-full-policy", {}, "PAGE"),
    (SETTING + "/auto-create-queues", {}, "true"),
    (SETTING + "/auto-create-addresses", {}, "true"),
    (SETTING, {"match": "#"}, None),
    (SETTING + "/dead-letter-address", {}, "DLQ"),
    (SETTING + "/expiry-address", {}, "ExpiryQueue"),
    (SETTING + "/redelivery-delay", {}, "0"),
    (SETTING + "/message-counter-history-day-limit", {}, "10"),
    (SETTING + "/address-full-policy", {}, "PAGE"),
    (SETTING + "/auto-create-queues", {}, "true"),
    (SETTING + "/auto-create-addresses", {}, "true"),
    (SETTING + "/auto-delete-queues", {}, "false"),
    (SETTING + "/auto-delete-addresses", {}, "false"),
    (SETTING + "/page-size-bytes", {}, "10M"),
    (SETTING + "/max-size-bytes", {}, "-1"),
    (SETTING + "/max-size-messages", {}, "-1"),
    (SETTING + "/max-read-page-messages", {}, "-1"),
    (SETTING + "/max-read-page-bytes", {}, "20M"),
    (SETTING + "/page-limit-bytes", {}, "-1"),
    (SETTING + "/page-limit-messages", {}, "-1"),
    ("/addresses/address", {"name": "DLQ"}, None),
    ("/addresses/address/anycast/queue", {"name": "DLQ"}, ""),
    ("/addresses/address", {"name": "ExpiryQueue"}, None),
    ("/addresses/address/anycast/queue", {"name": "ExpiryQueue"}, ""),
]

# artemis-create-output.md, "HA and cluster options", for
# create b2 --shared-store --backup --failover-on-shutdown --staticCluster tcp://localhost:61616
#    --cluster-user cu --cluster-password cp --port-offset 1
HA_ARGS = [
    "--shared-store",
    "--backup",
    "--failover-on-shutdown",
    "--staticCluster",
    "tcp://localhost:61616",
    "--cluster-user",
    "cu",
    "--cluster-password",
    "cp",
    "--port-offset",
    "1",
]
HA_ROWS = [
    ("/connectors/connector", {"name": "artemis"}, "tcp://localhost:61617"),
    ("/connectors/connector", {"name": "node0"}, "tcp://localhost:61616"),
    ("/cluster-user", {}, "cu"),
    ("/cluster-password", {}, "cp"),
    ("/cluster-connections/cluster-connection", {"name": "my-cluster"}, None),
    ("/cluster-connections/cluster-connection/connector-ref", {}, "artemis"),
    ("/cluster-connections/cluster-connection/message-load-balancing", {}, "ON_DEMAND"),
    ("/cluster-connections/cluster-connection/max-hops", {}, "0"),
    ("/cluster-connections/cluster-connection/static-connectors/connector-ref", {}, "node0"),
    ("/ha-policy/shared-store/backup/failover-on-shutdown", {}, "true"),
]

GUEST_MODULE = "org.apache.activemq.artemis.spi.core.security.jaas.GuestLoginModule"
PROPERTIES_MODULE = "org.apache.activemq.artemis.spi.core.security.jaas.PropertiesLoginModule"


# ---------------------------------------------------------------------------------------------
# helpers


def run_create(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["create", *map(str, args)])


def create_ok(directory: Path, *args: str) -> Result:
    result = run_create(directory, "--user", "admin", "--password", "admin", *args)
    assert result.exit_code == 0, result.output
    return result


def parse(path: Path) -> etree._ElementTree:
    return etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))


def core_of(instance: Path) -> etree._Element:
    core = parse(instance / "etc" / "broker.xml").getroot().find("c:core", NS)
    assert core is not None
    return core


def element_children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def rows(core: etree._Element) -> list[tuple[str, dict[str, str], str | None]]:
    """Every element under <core> that has attributes or no element children, in order."""
    result = []

    def walk(element: etree._Element, path: str) -> None:
        for child in element_children(element):
            assert etree.QName(child).namespace == CORE, child.tag
            child_path = f"{path}/{etree.QName(child).localname}"
            leaf = not element_children(child)
            if leaf or child.attrib:
                text = (child.text or "") if leaf else None
                result.append((child_path, dict(child.attrib), text))
            walk(child, child_path)

    walk(core, "")
    return result


def text_of(core: etree._Element, path: str) -> str | None:
    element = core.find(path, NS)
    return None if element is None else element.text


def acceptors(core: etree._Element) -> dict[str, str]:
    return {a.get("name"): a.text for a in core.iterfind("c:acceptors/c:acceptor", NS)}


def login_modules(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """(class, flag, options) of each module in the `activemq` domain of a login.config."""
    body = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    match = re.search(r"activemq\s*\{(.*)\}\s*;", body, re.DOTALL)
    assert match, text
    modules = []
    for entry in match.group(1).split(";"):
        words = entry.split()
        if not words:
            continue
        options = {}
        for word in words[2:]:
            key, _, value = word.partition("=")
            options[key] = value
        modules.append((words[0], words[1], options))
    return modules


def read_properties(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition(" = ")
        entries[key] = value
    return entries


# ---------------------------------------------------------------------------------------------
# the reference instance


def test_reference_instance_matches_artemis_element_by_element(tmp_path: Path) -> None:
    instance = tmp_path / "master"
    create_ok(instance, "--name", "master", "--allow-anonymous")
    root = parse(instance / "etc" / "broker.xml").getroot()
    assert root.tag == "{urn:activemq}configuration"
    assert root.nsmap[None] == "urn:activemq"
    assert root.nsmap["xi"] == "http://www.w3.org/2001/XInclude"
    core = element_children(root)
    assert [c.tag for c in core] == [f"{{{CORE}}}core"]
    assert rows(core[0]) == REFERENCE_TABLE


def test_instance_layout(tmp_path: Path) -> None:
    instance = tmp_path / "master"
    result = create_ok(instance, *REFERENCE_ARGS[:2])
    for name in (
        "broker.xml",
        "bootstrap.xml",
        "login.config",
        "artemis-users.properties",
        "artemis-roles.properties",
    ):
        assert (instance / "etc" / name).is_file(), name
    for name in ("data", "log", "lib", "tmp"):
        assert (instance / name).is_dir() and not any((instance / name).iterdir()), name
    assert sorted(p.name for p in (instance / "bin").iterdir()) == ["pybroker"]
    assert not list(instance.glob("etc/.*")), "temporary files left behind"
    assert f"Creating pybroker instance at: {instance}" in result.stdout
    assert f'"{instance}/bin/pybroker" run' in result.stdout


def test_bootstrap_names_broker_xml_and_jaas_domain(tmp_path: Path) -> None:
    instance = tmp_path / "i"
    create_ok(instance)
    root = parse(instance / "etc" / "bootstrap.xml").getroot()
    schema = "{http://activemq.apache.org/schema}"
    assert root.tag == f"{schema}broker"
    assert root.find(f"{schema}jaas-security").get("domain") == "activemq"
    assert root.find(f"{schema}server").get("configuration") == (
        (instance / "etc" / "broker.xml").as_uri()
    )


# ---------------------------------------------------------------------------------------------
# identity and acceptors


def test_port_offset_shifts_every_acceptor(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--port-offset", "100")
    urls = acceptors(core_of(tmp_path / "i"))
    ports = {
        name: int(re.match(r"tcp://0\.0\.0\.0:(\d+)\?", url).group(1)) for name, url in urls.items()
    }
    assert ports == {"artemis": 61716, "amqp": 5772, "stomp": 61713, "hornetq": 5545, "mqtt": 1983}
    # only the port changed
    assert urls["artemis"] == ARTEMIS_URL.replace(":61616?", ":61716?")
    assert urls["amqp"] == AMQP_URL.replace(":5672?", ":5772?")
    assert urls["stomp"] == STOMP_URL.replace(":61613?", ":61713?")
    assert urls["hornetq"] == HORNETQ_URL.replace(":5445?", ":5545?")
    assert urls["mqtt"] == MQTT_URL.replace(":1883?", ":1983?")


def test_default_port_and_host(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--default-port", "7000", "--port-offset", "2", "--host", "127.0.0.1")
    core = core_of(tmp_path / "i")
    urls = acceptors(core)
    assert urls["artemis"].startswith("tcp://127.0.0.1:7002?")
    assert urls["amqp"].startswith("tcp://127.0.0.1:5674?")
    # the name defaults to the host, as in Artemis
    assert text_of(core, "c:name") == "127.0.0.1"


def test_name_defaults_to_host_value(tmp_path: Path) -> None:
    create_ok(tmp_path / "i")
    assert text_of(core_of(tmp_path / "i"), "c:name") == "0.0.0.0"


@pytest.mark.parametrize(
    ("flag", "name"),
    [
        ("--no-amqp-acceptor", "amqp"),
        ("--no-stomp-acceptor", "stomp"),
        ("--no-hornetq-acceptor", "hornetq"),
        ("--no-mqtt-acceptor", "mqtt"),
    ],
)
def test_no_acceptor_flags(tmp_path: Path, flag: str, name: str) -> None:
    create_ok(tmp_path / "i", flag)
    names = list(acceptors(core_of(tmp_path / "i")))
    expected = [n for n in ("artemis", "amqp", "stomp", "hornetq", "mqtt") if n != name]
    assert names == expected


def test_openwire_flags_change_artemis_acceptor_only(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--support-advisory", "--suppress-internal-management-objects")
    url = acceptors(core_of(tmp_path / "i"))["artemis"]
    assert url.endswith("supportAdvisory=true;suppressInternalManagementObjects=true")


def test_port_out_of_range_is_refused(tmp_path: Path) -> None:
    result = run_create(tmp_path / "i", "--user", "a", "--password", "b", "--port-offset", "4000")
    assert result.exit_code == 2
    assert "65535" in result.output
    assert not (tmp_path / "i").exists()


def test_xml_special_characters_are_escaped(tmp_path: Path) -> None:
    create_ok(
        tmp_path / "i",
        "--name",
        'a&b<c>"d',
        "--queues",
        "q&1",
        "--cluster-password",
        "p<&>",
        "--clustered",
    )
    core = core_of(tmp_path / "i")
    assert text_of(core, "c:name") == 'a&b<c>"d'
    assert text_of(core, "c:cluster-password") == "p<&>"
    assert core.find("c:addresses/c:address[@name='q&1']", NS) is not None


# ---------------------------------------------------------------------------------------------
# HA and cluster


def test_ha_reference_block(tmp_path: Path) -> None:
    create_ok(tmp_path / "b2", *HA_ARGS)
    core = core_of(tmp_path / "b2")
    table = rows(core)
    ha_paths = {row[0] for row in HA_ROWS}
    assert [row for row in table if row[0] in ha_paths] == HA_ROWS
    # Position as Artemis writes it: connectors after journal-max-io; the cluster block and the
    # ha-policy after the acceptors, before security-settings.
    order = [etree.QName(e).localname for e in element_children(core)]
    assert order.index("journal-max-io") + 1 == order.index("connectors")
    assert order[order.index("acceptors") + 1 : order.index("security-settings")] == [
        "cluster-user",
        "cluster-password",
        "cluster-connections",
        "ha-policy",
    ]
    # the rest is the reference instance with ports shifted
    assert acceptors(core)["artemis"] == ARTEMIS_URL.replace(":61616?", ":61617?")
    # clustered: name defaults to the announced host
    assert text_of(core, "c:name") == "localhost"


def test_shared_store_primary_without_failover_on_shutdown(tmp_path: Path) -> None:
    result = create_ok(tmp_path / "i", "--shared-store")
    core = core_of(tmp_path / "i")
    policy = core.find("c:ha-policy/c:shared-store", NS)
    assert [etree.QName(e).localname for e in element_children(policy)] == ["primary"]
    assert text_of(core, "c:ha-policy/c:shared-store/c:primary/c:failover-on-shutdown") == "false"
    # clustered without a static cluster: own connector and the --silent cluster credentials,
    # no cluster-connection (pybroker has no UDP discovery) and a note saying so
    assert [(c.get("name"), c.text) for c in core.iterfind("c:connectors/c:connector", NS)] == [
        ("artemis", "tcp://localhost:61616")
    ]
    assert text_of(core, "c:cluster-user") == "cluster-admin"
    assert text_of(core, "c:cluster-password") == "password-admin"
    assert core.find("c:cluster-connections", NS) is None
    assert core.find("c:broadcast-groups", NS) is None
    assert "--static-cluster" in result.stderr
    # acceptors keep listening on the wildcard host
    assert acceptors(core)["artemis"].startswith("tcp://0.0.0.0:61616?")


def test_slave_alias_and_several_static_nodes(tmp_path: Path) -> None:
    create_ok(
        tmp_path / "i",
        "--shared-store",
        "--slave",
        "--static-cluster",
        "tcp://a:61616, tcp://b:61617",
        "--host",
        "node-c",
        "--max-hops",
        "1",
        "--message-load-balancing",
        "strict",
    )
    core = core_of(tmp_path / "i")
    assert core.find("c:ha-policy/c:shared-store/c:backup", NS) is not None
    assert [(c.get("name"), c.text) for c in core.iterfind("c:connectors/c:connector", NS)] == [
        ("artemis", "tcp://node-c:61616"),
        ("node0", "tcp://a:61616"),
        ("node1", "tcp://b:61617"),
    ]
    connection = core.find("c:cluster-connections/c:cluster-connection", NS)
    assert [r.text for r in connection.iterfind("c:static-connectors/c:connector-ref", NS)] == [
        "node0",
        "node1",
    ]
    assert text_of(connection, "c:max-hops") == "1"
    assert text_of(connection, "c:message-load-balancing") == "STRICT"
    assert acceptors(core)["artemis"].startswith("tcp://node-c:61616?")
    assert text_of(core, "c:name") == "node-c"


def test_not_clustered_writes_no_cluster_elements(tmp_path: Path) -> None:
    create_ok(tmp_path / "i")
    core = core_of(tmp_path / "i")
    for tag in (
        "connectors",
        "cluster-user",
        "cluster-password",
        "cluster-connections",
        "ha-policy",
    ):
        assert core.find(f"c:{tag}", NS) is None, tag


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backup"], "--shared-store"),
        (["--failover-on-shutdown"], "--shared-store"),
        (["--static-cluster", " , "], "no URL"),
        (["--static-cluster", "localhost:61616"], "not a URL"),
        (["--message-load-balancing", "SOMETIMES"], "SOMETIMES"),
    ],
)
def test_bad_cluster_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_create(tmp_path / "i", "--user", "a", "--password", "b", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "i").exists()


# ---------------------------------------------------------------------------------------------
# addresses and queues


def test_queues_and_addresses(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--queues", "q1,q2:multicast", "--addresses", "a1:anycast,a2")
    core = core_of(tmp_path / "i")
    table = [row for row in rows(core) if row[0].startswith("/addresses")]
    assert table == [
        ("/addresses/address", {"name": "DLQ"}, None),
        ("/addresses/address/anycast/queue", {"name": "DLQ"}, ""),
        ("/addresses/address", {"name": "ExpiryQueue"}, None),
        ("/addresses/address/anycast/queue", {"name": "ExpiryQueue"}, ""),
        ("/addresses/address", {"name": "q1"}, None),
        ("/addresses/address/anycast/queue", {"name": "q1"}, ""),
        ("/addresses/address", {"name": "q2"}, None),
        ("/addresses/address/multicast/queue", {"name": "q2"}, ""),
        ("/addresses/address", {"name": "a1"}, None),
        ("/addresses/address/anycast", {}, ""),
        ("/addresses/address", {"name": "a2"}, None),
        ("/addresses/address/multicast", {}, ""),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queues", "q1:broadcast"], "invalid routing type 'broadcast'"),
        (["--addresses", ":anycast"], "empty name"),
        (["--queues", "a::b"], "'::'"),
        (["--queues", "DLQ"], "defined twice"),
        (["--queues", "x", "--addresses", "x"], "defined twice"),
    ],
)
def test_bad_destinations(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_create(tmp_path / "i", "--user", "a", "--password", "b", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


# ---------------------------------------------------------------------------------------------
# storage and address-settings options


def test_relative_and_absolute_data_directory(tmp_path: Path) -> None:
    create_ok(tmp_path / "rel", "--data", "store/x")
    core = core_of(tmp_path / "rel")
    assert text_of(core, "c:journal-directory") == "store/x/journal"
    assert (tmp_path / "rel" / "store" / "x").is_dir()
    absolute = tmp_path / "elsewhere" / "data"
    create_ok(tmp_path / "abs", "--data", str(absolute))
    core = core_of(tmp_path / "abs")
    for tag, suffix in [
        ("paging-directory", "paging"),
        ("bindings-directory", "bindings"),
        ("journal-directory", "journal"),
        ("large-messages-directory", "large-messages"),
    ]:
        assert text_of(core, f"c:{tag}") == f"{absolute}/{suffix}"
    assert absolute.is_dir()


def test_no_fsync_writes_mapped_without_buffering(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--no-fsync")
    core = core_of(tmp_path / "i")
    assert text_of(core, "c:journal-datasync") == "false"
    assert text_of(core, "c:journal-type") == "MAPPED"
    assert text_of(core, "c:journal-buffer-timeout") == "0"
    assert text_of(core, "c:journal-max-io") == "1"
    assert text_of(core, "c:page-sync-timeout") == "0"


def test_no_fsync_with_aio_keeps_asyncio(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--no-fsync", "--aio")
    core = core_of(tmp_path / "i")
    assert text_of(core, "c:journal-type") == "ASYNCIO"
    assert text_of(core, "c:journal-buffer-timeout") == "8000"
    assert text_of(core, "c:journal-max-io") == "4096"
    assert text_of(core, "c:page-sync-timeout") == "0"


@pytest.mark.parametrize(("flag", "journal_type"), [("--nio", "NIO"), ("--mapped", "MAPPED")])
def test_journal_type_flags(tmp_path: Path, flag: str, journal_type: str) -> None:
    create_ok(tmp_path / "i", flag, "--journal-max-io", "64")
    core = core_of(tmp_path / "i")
    assert text_of(core, "c:journal-type") == journal_type
    assert text_of(core, "c:journal-max-io") == "1"
    assert text_of(core, "c:page-sync-timeout") == "188000"


def test_journal_max_io_with_asyncio(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--journal-max-io", "64", "--journal-device-block-size", "512")
    core = core_of(tmp_path / "i")
    assert text_of(core, "c:journal-max-io") == "64"
    assert text_of(core, "c:journal-device-block-size") == "512"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aio", "--nio"], "only select one journal type"),
        (["--journal-device-block-size", "1000"], "multiple of 512"),
        (["--journal-max-io", "0"], "--journal-max-io"),
        (["--global-max-messages", "-2"], "--global-max-messages"),
    ],
)
def test_bad_storage_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_create(tmp_path / "i", "--user", "a", "--password", "b", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_no_autotune_omits_tuned_elements(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--no-autotune")
    core = core_of(tmp_path / "i")
    for tag in ("journal-buffer-timeout", "journal-max-io", "page-sync-timeout"):
        assert core.find(f"c:{tag}", NS) is None, tag
    expected = [
        r
        for r in REFERENCE_TABLE
        if r[0] not in ("/journal-buffer-timeout", "/journal-max-io", "/page-sync-timeout", "/name")
    ]
    assert [r for r in rows(core) if r[0] != "/name"] == expected


def test_address_setting_options(tmp_path: Path) -> None:
    create_ok(
        tmp_path / "i", "--blocking", "--no-autocreate", "--autodelete", "--disable-persistence"
    )
    core = core_of(tmp_path / "i")
    assert text_of(core, "c:persistence-enabled") == "false"
    management, catch_all = core.iterfind("c:address-settings/c:address-setting", NS)
    assert text_of(management, "c:address-full-policy") == "BLOCK"
    assert text_of(catch_all, "c:address-full-policy") == "BLOCK"
    # the management address stays auto-creatable, as Artemis writes it
    assert text_of(management, "c:auto-create-queues") == "true"
    assert text_of(catch_all, "c:auto-create-queues") == "false"
    assert text_of(catch_all, "c:auto-create-addresses") == "false"
    assert text_of(catch_all, "c:auto-delete-queues") == "true"
    assert text_of(catch_all, "c:auto-delete-addresses") == "true"


def test_global_limits_and_purge_page_folders(tmp_path: Path) -> None:
    create_ok(
        tmp_path / "i",
        "--global-max-size",
        "100Mb",
        "--global-max-messages",
        "5000",
        "--purge-page-folders",
    )
    core = core_of(tmp_path / "i")
    order = [etree.QName(e).localname for e in element_children(core)]
    assert order.index("global-max-size") + 1 == order.index("global-max-messages")
    assert order.index("journal-type") + 1 == order.index("purge-page-folders")
    assert text_of(core, "c:global-max-size") == "100Mb"
    assert text_of(core, "c:global-max-messages") == "5000"
    assert text_of(core, "c:purge-page-folders") == "true"


# ---------------------------------------------------------------------------------------------
# security files


def test_login_config_with_allow_anonymous(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--allow-anonymous")
    modules = login_modules((tmp_path / "i" / "etc" / "login.config").read_text())
    assert modules == [
        (
            PROPERTIES_MODULE,
            "sufficient",
            {
                "debug": "false",
                "reload": "true",
                "org.apache.activemq.jaas.properties.user": '"artemis-users.properties"',
                "org.apache.activemq.jaas.properties.role": '"artemis-roles.properties"',
            },
        ),
        (
            GUEST_MODULE,
            "sufficient",
            {
                "debug": "false",
                "org.apache.activemq.jaas.guest.user": '"admin"',
                "org.apache.activemq.jaas.guest.role": '"amq"',
            },
        ),
    ]


def test_login_config_with_require_login(tmp_path: Path) -> None:
    result = create_ok(tmp_path / "i", "--require-login")
    modules = login_modules((tmp_path / "i" / "etc" / "login.config").read_text())
    assert [(m[0], m[1]) for m in modules] == [(PROPERTIES_MODULE, "required")]
    assert modules[0][2]["reload"] == "true"
    assert "neither --allow-anonymous" not in result.stderr


def test_login_required_when_neither_flag_given(tmp_path: Path) -> None:
    result = create_ok(tmp_path / "i")
    modules = login_modules((tmp_path / "i" / "etc" / "login.config").read_text())
    assert [(m[0], m[1]) for m in modules] == [(PROPERTIES_MODULE, "required")]
    assert "neither --allow-anonymous nor --require-login" in result.stderr


def test_users_and_roles_files(tmp_path: Path) -> None:
    instance = tmp_path / "i"
    result = run_create(
        instance,
        "--user",
        "alice",
        "--password",
        "wonder land",
        "--role",
        "ops",
        "--allow-anonymous",
    )
    assert result.exit_code == 0, result.output
    users = read_properties(instance / "etc" / "artemis-users.properties")
    assert list(users) == ["alice"]
    assert is_hashed(users["alice"])
    assert users["alice"].startswith("ENC(1024:")
    assert verify_password(users["alice"], "wonder land")
    assert not verify_password(users["alice"], "wonderland")
    assert "wonder land" not in (instance / "etc" / "artemis-users.properties").read_text()
    assert read_properties(instance / "etc" / "artemis-roles.properties") == {"ops": "alice"}
    core = core_of(instance)
    assert {p.get("roles") for p in core.iterfind(".//c:permission", NS)} == {"ops"}
    guest = login_modules((instance / "etc" / "login.config").read_text())[1][2]
    assert guest["org.apache.activemq.jaas.guest.user"] == '"alice"'
    assert guest["org.apache.activemq.jaas.guest.role"] == '"ops"'


def test_role_with_space_is_escaped_in_roles_file(tmp_path: Path) -> None:
    create_ok(tmp_path / "i", "--role", "my role")
    text = (tmp_path / "i" / "etc" / "artemis-roles.properties").read_text()
    assert "my\\ role = admin" in text


@pytest.mark.parametrize("option", ["--user", "--password"])
def test_missing_credentials_say_there_is_no_prompt(tmp_path: Path, option: str) -> None:
    args = {"--user": "admin", "--password": "admin"}
    del args[option]
    result = run_create(tmp_path / "i", *[x for pair in args.items() for x in pair])
    assert result.exit_code == 2
    assert f"Missing option '{option}'" in result.output
    assert "does not prompt" in result.output
    assert not (tmp_path / "i").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "a,b", "--password", "x"], "--user"),
        (["--user", 'a"b', "--password", "x"], "--user"),
        (["--user", "", "--password", "x"], "--user must not be empty"),
        (["--user", "a", "--password", "x", "--role", "r\nx"], "--role"),
        (["--user", "a", "--password", "x", "--host", "a/b"], "--host"),
    ],
)
def test_bad_identity_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_create(tmp_path / "i", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


# ---------------------------------------------------------------------------------------------
# the launcher


def test_launcher_is_executable_and_execs_the_creating_python(tmp_path: Path) -> None:
    create_ok(tmp_path / "i")
    launcher = tmp_path / "i" / "bin" / "pybroker"
    mode = launcher.stat().st_mode
    assert stat.S_IMODE(mode) == 0o755
    lines = [line for line in launcher.read_text().splitlines() if line.strip()]
    assert lines[0] == "#!/bin/sh"
    assert lines[-1] == f"exec '{os.path.abspath(sys.executable)}' -m pybroker \"$@\""
    assert f"PYBROKER_INSTANCE='{tmp_path / 'i'}'" in lines
    assert "export PYBROKER_INSTANCE" in lines


def test_launcher_runs_help(tmp_path: Path) -> None:
    create_ok(tmp_path / "i")
    completed = subprocess.run(
        [str(tmp_path / "i" / "bin" / "pybroker"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "create" in completed.stdout


def test_launcher_sets_instance_and_replaces_the_shell(tmp_path: Path) -> None:
    # An interpreter stand-in that reports its pid, the instance and its arguments: the pid
    # equals the launcher's, so the shell exec'd it (signals reach the broker).
    fake = tmp_path / "fake python"
    fake.write_text('#!/bin/sh\necho "$$|$PYBROKER_INSTANCE|$*"\n')
    fake.chmod(0o755)
    instance = tmp_path / "it's here"
    create_instance(instance, CreateOptions(user="u", password="p"), python=str(fake))
    process = subprocess.Popen(
        [str(instance / "bin" / "pybroker"), "run", "--x", "a b"],
        stdout=subprocess.PIPE,
        text=True,
        env={key: value for key, value in os.environ.items() if key != "PYBROKER_INSTANCE"},
    )
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    pid, instance_seen, arguments = output.strip().split("|")
    assert int(pid) == process.pid
    assert instance_seen == str(instance)
    assert arguments == "-m pybroker run --x a b"


# ---------------------------------------------------------------------------------------------
# existing directories


def test_non_empty_directory_is_refused_without_force(tmp_path: Path) -> None:
    instance = tmp_path / "i"
    create_ok(instance, "--name", "first")
    before = (instance / "etc" / "broker.xml").read_bytes()
    result = run_create(instance, "--user", "a", "--password", "b", "--name", "second")
    assert result.exit_code == 2
    assert "not empty" in result.output and "--force" in result.output
    assert (instance / "etc" / "broker.xml").read_bytes() == before


def test_force_rewrites_configuration_and_keeps_data(tmp_path: Path) -> None:
    instance = tmp_path / "i"
    create_ok(instance, "--name", "first", "--allow-anonymous")
    journal = instance / "data" / "journal"
    journal.mkdir()
    (journal / "segment").write_bytes(b"keep me")
    (instance / "log" / "broker.log").write_text("old log")
    create_ok(instance, "--name", "second", "--require-login", "--force")
    assert text_of(core_of(instance), "c:name") == "second"
    modules = login_modules((instance / "etc" / "login.config").read_text())
    assert [m[1] for m in modules] == ["required"]
    assert (journal / "segment").read_bytes() == b"keep me"
    assert (instance / "log" / "broker.log").read_text() == "old log"


def test_empty_existing_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "i").mkdir()
    create_ok(tmp_path / "i")
    assert (tmp_path / "i" / "etc" / "broker.xml").is_file()


def test_existing_file_is_refused_even_with_force(tmp_path: Path) -> None:
    target = tmp_path / "i"
    target.write_text("not a directory")
    result = run_create(target, "--user", "a", "--password", "b", "--force")
    assert result.exit_code == 2
    assert "not a directory" in result.output


def test_programmatic_create_rejects_bad_options_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--backup"):
        create_instance(tmp_path / "i", CreateOptions(user="u", password="p", backup=True))
    assert not (tmp_path / "i").exists()


# ---------------------------------------------------------------------------------------------
# Artemis-only flags


def test_jvm_and_web_flags_are_accepted_and_ignored(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    create_ok(reference, "--name", "n")
    result = create_ok(
        tmp_path / "i",
        "--name",
        "n",
        "--java-memory",
        "4G",
        "--no-web",
        "--http-host",
        "0.0.0.0",
        "--http-port",
        "8162",
        "--security-manager",
        "basic",
        "--silent",
    )
    for flag in (
        "--java-memory",
        "--no-web",
        "--http-host",
        "--http-port",
        "--security-manager",
        "--silent",
    ):
        assert f"{flag} ignored" in result.stderr, flag
    assert rows(core_of(tmp_path / "i")) == rows(core_of(reference))


# ---------------------------------------------------------------------------------------------
# the seed lab's hand edits


def make_lab_pair(tmp_path: Path) -> tuple[Path, Path]:
    brokers = tmp_path / "brokers"
    create_ok(brokers / "master", "--name", "master", "--allow-anonymous")
    create_ok(brokers / "slave", "--name", "slave", "--allow-anonymous", "--port-offset", "1")
    return brokers / "master", brokers / "slave"


def lab_rows(core: etree._Element) -> list[tuple[str, dict[str, str], str | None]]:
    wanted = (
        "/paging-directory",
        "/bindings-directory",
        "/journal-directory",
        "/large-messages-directory",
        "/connectors",
        "/cluster-user",
        "/cluster-password",
        "/cluster-connections",
        "/ha-policy",
    )
    return [row for row in rows(core) if row[0].startswith(wanted)]


def expected_lab_rows(own: int, other: int, policy: list[tuple[str, str]]) -> list[tuple]:
    connection = "/cluster-connections/cluster-connection"
    return [
        ("/paging-directory", {}, "../sharedstore/data/paging"),
        ("/bindings-directory", {}, "../sharedstore/data/bindings"),
        ("/journal-directory", {}, "../sharedstore/data/journal"),
        ("/large-messages-directory", {}, "../sharedstore/data/large-messages"),
        ("/connectors/connector", {"name": "netty-connector"}, f"tcp://localhost:{own}"),
        ("/connectors/connector", {"name": "netty-backup-connector"}, f"tcp://localhost:{other}"),
        ("/cluster-user", {}, "cluster-admin"),
        ("/cluster-password", {}, "password-admin"),
        (connection, {"name": "my-cluster"}, None),
        (connection + "/connector-ref", {}, "netty-connector"),
        (connection + "/retry-interval", {}, "500"),
        (connection + "/use-duplicate-detection", {}, "true"),
        (connection + "/message-load-balancing", {}, "STRICT"),
        (connection + "/max-hops", {}, "1"),
        (connection + "/static-connectors/connector-ref", {}, "netty-backup-connector"),
        *[(f"/ha-policy/shared-store/{path}", {}, value) for path, value in policy],
    ]


def test_lab_edits_on_created_instances(tmp_path: Path) -> None:
    master, slave = make_lab_pair(tmp_path)
    apply_lab_edits(master / "etc" / "broker.xml", "master")
    apply_lab_edits(slave / "etc" / "broker.xml", "slave")
    assert lab_rows(core_of(master)) == expected_lab_rows(
        61616, 61617, [("master/failover-on-shutdown", "true")]
    )
    assert lab_rows(core_of(slave)) == expected_lab_rows(
        61617, 61616, [("slave/allow-failback", "true"), ("slave/failover-on-shutdown", "true")]
    )
    # everything else is untouched
    others = [r for r in rows(core_of(master)) if r not in lab_rows(core_of(master))]
    reference = [r for r in REFERENCE_TABLE if not r[0].endswith("-directory")]
    assert others == reference


def test_lab_edits_are_idempotent_and_replace_create_cluster_elements(tmp_path: Path) -> None:
    instance = tmp_path / "brokers" / "b"
    create_ok(instance, *HA_ARGS)
    path = instance / "etc" / "broker.xml"
    first = apply_lab_edits(path, "slave", ports=(7000, 7001), shared_store="/mnt/shared")
    second = apply_lab_edits(path, "slave", ports=(7000, 7001), shared_store="/mnt/shared")
    assert first == second == path.read_text()
    core = core_of(instance)
    for tag in (
        "connectors",
        "cluster-user",
        "cluster-connections",
        "ha-policy",
        "journal-directory",
    ):
        assert len(core.findall(f"c:{tag}", NS)) == 1, tag
    assert text_of(core, "c:journal-directory") == "/mnt/shared/data/journal"
    assert [c.text for c in core.iterfind("c:connectors/c:connector", NS)] == [
        "tcp://localhost:7001",
        "tcp://localhost:7000",
    ]


def test_lab_edits_ignore_commented_elements(tmp_path: Path) -> None:
    path = tmp_path / "broker.xml"
    path.write_text(
        '<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">\n'
        "<!-- <journal-directory>old</journal-directory> -->\n"
        "<journal-directory>data/journal</journal-directory>\n"
        "<!-- </core> -->\n"
        "</core></configuration>\n"
    )
    text = apply_lab_edits(path, "master")
    assert "<!-- <journal-directory>old</journal-directory> -->" in text
    core = parse(path).getroot().find("c:core", NS)
    assert [e.text for e in core.findall("c:journal-directory", NS)] == [
        "../sharedstore/data/journal"
    ]


def test_lab_edits_refuse_a_file_without_core(tmp_path: Path) -> None:
    path = tmp_path / "broker.xml"
    original = "<configuration xmlns='urn:activemq'/>\n"
    path.write_text(original)
    with pytest.raises(ConfigError, match="</core>"):
        apply_lab_edits(path, "master")
    with pytest.raises(ValueError, match="role"):
        apply_lab_edits(path, "primary")  # type: ignore[arg-type]
    assert path.read_text() == original


def test_lab_edited_files_load_with_the_config_parser(tmp_path: Path) -> None:
    config = pytest.importorskip("pybroker.config")
    load_config = getattr(config, "load_config", None)
    if load_config is None:
        pytest.skip("pybroker.config.load_config does not exist yet")
    master, slave = make_lab_pair(tmp_path)
    apply_lab_edits(master / "etc" / "broker.xml", "master")
    apply_lab_edits(slave / "etc" / "broker.xml", "slave")
    for instance in (master, slave):
        load_config(instance / "etc" / "broker.xml")
