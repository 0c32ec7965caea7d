"""broker.xml -> :class:`~pybroker.config.model.Configuration`.

The parser walks ``<core>`` once, in document order. Every child must be an element Artemis
knows (the tables below hold the names of Artemis's ``artemis-configuration.xsd``):

* elements pybroker models are converted and checked (ints, sizes with K/M/G suffixes, enums);
* elements Artemis knows but pybroker does not implement produce a warning naming them;
* anything else is a :class:`~pybroker.errors.ConfigError` naming file, line and element, with a
  "did you mean" suggestion when a known name is close.

Legacy HA names (``master``, ``slave``, ``live-only``) are accepted with a deprecation warning;
replication and colocated HA are refused because pybroker implements shared-store HA only.
Warnings are logged on the ``pybroker.config`` logger and kept in ``Configuration.warnings``.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from lxml import etree

from pybroker.config.model import (
    CRITICAL_ANALYZER_POLICIES,
    DEFAULT_BUFFER_TIMEOUT_NS,
    DEFAULT_GLOBAL_MAX_SIZE,
    JOURNAL_TYPES,
    KNOWN_PROTOCOLS,
    MESSAGE_LOAD_BALANCING_TYPES,
    PERMISSION_ALIASES,
    PERMISSIONS,
    AcceptorConfig,
    AddressConfig,
    AddressSettings,
    ClusterConnectionConfig,
    Configuration,
    ConnectorConfig,
    HAPolicy,
    JournalConfig,
    QueueConfig,
    RoutingType,
    ScaleDownConfig,
    SecuritySetting,
    WildcardConfig,
)
from pybroker.config.xml import (
    XINCLUDE_NS,
    child_elements,
    find_xincludes,
    local_name,
    namespace,
    parse_document,
    substitute_properties,
    text_of,
)
from pybroker.errors import ConfigError

logger = logging.getLogger("pybroker.config")

ROOT_NAMESPACE = "urn:activemq"
CORE_NAMESPACE = "urn:activemq:core"

# --------------------------------------------------------------------------------------------
# Names Artemis knows (from artemis-configuration.xsd), as data.

#: Every child element of ``<core>`` in Artemis's schema, plus two that Artemis's parser
#: reads although the schema lacks them (journal-max-attic-files, remoting-interceptors).
ARTEMIS_CORE_ELEMENTS = frozenset({
    "name", "system-property-prefix", "internal-naming-prefix",
    "amqp-use-core-subscription-naming", "resolve-protocols", "journal-datasync",
    "large-message-sync", "persistence-enabled", "scheduled-thread-pool-max-size",
    "thread-pool-max-size", "graceful-shutdown-enabled", "graceful-shutdown-timeout",
    "security-enabled", "security-invalidation-interval", "authentication-cache-size",
    "authorization-cache-size", "journal-lock-acquisition-timeout", "wild-card-routing-enabled",
    "management-address", "management-notification-address", "cluster-user",
    "cluster-password", "password-codec", "mask-password", "log-delegate-factory-class-name",
    "jmx-management-enabled", "jmx-domain", "jmx-use-broker-name", "message-counter-enabled",
    "message-counter-sample-period", "message-counter-max-day-history",
    "connection-ttl-override", "connection-ttl-check-interval",
    "configuration-file-refresh-period", "temporary-queue-namespace", "uuid-namespace",
    "async-connection-execution-enabled", "transaction-timeout",
    "transaction-timeout-scan-period", "message-expiry-scan-period",
    "message-expiry-thread-priority", "address-queue-scan-period", "id-cache-size",
    "persist-id-cache", "remoting-incoming-interceptors", "remoting-outgoing-interceptors",
    "persist-delivery-count-before-delivery", "max-redelivery-records",
    "populate-validated-user", "reject-empty-validated-user", "mqtt-session-scan-interval",
    "mqtt-session-state-persistence-timeout", "mqtt-subscription-persistence-enabled",
    "connectors", "acceptors", "broadcast-groups", "discovery-groups", "diverts", "queues",
    "bridges", "federations", "ha-policy", "cluster-connections", "broker-connections",
    "connection-routers", "grouping-handler", "purge-page-folders", "paging-directory",
    "bindings-directory", "create-bindings-dir", "page-max-concurrent-io", "read-whole-page",
    "journal-directory", "journal-retention-directory", "node-manager-lock-directory",
    "create-journal-dir", "journal-type", "journal-buffer-timeout", "journal-device-block-size",
    "journal-buffer-size", "journal-sync-transactional", "journal-sync-non-transactional",
    "log-journal-write-rate", "journal-file-size", "journal-min-files", "journal-pool-files",
    "journal-compact-percentage", "journal-compact-min-files", "journal-max-io",
    "journal-file-open-timeout", "server-dump-interval", "global-max-messages",
    "global-max-size-percent-of-jvm-max-memory", "global-max-size", "max-disk-usage",
    "min-disk-free", "disk-scan-period", "memory-warning-threshold", "memory-measure-interval",
    "large-messages-directory", "store", "critical-analyzer", "critical-analyzer-timeout",
    "critical-analyzer-check-period", "critical-analyzer-policy", "page-sync-timeout",
    "mirror-ack-manager-queue-attempts", "mirror-ack-manager-page-attempts",
    "mirror-ack-manager-retry-delay", "mirror-ack-manager-warn-unacked",
    "mirror-page-transaction", "suppress-session-notifications", "literal-match-markers",
    "view-permission-method-match-pattern", "management-message-rbac",
    "management-rbac-prefix", "security-settings", "broker-plugins", "metrics-plugin",
    "metrics", "address-settings", "resource-limit-settings", "connector-services",
    "addresses", "network-check-list", "network-check-URL-list", "network-check-period",
    "network-check-timeout", "network-check-NIC", "network-check-ping-command",
    "network-check-ping6-command", "wildcard-addresses",
    "journal-max-attic-files", "remoting-interceptors",
})

#: Children of ``<address-setting>`` in Artemis's schema.
ARTEMIS_ADDRESS_SETTING_ELEMENTS = frozenset({
    "dead-letter-address", "auto-create-dead-letter-resources", "dead-letter-queue-prefix",
    "dead-letter-queue-suffix", "expiry-address", "auto-create-expiry-resources",
    "expiry-queue-prefix", "expiry-queue-suffix", "no-expiry", "expiry-delay",
    "min-expiry-delay", "max-expiry-delay", "redelivery-delay", "redelivery-delay-multiplier",
    "redelivery-collision-avoidance-factor", "max-redelivery-delay", "max-delivery-attempts",
    "max-size-bytes", "max-size-messages", "page-limit-bytes", "page-limit-messages",
    "max-size-bytes-reject-threshold", "page-size-bytes", "page-max-cache-size",
    "max-read-page-messages", "prefetch-page-messages", "max-read-page-bytes",
    "prefetch-page-bytes", "address-full-policy", "disk-full-policy", "page-full-policy",
    "message-counter-history-day-limit", "last-value-queue", "default-last-value-queue",
    "default-last-value-key", "default-non-destructive", "default-exclusive-queue",
    "default-group-rebalance", "default-group-rebalance-pause-dispatch",
    "default-group-buckets", "default-group-first-key", "default-consumers-before-dispatch",
    "default-delay-before-dispatch", "redistribution-delay", "send-to-dla-on-no-route",
    "slow-consumer-threshold", "slow-consumer-threshold-measurement-unit",
    "slow-consumer-policy", "slow-consumer-check-period", "auto-create-jms-queues",
    "auto-delete-jms-queues", "auto-create-jms-topics", "auto-delete-jms-topics",
    "auto-create-queues", "auto-delete-queues", "auto-delete-created-queues",
    "auto-delete-queues-delay", "auto-delete-queues-message-count",
    "auto-delete-queues-skip-usage-check", "config-delete-queues", "auto-create-addresses",
    "auto-delete-addresses", "auto-delete-addresses-delay",
    "auto-delete-addresses-skip-usage-check", "config-delete-addresses",
    "config-delete-diverts", "management-browse-page-size",
    "management-message-attribute-size-limit", "default-purge-on-no-consumers",
    "default-max-consumers", "default-queue-routing-type", "default-address-routing-type",
    "default-consumer-window-size", "default-ring-size", "retroactive-message-count",
    "enable-metrics", "enable-ingress-timestamp", "id-cache-size", "initial-queue-buffer-size",
})

#: Children of ``<cluster-connection>`` in Artemis's schema.
ARTEMIS_CLUSTER_CONNECTION_ELEMENTS = frozenset({
    "address", "connector-ref", "check-period", "connection-ttl", "min-large-message-size",
    "call-timeout", "retry-interval", "retry-interval-multiplier", "max-retry-interval",
    "initial-connect-attempts", "reconnect-attempts", "use-duplicate-detection",
    "forward-when-no-consumers", "message-load-balancing", "max-hops",
    "confirmation-window-size", "producer-window-size", "call-failover-timeout",
    "notification-interval", "notification-attempts", "scale-down-connector", "client-id",
    "topology-scanner-attempts", "static-connectors", "discovery-group-ref",
})

_HA_POLICY_CHILDREN = frozenset({"live-only", "primary-only", "shared-store", "replication"})
_SHARED_STORE_CHILDREN = frozenset({"master", "primary", "slave", "backup", "colocated"})
_SHARED_STORE_PRIMARY_CHILDREN = frozenset({
    "failback-delay", "failover-on-shutdown", "wait-for-activation",
})
_SHARED_STORE_BACKUP_CHILDREN = frozenset({
    "allow-failback", "failback-delay", "failover-on-shutdown", "scale-down", "restart-backup",
})
_SCALE_DOWN_CHILDREN = frozenset({
    "enabled", "group-name", "discovery-group-ref", "connectors", "commit-interval",
})
_QUEUE_ATTRIBUTES = frozenset({
    "name", "max-consumers", "purge-on-no-consumers", "exclusive", "group-rebalance",
    "group-rebalance-pause-dispatch", "group-buckets", "group-first-key", "last-value",
    "last-value-key", "non-destructive", "consumers-before-dispatch", "delay-before-dispatch",
    "ring-size", "enabled",
})
_WILDCARD_CHILDREN = frozenset({
    "enabled", "routing-enabled", "delimiter", "any-words", "single-word",
})

# --------------------------------------------------------------------------------------------
# Parsing context


class _Context:
    """The file being parsed and the warnings collected so far."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.warnings: list[str] = []

    def error(self, message: str, element: etree._Element | None = None, *,
              name: str | None = None) -> ConfigError:
        line = element.sourceline if element is not None else None
        if name is None and element is not None:
            name = local_name(element)
        return ConfigError(message, file=self.file, line=line, element=name)

    def warn(self, message: str, element: etree._Element | None = None) -> None:
        where = self.file
        if element is not None:
            where += f":{element.sourceline}: <{local_name(element)}>"
        text = f"{where}: {message}"
        self.warnings.append(text)
        logger.warning("%s", text)


