"""What ``pybroker create`` and the seed lab's edits write must load, and log in as intended."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybroker.cli.create import (
    CreateOptions,
    render_broker_xml,
    render_login_config,
    render_roles,
    render_users,
)
from pybroker.config import parse_config
from pybroker.config.users import Authenticator, Principal
from pybroker.errors import SecurityError
from pybroker.testing.lab import edit_broker_xml_text

INSTANCE = Path("/labs/node")


@pytest.mark.parametrize("options", [
    CreateOptions(user="admin", password="admin", name="master", allow_anonymous=True),
    CreateOptions(user="admin", password="admin", shared_store=True, failover_on_shutdown=True),
    CreateOptions(user="admin", password="admin", shared_store=True, backup=True,
                  port_offset=1, static_cluster=("tcp://localhost:61616",),
                  cluster_user="cu", cluster_password="cp"),
    CreateOptions(user="u", password="p", fsync=False, paging=False, auto_delete=True,
                  global_max_size="1G", purge_page_folders=True,
                  queues=(("q1", "anycast"),), addresses=(("a1", "multicast"),)),
], ids=["default", "shared-store-primary", "static-cluster-backup", "options"])
def test_created_broker_xml_loads(options):
    config = parse_config(render_broker_xml(options), file="broker.xml", instance_dir=INSTANCE)
    assert config.warnings == ()
    assert config.acceptor("artemis") is not None
    if options.shared_store:
        assert config.ha_policy.kind == ("shared-store-backup" if options.backup
                                         else "shared-store-primary")
        assert config.ha_policy.failover_on_shutdown is options.failover_on_shutdown
    if options.static_cluster:
        [cluster] = config.cluster_connections
        assert cluster.static_connectors == ("node0",)
        assert config.connectors["artemis"].port == 61617
        assert (config.cluster_user, config.cluster_password) == ("cu", "cp")
    if options.global_max_size:
        assert config.global_max_size == 1024**3


def test_clustered_create_warns_only_about_discovery():
    options = CreateOptions(user="admin", password="admin", clustered=True, host="10.0.0.5")
    config = parse_config(render_broker_xml(options), file="broker.xml", instance_dir=INSTANCE)
    assert config.connectors["artemis"].host == "10.0.0.5"
    for warning in config.warnings:
        assert any(word in warning for word in ("broadcast", "discovery")), warning


@pytest.mark.parametrize(("role", "kind", "own", "other"), [
    ("master", "shared-store-primary", 61616, 61617),
    ("slave", "shared-store-backup", 61617, 61616),
])
def test_seed_lab_edits_load(role, kind, own, other):
    options = CreateOptions(user="admin", password="admin", name=role, allow_anonymous=True,
                            port_offset=0 if role == "master" else 1)
    text = edit_broker_xml_text(render_broker_xml(options), role)
    config = parse_config(text, file="broker.xml", instance_dir=INSTANCE / role)
    assert config.ha_policy.kind == kind
    if role == "master":
        assert config.ha_policy.failover_on_shutdown is True
    else:
        assert config.ha_policy.allow_failback is True
    assert config.journal_directory == INSTANCE / "sharedstore" / "data" / "journal"
    assert config.connectors["netty-connector"].port == own
    assert config.connectors["netty-backup-connector"].port == other
    [cluster] = config.cluster_connections
    assert cluster.message_load_balancing == "STRICT"
    assert [w for w in config.warnings if "deprecated" not in w] == []


@pytest.mark.parametrize("allow_anonymous", [True, False])
def test_created_login_files_authenticate(tmp_path, allow_anonymous):
    options = CreateOptions(user="admin", password="s3cret", allow_anonymous=allow_anonymous)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "login.config").write_text(render_login_config(options))
    (etc / "artemis-users.properties").write_text(render_users(options))
    (etc / "artemis-roles.properties").write_text(render_roles(options))
    auth = Authenticator.from_etc(etc)
    assert auth.authenticate("admin", "s3cret") == Principal("admin", frozenset({"amq"}))
    if allow_anonymous:
        assert auth.authenticate(None, None) == Principal("admin", frozenset({"amq"}))
    else:
        with pytest.raises(SecurityError):
            auth.authenticate(None, None)
        with pytest.raises(SecurityError):
            auth.authenticate("admin", "wrong")