def _suggest(name: str, candidates: frozenset[str] | set[str]) -> str:
    """``"; did you mean <x>?"`` for the closest known name, or ``""``."""
    lowered = {candidate.lower(): candidate for candidate in candidates}
    if name.lower() in lowered:
        return f"; did you mean <{lowered[name.lower()]}>?"
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return f"; did you mean <{lowered[close[0]]}>?"
    return ""


def _suggest_value(value: str, candidates: tuple[str, ...] | frozenset[str]) -> str:
    lowered = {candidate.lower(): candidate for candidate in candidates}
    if value.lower() in lowered:
        return f"; did you mean {lowered[value.lower()]}?"
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {lowered[close[0]]}?"
    return ""


_CONTEXT_OF: dict[str, str] = {}
for _name in ARTEMIS_ADDRESS_SETTING_ELEMENTS:
    _CONTEXT_OF.setdefault(_name, "address-setting")
for _name in ARTEMIS_CLUSTER_CONNECTION_ELEMENTS:
    _CONTEXT_OF.setdefault(_name, "cluster-connection")
for _name in _SHARED_STORE_PRIMARY_CHILDREN | _SHARED_STORE_BACKUP_CHILDREN:
    _CONTEXT_OF.setdefault(_name, "ha-policy")
for _name in ARTEMIS_CORE_ELEMENTS:
    _CONTEXT_OF[_name] = "core"
_CONTEXT_OF.update({"acceptor": "acceptors", "connector": "connectors", "address": "addresses",
                    "address-setting": "address-settings",
                    "security-setting": "security-settings",
                    "cluster-connection": "cluster-connections"})


def _unknown(ctx: _Context, element: etree._Element, parent: str,
             known: frozenset[str]) -> ConfigError:
    name = local_name(element)
    home = _CONTEXT_OF.get(name)
    if home is not None and home != parent:
        hint = f"; <{name}> belongs inside <{home}>"
    else:
        hint = _suggest(name, known)
    return ctx.error(f"unknown element <{name}> in <{parent}>{hint}", element)


def _children(ctx: _Context, element: etree._Element, known: frozenset[str], *,
              repeatable: frozenset[str] = frozenset()) -> list[tuple[str, etree._Element]]:
    """(name, child) pairs of ``element``; unknown or duplicated names raise."""
    parent = local_name(element)
    if element.text and element.text.strip():
        raise ctx.error(f"unexpected text {element.text.strip()[:40]!r} in <{parent}>: it "
                        "holds elements, not a value", element)
    seen: set[str] = set()
    result = []
    for child in child_elements(element):
        if child.tail and child.tail.strip():
            raise ctx.error(f"unexpected text {child.tail.strip()[:40]!r} after "
                            f"<{local_name(child)}> in <{parent}>", element)
        ns = namespace(child)
        name = local_name(child)
        if ns == XINCLUDE_NS:
            continue  # reported once by parse_config
        if ns not in (None, CORE_NAMESPACE, ROOT_NAMESPACE):
            ctx.warn(f"element in foreign namespace {ns!r} ignored", child)
            continue
        if name not in known:
            raise _unknown(ctx, child, parent, known)
        if name in seen and name not in repeatable:
            raise ctx.error(f"<{name}> appears more than once in <{parent}>", child)
        seen.add(name)
        result.append((name, child))
    return result


def _check_attributes(ctx: _Context, element: etree._Element, known: frozenset[str]) -> None:
    for key in element.attrib:
        if key.startswith("{"):
            continue  # namespaced (xsi:schemaLocation, ...)
        if key not in known:
            hint = _suggest(key, known).replace("<", "").replace(">", "")
            raise ctx.error(f"unknown attribute {key!r}{hint}", element)


def _required_attribute(ctx: _Context, element: etree._Element, key: str) -> str:
    value = element.get(key)
    if value is None or not value.strip():
        raise ctx.error(f"missing required attribute {key!r}", element)
    return value.strip()


# --------------------------------------------------------------------------------------------
# Values

_INT_TEXT = re.compile(r"[+-]?\d+\Z")
_SIZE_TEXT = re.compile(r"\s*(\d+)\s*(?:([kmg])(i)?)?(b)?\s*\Z", re.IGNORECASE)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_SIZE_FACTORS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3}

_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "gt0": (lambda v: v > 0, "must be greater than 0"),
    "ge0": (lambda v: v >= 0, "must be 0 or greater"),
    "m1_or_gt0": (lambda v: v == -1 or v > 0, "must be -1 or greater than 0"),
    "m1_or_ge0": (lambda v: v >= -1, "must be -1, 0 or greater"),
    "percent": (lambda v: 0 <= v <= 100, "must be a percentage from 0 to 100"),
    "percent_or_m1": (lambda v: v == -1 or 0 <= v <= 100,
                      "must be -1 or a percentage from 0 to 100"),
    "pow2": (lambda v: v > 0 and int(v) & (int(v) - 1) == 0,
             "must be a positive power of two"),
    "0to1": (lambda v: 0.0 <= v <= 1.0, "must be between 0 and 1"),
}

Converter = Callable[[str, _Context, etree._Element], Any]


def _checked(value: Any, check: str | None, text: str, ctx: _Context,
             element: etree._Element) -> Any:
    if check is not None:
        predicate, message = _CHECKS[check]
        if not predicate(value):
            raise ctx.error(f"bad value {text!r}: {message}", element)
    return value


def _integer(bits: int = 64, check: str | None = None) -> Converter:
    low, high = _INT32 if bits == 32 else _INT64

    def convert(text: str, ctx: _Context, element: etree._Element) -> int:
        if not _INT_TEXT.match(text):
            raise ctx.error(f"bad integer {text!r}", element)
        value = int(text)
        if not low <= value <= high:
            raise ctx.error(f"bad integer {text!r}: out of range for a {bits}-bit value",
                            element)
        return _checked(value, check, text, ctx, element)

    return convert


def parse_size(text: str) -> int:
    """Artemis's byte sizes: ``10485760``, ``10M``, ``10MB``, ``10MiB``, ``512k``, ``-1``.

    K, M and G are powers of 1024 whichever spelling is used (as in Artemis's ByteUtil); the
    suffix is case-insensitive. Raises ``ValueError`` for anything else.
    """
    match = _SIZE_TEXT.match(text)
    if match:
        unit = match.group(2).lower() if match.group(2) else None
        return int(match.group(1)) * _SIZE_FACTORS[unit]
    stripped = text.strip()
    if _INT_TEXT.match(stripped):
        return int(stripped)
    raise ValueError(f"bad size {text!r}")


def _size(bits: int = 64, check: str | None = None) -> Converter:
    low, high = _INT32 if bits == 32 else _INT64

    def convert(text: str, ctx: _Context, element: etree._Element) -> int:
        try:
            value = parse_size(text)
        except ValueError:
            raise ctx.error(
                f"bad size {text!r}: expected a number of bytes with an optional suffix "
                "K, KB, KiB, M, MB, MiB, G, GB or GiB", element) from None
        if not low <= value <= high:
            raise ctx.error(f"bad size {text!r}: out of range", element)
        return _checked(value, check, text, ctx, element)

    return convert


def _boolean(text: str, ctx: _Context, element: etree._Element) -> bool:
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ctx.error(f"bad boolean {text!r}: expected true or false", element)


def _double(check: str | None = None) -> Converter:
    def convert(text: str, ctx: _Context, element: etree._Element) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ctx.error(f"bad number {text!r}", element) from None
        if not math.isfinite(value):
            raise ctx.error(f"bad number {text!r}: must be finite", element)
        return _checked(value, check, text, ctx, element)

    return convert


def _enum(values: tuple[str, ...]) -> Converter:
    def convert(text: str, ctx: _Context, element: etree._Element) -> str:
        if text not in values:
            raise ctx.error(
                f"bad value {text!r}: expected one of {', '.join(values)}"
                + _suggest_value(text, values), element)
        return text

    return convert


def _routing_type(text: str, ctx: _Context, element: etree._Element) -> RoutingType:
    return RoutingType(_enum(("ANYCAST", "MULTICAST"))(text, ctx, element))


def _string(nonempty: bool = False) -> Converter:
    def convert(text: str, ctx: _Context, element: etree._Element) -> str:
        if nonempty and not text:
            raise ctx.error("must not be empty", element)
        return text

    return convert


def _convert(converter: Converter, element: etree._Element, ctx: _Context) -> Any:
    children = child_elements(element)
    if children:
        raise ctx.error(f"<{local_name(element)}> takes a value, not elements such as "
                        f"<{local_name(children[0])}>", element)
    return converter(text_of(element), ctx, element)


def _attribute(converter: Converter, element: etree._Element, key: str,
               ctx: _Context) -> Any:
    text = element.get(key, "").strip()
    try:
        return converter(text, ctx, element)
    except ConfigError as error:
        raise ctx.error(f"attribute {key!r}: {error.reason}", element) from None


# --------------------------------------------------------------------------------------------
# Tables for <core>: element -> (target field, converter). "journal." targets JournalConfig.

_CORE_VALUES: dict[str, tuple[str, Converter]] = {
    "name": ("name", _string()),
    "persistence-enabled": ("persistence_enabled", _boolean),
    "internal-naming-prefix": ("internal_naming_prefix", _string()),
    "amqp-use-core-subscription-naming": ("amqp_use_core_subscription_naming", _boolean),
    "large-message-sync": ("large_message_sync", _boolean),
    "graceful-shutdown-enabled": ("graceful_shutdown_enabled", _boolean),
    "graceful-shutdown-timeout": ("graceful_shutdown_timeout", _integer(64, "m1_or_ge0")),
    "security-enabled": ("security_enabled", _boolean),
    "security-invalidation-interval": ("security_invalidation_interval",
                                       _integer(64, "ge0")),
    "authentication-cache-size": ("authentication_cache_size", _integer(64, "ge0")),
    "authorization-cache-size": ("authorization_cache_size", _integer(64, "ge0")),
    "management-address": ("management_address", _string(nonempty=True)),
    "management-notification-address": ("management_notification_address",
                                        _string(nonempty=True)),
    "cluster-user": ("cluster_user", _string()),
    "cluster-password": ("cluster_password", _string()),
    "mask-password": ("mask_password", _boolean),
    "message-counter-enabled": ("message_counter_enabled", _boolean),
    "message-counter-sample-period": ("message_counter_sample_period", _integer(64, "gt0")),
    "message-counter-max-day-history": ("message_counter_max_day_history",
                                        _integer(32, "gt0")),
    "connection-ttl-override": ("connection_ttl_override", _integer(64, "m1_or_gt0")),
    "connection-ttl-check-interval": ("connection_ttl_check_interval", _integer(64, "gt0")),
    "configuration-file-refresh-period": ("configuration_file_refresh_period",
                                          _integer(64, "m1_or_gt0")),
    "temporary-queue-namespace": ("temporary_queue_namespace", _string()),
    "uuid-namespace": ("uuid_namespace", _string()),
    "transaction-timeout": ("transaction_timeout", _integer(64, "gt0")),
    "transaction-timeout-scan-period": ("transaction_timeout_scan_period",
                                        _integer(64, "gt0")),
    "message-expiry-scan-period": ("message_expiry_scan_period", _integer(64, "m1_or_gt0")),
    "address-queue-scan-period": ("address_queue_scan_period", _integer(64, "m1_or_gt0")),
    "id-cache-size": ("id_cache_size", _integer(32, "ge0")),
    "persist-id-cache": ("persist_id_cache", _boolean),
    "persist-delivery-count-before-delivery": ("persist_delivery_count_before_delivery",
                                               _boolean),
    "max-redelivery-records": ("max_redelivery_records", _integer(32, "m1_or_ge0")),
    "populate-validated-user": ("populate_validated_user", _boolean),
    "reject-empty-validated-user": ("reject_empty_validated_user", _boolean),
    "mqtt-session-scan-interval": ("mqtt_session_scan_interval", _integer(64, "gt0")),
    "mqtt-session-state-persistence-timeout": ("mqtt_session_state_persistence_timeout",
                                               _integer(64, "gt0")),
    "mqtt-subscription-persistence-enabled": ("mqtt_subscription_persistence_enabled",
                                              _boolean),
    "purge-page-folders": ("purge_page_folders", _boolean),
    "paging-directory": ("paging_directory", _string(nonempty=True)),
    "bindings-directory": ("bindings_directory", _string(nonempty=True)),
    "create-bindings-dir": ("create_bindings_dir", _boolean),
    "page-max-concurrent-io": ("page_max_concurrent_io", _integer(32, "m1_or_gt0")),
    "read-whole-page": ("read_whole_page", _boolean),
    "journal-directory": ("journal_directory", _string(nonempty=True)),
    "node-manager-lock-directory": ("node_manager_lock_directory", _string(nonempty=True)),
    "create-journal-dir": ("create_journal_dir", _boolean),
    "large-messages-directory": ("large_messages_directory", _string(nonempty=True)),
    "journal-type": ("journal.type", _enum(JOURNAL_TYPES)),
    "journal-buffer-timeout": ("journal.buffer_timeout_ns", _integer(32, "ge0")),
    "journal-device-block-size": ("journal.device_block_size", _integer(32, "m1_or_ge0")),
    "journal-buffer-size": ("journal.buffer_size", _size(32, "gt0")),
    "journal-sync-transactional": ("journal.sync_transactional", _boolean),
    "journal-sync-non-transactional": ("journal.sync_non_transactional", _boolean),
    "journal-datasync": ("journal.datasync", _boolean),
    "log-journal-write-rate": ("journal.log_write_rate", _boolean),
    "journal-file-size": ("journal.file_size", _size(32, "gt0")),
    "journal-min-files": ("journal.min_files", _integer(32, "gt0")),
    "journal-pool-files": ("journal.pool_files", _integer(32, "m1_or_gt0")),
    "journal-compact-percentage": ("journal.compact_percentage", _integer(32, "percent")),
    "journal-compact-min-files": ("journal.compact_min_files", _integer(32, "ge0")),
    "journal-max-io": ("journal.max_io", _integer(32, "gt0")),
    "journal-file-open-timeout": ("journal.file_open_timeout_s", _integer(32, "gt0")),
    "journal-max-attic-files": ("journal.max_attic_files", _integer(32)),
    "journal-lock-acquisition-timeout": ("journal.lock_acquisition_timeout_ms",
                                         _integer(64, "m1_or_gt0")),
    "global-max-messages": ("global_max_messages", _integer(64, "m1_or_gt0")),
    "global-max-size": ("global_max_size", _size(64, "m1_or_gt0")),
    "max-disk-usage": ("max_disk_usage", _integer(32, "percent_or_m1")),
    "min-disk-free": ("min_disk_free", _size(64, "m1_or_gt0")),
    "disk-scan-period": ("disk_scan_period", _integer(32, "m1_or_gt0")),
    "critical-analyzer": ("critical_analyzer", _boolean),
    "critical-analyzer-timeout": ("critical_analyzer_timeout", _integer(64, "ge0")),
    "critical-analyzer-check-period": ("critical_analyzer_check_period", _integer(64, "ge0")),
    "critical-analyzer-policy": ("critical_analyzer_policy",
                                 _enum(CRITICAL_ANALYZER_POLICIES)),
    "page-sync-timeout": ("page_sync_timeout_ns", _integer(32, "ge0")),
    "suppress-session-notifications": ("suppress_session_notifications", _boolean),
    "literal-match-markers": ("literal_match_markers", _string()),
    "wild-card-routing-enabled": ("wildcard.routing_enabled", _boolean),
}

#: Known elements pybroker does not implement: element -> why it is ignored.
_CORE_IGNORED: dict[str, str] = {
    "system-property-prefix": "pybroker reads no Java system properties",
    "resolve-protocols": "pybroker's protocols are built in",
    "scheduled-thread-pool-max-size": "pybroker runs on one asyncio event loop",
    "thread-pool-max-size": "pybroker runs on one asyncio event loop",
    "async-connection-execution-enabled": "pybroker runs on one asyncio event loop",
    "message-expiry-thread-priority": "pybroker runs on one asyncio event loop",
    "password-codec": "pybroker has no pluggable password codecs",
    "log-delegate-factory-class-name": "pybroker logs through Python's logging",
    "jmx-management-enabled": "pybroker has no JMX (see its HTTP management API)",
    "jmx-domain": "pybroker has no JMX (see its HTTP management API)",
    "jmx-use-broker-name": "pybroker has no JMX (see its HTTP management API)",
    "remoting-incoming-interceptors": "pybroker loads no Java interceptors",
    "remoting-outgoing-interceptors": "pybroker loads no Java interceptors",
    "remoting-interceptors": "pybroker loads no Java interceptors",
    "broadcast-groups": "pybroker has no UDP/JGroups broadcast; use static connectors",
    "discovery-groups": "pybroker has no UDP/JGroups discovery; use static connectors",
    "diverts": "pybroker does not implement diverts",
    "bridges": "pybroker does not implement core bridges",
    "federations": "pybroker does not implement federation",
    "broker-connections": "pybroker does not implement AMQP broker connections",
    "connection-routers": "pybroker does not implement connection routers",
    "grouping-handler": "pybroker does not implement clustered grouping",
    "journal-retention-directory": "pybroker does not implement journal retention",
    "server-dump-interval": "pybroker has no thread dumps",
    "memory-warning-threshold": "pybroker does not measure JVM memory",
    "memory-measure-interval": "pybroker does not measure JVM memory",
    "global-max-size-percent-of-jvm-max-memory":
        "pybroker has no JVM heap; set <global-max-size> (pybroker's default is 512 MiB)",
    "mirror-ack-manager-queue-attempts": "pybroker does not implement AMQP mirroring",
    "mirror-ack-manager-page-attempts": "pybroker does not implement AMQP mirroring",
    "mirror-ack-manager-retry-delay": "pybroker does not implement AMQP mirroring",
    "mirror-ack-manager-warn-unacked": "pybroker does not implement AMQP mirroring",
    "mirror-page-transaction": "pybroker does not implement AMQP mirroring",
    "view-permission-method-match-pattern": "pybroker has no JMX role-based access",
    "management-message-rbac": "pybroker has no management RBAC",
    "management-rbac-prefix": "pybroker has no management RBAC",
    "broker-plugins": "pybroker loads no Java broker plugins",
    "metrics-plugin": "pybroker's metrics are built in",
    "metrics": "pybroker's metrics are built in",
    "resource-limit-settings": "pybroker does not implement resource limits",
    "connector-services": "pybroker loads no connector services",
    "network-check-list": "pybroker does not implement the network health check",
    "network-check-URL-list": "pybroker does not implement the network health check",
    "network-check-period": "pybroker does not implement the network health check",
    "network-check-timeout": "pybroker does not implement the network health check",
    "network-check-NIC": "pybroker does not implement the network health check",
    "network-check-ping-command": "pybroker does not implement the network health check",
    "network-check-ping6-command": "pybroker does not implement the network health check",
}

_SECTIONS = frozenset({
    "acceptors", "connectors", "cluster-connections", "ha-policy", "address-settings",
    "security-settings", "addresses", "queues", "wildcard-addresses", "store",
})

# Every known element is handled exactly once.
assert frozenset(_CORE_VALUES) | frozenset(_CORE_IGNORED) | _SECTIONS == ARTEMIS_CORE_ELEMENTS
assert not (frozenset(_CORE_VALUES) & frozenset(_CORE_IGNORED))


def _kebab(field_name: str) -> str:
    return field_name.replace("_", "-")


_ADDRESS_SETTING_VALUES: dict[str, Converter] = {
    "dead-letter-address": _string(),
    "auto-create-dead-letter-resources": _boolean,
    "dead-letter-queue-prefix": _string(),
    "dead-letter-queue-suffix": _string(),
    "expiry-address": _string(),
    "auto-create-expiry-resources": _boolean,
    "expiry-queue-prefix": _string(),
    "expiry-queue-suffix": _string(),
    "no-expiry": _boolean,
    "expiry-delay": _integer(64),
    "min-expiry-delay": _integer(64),
    "max-expiry-delay": _integer(64),
    "redelivery-delay": _integer(64),
    "redelivery-delay-multiplier": _double(),
    "redelivery-collision-avoidance-factor": _double("0to1"),
    "max-redelivery-delay": _integer(64),
    "max-delivery-attempts": _integer(32),
    "max-size-bytes": _size(64),
    "max-size-messages": _integer(64),
    "page-limit-bytes": _size(64, "m1_or_gt0"),
    "page-limit-messages": _integer(64, "m1_or_gt0"),
    "max-size-bytes-reject-threshold": _size(64),
    "page-size-bytes": _size(32, "gt0"),
    "page-max-cache-size": _integer(32),
    "max-read-page-messages": _integer(32, "m1_or_gt0"),
    "prefetch-page-messages": _integer(32, "m1_or_gt0"),
    "max-read-page-bytes": _size(32, "m1_or_gt0"),
    "prefetch-page-bytes": _size(32, "m1_or_gt0"),
    "address-full-policy": _enum(("PAGE", "BLOCK", "FAIL", "DROP")),
    "disk-full-policy": _enum(("BLOCK", "FAIL", "DROP")),
    "page-full-policy": _enum(("DROP", "FAIL")),
    "message-counter-history-day-limit": _integer(32),
    "last-value-queue": _boolean,
    "default-last-value-queue": _boolean,
    "default-last-value-key": _string(),
    "default-non-destructive": _boolean,
    "default-exclusive-queue": _boolean,
    "default-group-rebalance": _boolean,
    "default-group-rebalance-pause-dispatch": _boolean,
    "default-group-buckets": _integer(32),
    "default-group-first-key": _string(),
    "default-consumers-before-dispatch": _integer(32),
    "default-delay-before-dispatch": _integer(64),
    "redistribution-delay": _integer(64),
    "send-to-dla-on-no-route": _boolean,
    "slow-consumer-threshold": _integer(64, "m1_or_gt0"),
    "slow-consumer-threshold-measurement-unit": _enum((
        "MESSAGES_PER_SECOND", "MESSAGES_PER_MINUTE", "MESSAGES_PER_HOUR", "MESSAGES_PER_DAY")),
    "slow-consumer-policy": _enum(("KILL", "NOTIFY")),
    "slow-consumer-check-period": _integer(64, "gt0"),
    "auto-create-jms-queues": _boolean,
    "auto-delete-jms-queues": _boolean,
    "auto-create-jms-topics": _boolean,
    "auto-delete-jms-topics": _boolean,
    "auto-create-queues": _boolean,
    "auto-delete-queues": _boolean,
    "auto-delete-created-queues": _boolean,
    "auto-delete-queues-delay": _integer(64, "ge0"),
    "auto-delete-queues-message-count": _integer(64, "m1_or_ge0"),
    "auto-delete-queues-skip-usage-check": _boolean,
    "config-delete-queues": _enum(("OFF", "FORCE")),
    "auto-create-addresses": _boolean,
    "auto-delete-addresses": _boolean,
    "auto-delete-addresses-delay": _integer(64, "ge0"),
    "auto-delete-addresses-skip-usage-check": _boolean,
    "config-delete-addresses": _enum(("OFF", "FORCE")),
    "config-delete-diverts": _enum(("OFF", "FORCE")),
    "management-browse-page-size": _integer(32),
    "management-message-attribute-size-limit": _integer(32),
    "default-purge-on-no-consumers": _boolean,
    "default-max-consumers": _integer(32),
    "default-queue-routing-type": _routing_type,
    "default-address-routing-type": _routing_type,
    "default-consumer-window-size": _integer(32),
    "default-ring-size": _integer(64),
    "retroactive-message-count": _integer(64, "ge0"),
    "enable-metrics": _boolean,
    "enable-ingress-timestamp": _boolean,
    "id-cache-size": _integer(32, "ge0"),
    "initial-queue-buffer-size": _integer(32, "pow2"),
}

assert frozenset(_ADDRESS_SETTING_VALUES) == ARTEMIS_ADDRESS_SETTING_ELEMENTS
assert {_kebab(f) for f in AddressSettings.__dataclass_fields__} == ARTEMIS_ADDRESS_SETTING_ELEMENTS

_CLUSTER_CONNECTION_VALUES: dict[str, tuple[str, Converter]] = {
    "address": ("address", _string()),
    "connector-ref": ("connector_ref", _string(nonempty=True)),
    "check-period": ("check_period", _integer(64, "gt0")),
    "connection-ttl": ("connection_ttl", _integer(64, "gt0")),
    "min-large-message-size": ("min_large_message_size", _size(32, "gt0")),
    "call-timeout": ("call_timeout", _integer(64, "gt0")),
    "retry-interval": ("retry_interval", _integer(64, "gt0")),
    "retry-interval-multiplier": ("retry_interval_multiplier", _double("ge0")),
    "max-retry-interval": ("max_retry_interval", _integer(64, "gt0")),
    "initial-connect-attempts": ("initial_connect_attempts", _integer(32, "m1_or_ge0")),
    "reconnect-attempts": ("reconnect_attempts", _integer(32, "m1_or_ge0")),
    "use-duplicate-detection": ("use_duplicate_detection", _boolean),
    "message-load-balancing": ("message_load_balancing", _enum(MESSAGE_LOAD_BALANCING_TYPES)),
    "max-hops": ("max_hops", _integer(32, "ge0")),
    "confirmation-window-size": ("confirmation_window_size", _size(32, "gt0")),
    "producer-window-size": ("producer_window_size", _size(32, "m1_or_gt0")),
    "call-failover-timeout": ("call_failover_timeout", _integer(64, "m1_or_gt0")),
    "notification-interval": ("notification_interval", _integer(64, "gt0")),
    "notification-attempts": ("notification_attempts", _integer(32, "gt0")),
    "client-id": ("client_id", _string()),
    "topology-scanner-attempts": ("topology_scanner_attempts", _integer(32, "m1_or_ge0")),
}


# --------------------------------------------------------------------------------------------
# URLs

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^?/]*)/?"
                  r"(?:\?(?P<query>.*))?\Z", re.DOTALL)
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+(?:%[\w.]+)?)\]|(?P<host>[^:\[\]\s]*))"
                   r"(?::(?P<port>[^:]*))?\Z")


def parse_url(text: str) -> tuple[str, str, int | None, dict[str, str]]:
    """``tcp://host:port?k=v;k=v`` -> (scheme, host, port, params); ``ValueError`` if bad.

    Schemes ``tcp`` and ``vm`` are accepted. A missing host is ``localhost``, a missing port
    61616 (``vm://`` has no port). Parameters split on ``;`` and ``&`` and are URL-decoded as
    Artemis does.
    """
    url = text.strip()
    match = _URL.match(url)
    if not match or any(ch.isspace() for ch in url):
        raise ValueError(f"bad URL {text.strip()!r}: expected tcp://host:port?key=value;...")
    scheme = match.group("scheme").lower()
    if scheme not in ("tcp", "vm"):
        raise ValueError(f"bad URL {url!r}: unsupported scheme {scheme!r} (pybroker accepts "
                         "tcp:// and vm://; TLS is tcp:// with sslEnabled=true)")
    params: dict[str, str] = {}
    query = match.group("query")
    if query:
        for part in re.split(r"[&;]", query):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise ValueError(f"bad URL {url!r}: parameter {part!r} is not key=value")
            params[unquote_plus(key)] = unquote_plus(value)
    authority = match.group("authority")
    if scheme == "vm":
        if not authority.isdigit():
            raise ValueError(f"bad URL {url!r}: vm:// needs a numeric server id")
        return scheme, authority, None, params
    host_match = _HOST.match(authority)
    if not host_match:
        raise ValueError(f"bad URL {url!r}: bad host or port")
    host = host_match.group("ipv6") or host_match.group("host") or "localhost"
    port_text = host_match.group("port")
    if port_text is None:
        port = 61616
    else:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"bad URL {url!r}: bad port {port_text!r}")
        port = int(port_text)
    # host=/port= parameters override the authority, as in Artemis's TCP schema.
    if "host" in params:
        host = params["host"]
    if "port" in params:
        if not params["port"].isdigit() or not 0 <= int(params["port"]) <= 65535:
            raise ValueError(f"bad URL {url!r}: bad port parameter {params['port']!r}")
        port = int(params["port"])
    return scheme, host, port, params


def _url(ctx: _Context, element: etree._Element) -> tuple[str, str, str, int | None,
                                                           dict[str, str]]:
    text = text_of(element)
    if not text:
        raise ctx.error("missing URL", element)
    try:
        scheme, host, port, params = parse_url(text)
    except ValueError as error:
        raise ctx.error(str(error), element) from None
    return text, scheme, host, port, params


# --------------------------------------------------------------------------------------------
# Sections


class _Parser:
    """Walks one ``<core>`` element and collects Configuration fields."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.values: dict[str, Any] = {}
        self.journal: dict[str, Any] = {}
        self.wildcard: dict[str, Any] = {}
        self.acceptors: list[AcceptorConfig] = []
        self.connectors: dict[str, ConnectorConfig] = {}
        self.cluster_connections: list[tuple[ClusterConnectionConfig, etree._Element]] = []
        self.ha_policy = HAPolicy()
        self.ha_element: etree._Element | None = None
        self.addresses: list[AddressConfig] = []
        self.queues: list[QueueConfig] = []
        self.address_settings: list[tuple[str, AddressSettings]] = []
        self.security_settings: dict[str, SecuritySetting] = {}
        self.element_of: dict[str, etree._Element] = {}
        self.matches: list[tuple[str, etree._Element]] = []

    # ---- core

    def core(self, core: etree._Element) -> None:
        _check_attributes(self.ctx, core, frozenset())
        for name, child in _children(self.ctx, core, ARTEMIS_CORE_ELEMENTS):
            self.element_of[name] = child
            if name in _CORE_VALUES:
                target, converter = _CORE_VALUES[name]
                value = _convert(converter, child, self.ctx)
                group, _, field_name = target.rpartition(".")
                {"": self.values, "journal": self.journal,
                 "wildcard": self.wildcard}[group][field_name] = value
                self._after_value(name, value, child)
            elif name in _CORE_IGNORED:
                self.ctx.warn(f"ignored: {_CORE_IGNORED[name]}", child)
            else:
                getattr(self, "section_" + name.replace("-", "_"))(child)

    def _after_value(self, name: str, value: Any, element: etree._Element) -> None:
        if name == "wild-card-routing-enabled":
            self.ctx.warn("deprecated: use <wildcard-addresses><routing-enabled>", element)
        elif name == "mask-password" and value:
            self.ctx.warn("pybroker cannot decode masked passwords; "
                          "<cluster-password> is used as written", element)
        elif name == "cluster-password" and str(value).startswith("ENC("):
            self.ctx.warn("pybroker cannot decode a masked ENC(...) cluster password; "
                          "it is used as written", element)
        elif name == "literal-match-markers" and value and len(value) != 2:
            raise self.ctx.error(
                f"bad value {value!r}: must be exactly two characters, e.g. ()", element)

    # ---- acceptors and connectors

    def section_acceptors(self, element: etree._Element) -> None:
        names: set[str] = set()
        for _, child in _children(self.ctx, element, frozenset({"acceptor"}),
                                  repeatable=frozenset({"acceptor"})):
            _check_attributes(self.ctx, child, frozenset({"name"}))
            url, scheme, host, port, params = _url(self.ctx, child)
            name = (child.get("name") or "").strip() or url
            if name in names:
                raise self.ctx.error(f"duplicate acceptor name {name!r}", child)
            names.add(name)
            protocols = None
            if "protocols" in params:
                protocols = frozenset(p.strip().upper() for p in params["protocols"].split(",")
                                      if p.strip())
                unknown = sorted(protocols - KNOWN_PROTOCOLS)
                if unknown:
                    self.ctx.warn(f"acceptor {name!r}: unknown protocol(s) "
                                  f"{', '.join(unknown)}", child)
            self.acceptors.append(AcceptorConfig(
                name=name, url=url, scheme=scheme, host=host, port=port, params=params,
                protocols=protocols, file=self.ctx.file, line=child.sourceline))

    def section_connectors(self, element: etree._Element) -> None:
        for _, child in _children(self.ctx, element, frozenset({"connector"}),
                                  repeatable=frozenset({"connector"})):
            _check_attributes(self.ctx, child, frozenset({"name"}))
            name = _required_attribute(self.ctx, child, "name")
            url, scheme, host, port, params = _url(self.ctx, child)
            if name in self.connectors:
                # Artemis logs and keeps the first one.
                self.ctx.warn(f"connector {name!r} is defined twice; the first one is used",
                              child)
                continue
            self.connectors[name] = ConnectorConfig(
                name=name, url=url, scheme=scheme, host=host, port=port, params=params,
                file=self.ctx.file, line=child.sourceline)

    # ---- cluster connections

    def section_cluster_connections(self, element: etree._Element) -> None:
        known = frozenset({"cluster-connection", "cluster-connection-uri"})
        names: set[str] = set()
        for name, child in _children(self.ctx, element, known, repeatable=known):
            if name == "cluster-connection-uri":
                self.ctx.warn("ignored: pybroker does not implement URI cluster connections; "
                              "use <cluster-connection>", child)
                continue
            connection = self._cluster_connection(child)
            if connection.name in names:
                raise self.ctx.error(f"duplicate cluster-connection name {connection.name!r}",
                                     child)
            names.add(connection.name)
            self.cluster_connections.append((connection, child))

    def _cluster_connection(self, element: etree._Element) -> ClusterConnectionConfig:
        ctx = self.ctx
        _check_attributes(ctx, element, frozenset({"name", "uri"}))
        values: dict[str, Any] = {"name": _required_attribute(ctx, element, "name")}
        if element.get("uri"):
            ctx.warn("attribute 'uri' ignored: pybroker does not implement URI cluster "
                     "connections", element)
        forward_when_no_consumers = None
        for name, child in _children(ctx, element, ARTEMIS_CLUSTER_CONNECTION_ELEMENTS):
            if name in _CLUSTER_CONNECTION_VALUES:
                target, converter = _CLUSTER_CONNECTION_VALUES[name]
                values[target] = _convert(converter, child, ctx)
            elif name == "forward-when-no-consumers":
                forward_when_no_consumers = _convert(_boolean, child, ctx)
                ctx.warn("deprecated: use <message-load-balancing> (true = STRICT, "
                         "false = ON_DEMAND)", child)
            elif name == "scale-down-connector":
                ctx.warn("ignored: pybroker does not implement scale-down", child)
            elif name == "static-connectors":
                _check_attributes(ctx, child, frozenset({"allow-direct-connections-only"}))
                if child.get("allow-direct-connections-only") is not None:
                    values["allow_direct_connections_only"] = _attribute(
                        _boolean, child, "allow-direct-connections-only", ctx)
                refs = []
                for _, ref in _children(ctx, child, frozenset({"connector-ref"}),
                                        repeatable=frozenset({"connector-ref"})):
                    refs.append(_convert(_string(nonempty=True), ref, ctx))
                    self.element_of[f"static:{values['name']}:{refs[-1]}"] = ref
                values["static_connectors"] = tuple(refs)
            elif name == "discovery-group-ref":
                _check_attributes(ctx, child, frozenset({"discovery-group-name"}))
                values["discovery_group_ref"] = _required_attribute(
                    ctx, child, "discovery-group-name")
                ctx.warn("pybroker has no discovery groups: this cluster connection has no "
                         "initial contacts; use <static-connectors>", child)
        if "static_connectors" in values and "discovery_group_ref" in values:
            raise ctx.error("use either <static-connectors> or <discovery-group-ref>, not both",
                            element)
        if "connector_ref" not in values:
            raise ctx.error("missing required element <connector-ref> (the connector this "
                            "node advertises)", element)
        if forward_when_no_consumers is not None:
            # Artemis lets the deprecated element win over message-load-balancing.
            values["message_load_balancing"] = ("STRICT" if forward_when_no_consumers
                                                else "ON_DEMAND")
        return ClusterConnectionConfig(**values)

    # ---- HA policy

    def section_ha_policy(self, element: etree._Element) -> None:
        ctx = self.ctx
        self.ha_element = element
        children = _children(ctx, element, _HA_POLICY_CHILDREN)
        if not children:
            return  # an empty <ha-policy/> is primary-only, as in Artemis
        if len(children) > 1:
            raise ctx.error("<ha-policy> must hold exactly one policy, found "
                            + ", ".join(f"<{name}>" for name, _ in children), element)
        name, policy = children[0]
        if name == "replication":
            raise ctx.error("replication HA is not supported: pybroker supports shared-store "
                            "HA only (<ha-policy><shared-store>...)", policy)
        if name in ("live-only", "primary-only"):
            if name == "live-only":
                ctx.warn("deprecated: <live-only> is now <primary-only>", policy)
            scale_down = None
            for _, child in _children(ctx, policy, frozenset({"scale-down"})):
                scale_down = self._scale_down(child)
            self.ha_policy = HAPolicy(kind="primary-only", scale_down=scale_down)
            return
        # shared-store
        roles = _children(ctx, policy, _SHARED_STORE_CHILDREN)
        if not roles:
            raise ctx.error("<shared-store> needs a <primary> or a <backup> element", policy)
        if len(roles) > 1:
            raise ctx.error("<shared-store> must hold exactly one of <primary> or <backup>, "
                            "found " + ", ".join(f"<{n}>" for n, _ in roles), policy)
        role, role_element = roles[0]
        if role == "colocated":
            raise ctx.error("colocated HA is not supported: pybroker supports one broker per "
                            "process with shared-store <primary> or <backup>", role_element)
        if role in ("master", "slave"):
            modern = "primary" if role == "master" else "backup"
            ctx.warn(f"deprecated: <{role}> is now <{modern}> (Artemis 2.32+); it works the "
                     "same", role_element)
        if role in ("master", "primary"):
            values: dict[str, Any] = {"kind": "shared-store-primary"}
            for child_name, child in _children(ctx, role_element,
                                               _SHARED_STORE_PRIMARY_CHILDREN):
                if child_name == "failback-delay":
                    ctx.warn("deprecated and ignored", child)
                else:
                    values[child_name.replace("-", "_")] = _convert(_boolean, child, ctx)
        else:
            values = {"kind": "shared-store-backup"}
            for child_name, child in _children(ctx, role_element,
                                               _SHARED_STORE_BACKUP_CHILDREN):
                if child_name == "failback-delay":
                    ctx.warn("deprecated and ignored", child)
                elif child_name == "scale-down":
                    values["scale_down"] = self._scale_down(child)
                else:
                    values[child_name.replace("-", "_")] = _convert(_boolean, child, ctx)
        self.ha_policy = HAPolicy(**values)

    def _scale_down(self, element: etree._Element) -> ScaleDownConfig:
        ctx = self.ctx
        values: dict[str, Any] = {}
        for name, child in _children(ctx, element, _SCALE_DOWN_CHILDREN):
            if name == "enabled":
                values["enabled"] = _convert(_boolean, child, ctx)
            elif name == "group-name":
                values["group_name"] = _convert(_string(), child, ctx)
            elif name == "commit-interval":
                values["commit_interval"] = _convert(_integer(32, "m1_or_gt0"), child, ctx)
            elif name == "discovery-group-ref":
                _check_attributes(ctx, child, frozenset({"discovery-group-name"}))
                values["discovery_group_ref"] = _required_attribute(
                    ctx, child, "discovery-group-name")
            else:  # connectors
                refs = []
                for _, ref in _children(ctx, child, frozenset({"connector-ref"}),
                                        repeatable=frozenset({"connector-ref"})):
                    refs.append(_convert(_string(nonempty=True), ref, ctx))
                    self.element_of[f"scale-down:{refs[-1]}"] = ref
                values["connectors"] = tuple(refs)
        ctx.warn("parsed but not implemented: pybroker does not scale down", element)
        return ScaleDownConfig(**values)

    # ---- address settings

    def section_address_settings(self, element: etree._Element) -> None:
        ctx = self.ctx
        seen: set[str] = set()
        for _, child in _children(ctx, element, frozenset({"address-setting"}),
                                  repeatable=frozenset({"address-setting"})):
            _check_attributes(ctx, child, frozenset({"match"}))
            match = _required_attribute(ctx, child, "match")
            self.matches.append((match, child))
            settings = self._address_setting(child)
            if match in seen:
                # Artemis logs a duplicate match and keeps the first.
                ctx.warn(f"duplicate address-setting match {match!r}; the first one is used",
                         child)
                continue
            seen.add(match)
            self.address_settings.append((match, settings))

    def _check_matches(self, markers: str | None) -> None:
        # Artemis refuses a match with any-words anywhere but at the end (Match.verify).
        any_words = self.wildcard.get("any_words", "#")
        for match, element in self.matches:
            if markers and len(match) >= 2 and match[0] == markers[0] and \
                    match[-1] == markers[1]:
                continue  # a literal match: wildcards are plain characters
            index = match.find(any_words)
            if index != -1 and index != len(match) - 1:
                raise self.ctx.error(
                    f"bad match {match!r}: {any_words!r} may only appear at the end of a "
                    "match", element)

    def _address_setting(self, element: etree._Element) -> AddressSettings:
        ctx = self.ctx
        values: dict[str, Any] = {}
        for name, child in _children(ctx, element, ARTEMIS_ADDRESS_SETTING_ELEMENTS):
            value = _convert(_ADDRESS_SETTING_VALUES[name], child, ctx)
            values[name.replace("-", "_")] = value
            if name == "page-max-cache-size":
                ctx.warn("obsolete and ignored (Artemis no longer caches pages)", child)
            elif name == "last-value-queue":
                ctx.warn("deprecated: use <default-last-value-queue>", child)
                values.setdefault("default_last_value_queue", value)
            elif name in ("auto-create-jms-queues", "auto-delete-jms-queues",
                          "auto-create-jms-topics", "auto-delete-jms-topics"):
                ctx.warn(f"deprecated: use <{name.replace('jms-', '').replace('topics', 'addresses')}>",
                         child)
        return AddressSettings(**values)

    # ---- security settings

    def section_security_settings(self, element: etree._Element) -> None:
        ctx = self.ctx
        known = frozenset({"security-setting", "security-setting-plugin", "role-mapping"})
        children = _children(ctx, element, known, repeatable=known)
        # role-mapping from="external" to="a,b": permissions granted to a or b also go to
        # "external". Artemis reads every mapping before the settings.
        mapped: dict[str, set[str]] = {}
        for name, child in children:
            if name == "role-mapping":
                _check_attributes(ctx, child, frozenset({"from", "to"}))
                external = _required_attribute(ctx, child, "from")
                for internal in _required_attribute(ctx, child, "to").split(","):
                    if internal.strip():
                        mapped.setdefault(internal.strip(), set()).add(external)
            elif name == "security-setting-plugin":
                ctx.warn("ignored: pybroker loads no Java security-setting plugins", child)
        for name, child in children:
            if name != "security-setting":
                continue
            _check_attributes(ctx, child, frozenset({"match"}))
            match = _required_attribute(ctx, child, "match")
            self.matches.append((match, child))
            permissions: dict[str, set[str]] = {}
            for _, permission in _children(ctx, child, frozenset({"permission"}),
                                           repeatable=frozenset({"permission"})):
                _check_attributes(ctx, permission, frozenset({"type", "roles"}))
                kind = _required_attribute(ctx, permission, "type")
                kind = PERMISSION_ALIASES.get(kind, kind)
                if kind not in PERMISSIONS:
                    raise ctx.error(f"bad permission type {kind!r}: expected one of "
                                    f"{', '.join(PERMISSIONS)}"
                                    + _suggest_value(kind, PERMISSIONS), permission)
                roles = permission.get("roles")
                if roles is None:
                    raise ctx.error("missing required attribute 'roles'", permission)
                granted = permissions.setdefault(kind, set())
                for role in roles.split(","):
                    role = role.strip()
                    if role:
                        granted.add(role)
                        granted.update(mapped.get(role, ()))
            if match in self.security_settings:
                # Artemis keeps the last one.
                ctx.warn(f"duplicate security-setting match {match!r}; the last one is used",
                         child)
                del self.security_settings[match]
            self.security_settings[match] = SecuritySetting(
                {kind: frozenset(roles) for kind, roles in permissions.items()})

    # ---- addresses and queues

    def section_addresses(self, element: etree._Element) -> None:
        ctx = self.ctx
        names: set[str] = set()
        for _, child in _children(ctx, element, frozenset({"address"}),
                                  repeatable=frozenset({"address"})):
            _check_attributes(ctx, child, frozenset({"name"}))
            name = _required_attribute(ctx, child, "name")
            if name in names:
                raise ctx.error(f"duplicate address {name!r}", child)
            names.add(name)
            routing_types: set[RoutingType] = set()
            queues: list[QueueConfig] = []
            kinds = frozenset({"anycast", "multicast"})
            for kind, routing in _children(ctx, child, kinds, repeatable=kinds):
                routing_type = RoutingType[kind.upper()]
                routing_types.add(routing_type)
                for _, queue in _children(ctx, routing, frozenset({"queue"}),
                                          repeatable=frozenset({"queue"})):
                    queues.append(self._queue(queue, name, routing_type, legacy=False))
            if not routing_types:
                raise ctx.error(f"address {name!r} needs <anycast> or <multicast>", child)
            seen_queues: set[str] = set()
            for queue in queues:
                if queue.name in seen_queues:
                    raise ctx.error(f"duplicate queue {queue.name!r} in address {name!r}",
                                    child)
                seen_queues.add(queue.name)
            self.addresses.append(AddressConfig(name=name,
                                                routing_types=frozenset(routing_types),
                                                queues=tuple(queues)))

    def section_queues(self, element: etree._Element) -> None:
        self.ctx.warn("deprecated: declare queues under <addresses>", element)
        for _, child in _children(self.ctx, element, frozenset({"queue"}),
                                  repeatable=frozenset({"queue"})):
            self.queues.append(self._queue(child, None, RoutingType.MULTICAST, legacy=True))

    def _queue(self, element: etree._Element, address: str | None,
               routing_type: RoutingType, *, legacy: bool) -> QueueConfig:
        ctx = self.ctx
        attributes = _QUEUE_ATTRIBUTES - ({"ring-size", "enabled"} if legacy else set())
        _check_attributes(ctx, element, attributes)
        values: dict[str, Any] = {"name": _required_attribute(ctx, element, "name"),
                                  "routing_type": routing_type}
        converters: dict[str, Converter] = {
            "max-consumers": _integer(32, "m1_or_ge0"),
            "purge-on-no-consumers": _boolean,
            "exclusive": _boolean,
            "group-rebalance": _boolean,
            "group-rebalance-pause-dispatch": _boolean,
            "group-buckets": _integer(32),
            "group-first-key": _string(),
            "last-value": _boolean,
            "last-value-key": _string(),
            "non-destructive": _boolean,
            "consumers-before-dispatch": _integer(32),
            "delay-before-dispatch": _integer(64),
            "ring-size": _integer(64),
            "enabled": _boolean,
        }
        for key, converter in converters.items():
            if element.get(key) is not None:
                values[key.replace("-", "_")] = _attribute(converter, element, key, ctx)
        known = frozenset({"filter", "durable", "user"} | ({"address"} if legacy else set()))
        for name, child in _children(ctx, element, known):
            if name == "filter":
                _check_attributes(ctx, child, frozenset({"string"}))
                values["filter"] = _required_attribute(ctx, child, "string")
            elif name == "durable":
                values["durable"] = _convert(_boolean, child, ctx)
            elif name == "user":
                values["user"] = _convert(_string(), child, ctx)
            else:
                address = _convert(_string(nonempty=True), child, ctx)
        values["address"] = address if address is not None else values["name"]
        set_fields = frozenset(values) - {"name", "routing_type", "address"}
        return QueueConfig(**values, set_fields=set_fields)

    # ---- wildcards and store

    def section_wildcard_addresses(self, element: etree._Element) -> None:
        ctx = self.ctx
        for name, child in _children(ctx, element, _WILDCARD_CHILDREN):
            if name in ("enabled", "routing-enabled"):
                self.wildcard["routing_enabled"] = _convert(_boolean, child, ctx)
                if name == "enabled":
                    ctx.warn("deprecated: use <routing-enabled>", child)
            else:
                text = text_of(child)
                if len(text) != 1:
                    raise ctx.error(f"bad value {text!r}: must be a single character", child)
                self.wildcard[name.replace("-", "_")] = text
        characters = [self.wildcard.get(k, d) for k, d in
                      (("delimiter", "."), ("any_words", "#"), ("single_word", "*"))]
        if len(set(characters)) != 3:
            raise ctx.error("delimiter, any-words and single-word must be three different "
                            "characters", element)

    def section_store(self, element: etree._Element) -> None:
        known = frozenset({"file-store", "database-store"})
        for name, child in _children(self.ctx, element, known):
            if name == "database-store":
                raise self.ctx.error("the JDBC store is not supported: pybroker keeps its "
                                     "journal in files (<file-store/>)", child)
            for extra in child_elements(child):
                raise _unknown(self.ctx, extra, "file-store", frozenset())

    # ---- assembly

    def configuration(self, *, instance_dir: Path, config_file: Path | None) -> Configuration:
        ctx = self.ctx
        for connection, element in self.cluster_connections:
            if connection.connector_ref not in self.connectors:
                ref_element = element.find(f"{{{CORE_NAMESPACE}}}connector-ref")
                if ref_element is None:
                    ref_element = element.find("connector-ref")
                raise ctx.error(
                    f"cluster-connection {connection.name!r}: connector-ref "
                    f"{connection.connector_ref!r} names no connector in <connectors>"
                    + _suggest_value(connection.connector_ref, frozenset(self.connectors)),
                    ref_element if ref_element is not None else element, name="connector-ref")
            for ref in connection.static_connectors:
                if ref not in self.connectors:
                    raise ctx.error(
                        f"cluster-connection {connection.name!r}: static connector {ref!r} "
                        "names no connector in <connectors>"
                        + _suggest_value(ref, frozenset(self.connectors)),
                        self.element_of.get(f"static:{connection.name}:{ref}", element),
                        name="connector-ref")
        scale_down = self.ha_policy.scale_down
        if scale_down is not None:
            for ref in scale_down.connectors:
                if ref not in self.connectors:
                    raise ctx.error(
                        f"scale-down connector {ref!r} names no connector in <connectors>",
                        self.element_of.get(f"scale-down:{ref}", self.ha_element),
                        name="connector-ref")

        self._check_matches(self.values.get("literal_match_markers") or None)
        if self.ha_policy.is_shared_store and self.values.get("persistence_enabled") is False:
            ctx.warn("shared-store HA with persistence disabled: there is no journal to share "
                     "and the lock is kept in memory, so this broker gets no failover",
                     self.ha_element if self.ha_element is not None
                     else self.element_of.get("persistence-enabled"))
        journal = JournalConfig(**self.journal)
        values = dict(self.values)
        if values.get("global_max_size", -1) == -1:
            values["global_max_size"] = DEFAULT_GLOBAL_MAX_SIZE
        if "page_sync_timeout_ns" not in values:
            # Artemis defaults it to the NIO buffer timeout (the configured one for NIO/MAPPED).
            values["page_sync_timeout_ns"] = (
                journal.buffer_timeout_ns if journal.type != "ASYNCIO"
                else DEFAULT_BUFFER_TIMEOUT_NS["NIO"])
        timeout = values.get("critical_analyzer_timeout", 120000)
        if values.get("critical_analyzer_check_period", 0) <= 0:
            values["critical_analyzer_check_period"] = timeout // 2
        if values.get("literal_match_markers") == "":
            values["literal_match_markers"] = None
        return Configuration(
            instance_dir=instance_dir,
            config_file=config_file,
            journal=journal,
            acceptors=tuple(self.acceptors),
            connectors=dict(self.connectors),
            cluster_connections=tuple(c for c, _ in self.cluster_connections),
            ha_policy=self.ha_policy,
            addresses=tuple(self.addresses),
            queues=tuple(self.queues),
            address_settings=tuple(self.address_settings),
            security_settings=tuple(self.security_settings.items()),
            wildcard_addresses=WildcardConfig(**self.wildcard),
            warnings=tuple(ctx.warnings),
            **values,
        )


def _find_core(root: etree._Element, ctx: _Context) -> etree._Element:
    name = local_name(root)
    ns = namespace(root)
    if name == "core" and ns in (None, CORE_NAMESPACE):
        return root
    if name != "configuration" or ns not in (None, ROOT_NAMESPACE):
        raise ctx.error(
            f"the root element must be <configuration xmlns=\"{ROOT_NAMESPACE}\"> (or <core>), "
            f"not <{name}>" + (f" in namespace {ns!r}" if ns else ""), root)
    cores = []
    for child in child_elements(root):
        child_ns = namespace(child)
        if local_name(child) == "core" and child_ns in (None, CORE_NAMESPACE, ROOT_NAMESPACE):
            cores.append(child)
        elif child_ns == XINCLUDE_NS:
            continue  # reported with every other XInclude
        else:
            ctx.warn("ignored: only <core> is read from <configuration>", child)
    if not cores:
        raise ctx.error("no <core xmlns=\"urn:activemq:core\"> element in <configuration>", root)
    if len(cores) > 1:
        raise ctx.error("<configuration> holds more than one <core>", cores[1])
    return cores[0]


def parse_config(
    data: bytes | str,
    *,
    file: str = "<string>",
    instance_dir: Path | str,
    properties: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Configuration:
    """Parse broker.xml text. Relative directories resolve against ``instance_dir``.

    ``${name}`` and ``${name:default}`` take their values from ``properties``, then from the
    environment. Raises :class:`ConfigError` naming file, line and element.
    """
    ctx = _Context(file)
    root = parse_document(data, file=file)
    substitute_properties(root, properties, file=file)
    for include in find_xincludes(root):
        ctx.warn(f"XInclude of {include.get('href')!r} is not processed by pybroker; inline "
                 "the included elements", include)
    core = _find_core(root, ctx)
    parser = _Parser(ctx)
    parser.core(core)
    return parser.configuration(instance_dir=Path(instance_dir), config_file=config_file)


def instance_dir_for(config_file: Path) -> Path:
    """The instance directory of a broker.xml: the parent of ``etc/``, else its own folder."""
    folder = Path(config_file).absolute().parent
    return folder.parent if folder.name == "etc" else folder


def load_config(
    path: Path | str,
    *,
    instance_dir: Path | str | None = None,
    properties: Mapping[str, str] | None = None,
) -> Configuration:
    """Read and parse the broker.xml at ``path``.

    Without ``instance_dir``, the instance is the parent of the file's folder when that folder
    is named ``etc`` (``<instance>/etc/broker.xml``), otherwise the file's folder.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read configuration: {error.strerror or error}",
                          file=str(path)) from None
    instance = Path(instance_dir) if instance_dir is not None else instance_dir_for(path)
    return parse_config(data, file=str(path), instance_dir=instance, properties=properties,
                        config_file=path.absolute())


def default_config(
    *,
    instance_dir: Path | str | None = None,
    port: int | None = None,
    persistence_enabled: bool | None = None,
) -> Configuration:
    """The embedded default broker: one acceptor ``tcp://localhost:<port>`` for every protocol,
    data under ``<instance_dir>/data``, security off, and the address settings and DLQ /
    ExpiryQueue addresses of ``artemis create``.

    ``instance_dir`` defaults to the current directory, ``port`` to 61616 and
    ``persistence_enabled`` to True.
    """
    data = resources.files("pybroker.config").joinpath("default-broker.xml").read_bytes()
    properties = {
        "pybroker.default.port": str(61616 if port is None else port),
        "pybroker.default.persistence-enabled":
            "true" if persistence_enabled is None or persistence_enabled else "false",
    }
    instance = Path(instance_dir) if instance_dir is not None else Path.cwd()
    return parse_config(data, file="default-broker.xml", instance_dir=instance,
                        properties=properties)


__all__ = [
    "ARTEMIS_ADDRESS_SETTING_ELEMENTS",
    "ARTEMIS_CLUSTER_CONNECTION_ELEMENTS",
    "ARTEMIS_CORE_ELEMENTS",
    "default_config",
    "instance_dir_for",
    "load_config",
    "parse_config",
    "parse_size",
    "parse_url",
]
