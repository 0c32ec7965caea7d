"""The broker configuration as frozen dataclasses.

Everything here is plain data: :mod:`pybroker.config.parse` builds it from a ``broker.xml`` and
the broker reads it. Every field carries Artemis's default unless its comment says otherwise;
units are in the field name or comment (``_ms``, ``_ns``, ``_s``, bytes).

Three conventions:

* Directories are absolute :class:`~pathlib.Path` objects; the parser resolves relative ones
  against the instance directory.
* :class:`AddressSettings` fields default to ``None`` = "not set by this match"; the broker
  merges matches by precedence (:mod:`pybroker.broker.settings`) and then fills the rest from
  :data:`ADDRESS_SETTING_DEFAULTS`.
* Enumerated values are the upper-case strings Artemis uses (``"PAGE"``, ``"ON_DEMAND"``), except
  routing types, which are :class:`RoutingType`.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pybroker.errors import ConfigError

MIB = 1024 * 1024

#: pybroker's ``global-max-size`` when broker.xml leaves it at -1. Artemis uses half of the JVM
#: heap; a Python process has no heap limit, so pybroker uses a fixed 512 MiB.
DEFAULT_GLOBAL_MAX_SIZE = 512 * MIB

#: Artemis's ``$.artemis.internal.`` prefix for internal queues and addresses.
DEFAULT_INTERNAL_NAMING_PREFIX = "$.artemis.internal."

#: Journal buffer timeouts (ns) by journal type when ``journal-buffer-timeout`` is not set.
DEFAULT_BUFFER_TIMEOUT_NS = {"ASYNCIO": 500_000, "NIO": 3_333_333, "MAPPED": 3_333_333}
#: ``journal-max-io`` by journal type when not set.
DEFAULT_MAX_IO = {"ASYNCIO": 4096, "NIO": 1, "MAPPED": 1}

JOURNAL_TYPES = ("ASYNCIO", "NIO", "MAPPED")
MESSAGE_LOAD_BALANCING_TYPES = ("OFF", "STRICT", "ON_DEMAND", "OFF_WITH_REDISTRIBUTION")
CRITICAL_ANALYZER_POLICIES = ("LOG", "HALT", "SHUTDOWN")

#: Protocol names an acceptor's ``protocols=`` parameter may list.
KNOWN_PROTOCOLS = frozenset({"CORE", "AMQP", "STOMP", "HORNETQ", "MQTT", "OPENWIRE"})

#: Permission types of ``<security-setting><permission type=...>``.
PERMISSIONS = (
    "send",
    "consume",
    "browse",
    "createAddress",
    "deleteAddress",
    "createDurableQueue",
    "deleteDurableQueue",
    "createNonDurableQueue",
    "deleteNonDurableQueue",
    "manage",
    "view",
    "edit",
)
#: Legacy permission names and what they mean now.
PERMISSION_ALIASES = {
    "createTempQueue": "createNonDurableQueue",
    "deleteTempQueue": "deleteNonDurableQueue",
}


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


class RoutingType(enum.Enum):
    """How an address hands a message to its queues."""

    ANYCAST = "ANYCAST"  #: each message goes to one queue
    MULTICAST = "MULTICAST"  #: each queue gets a copy

    @classmethod
    def parse(cls, text: str) -> RoutingType:
        """``"anycast"``/``"ANYCAST"`` -> :attr:`ANYCAST`; anything else raises ``ValueError``."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"bad routing type {text!r}: expected ANYCAST or MULTICAST"
            ) from None


# --------------------------------------------------------------------------------------------
# Journal


@dataclass(frozen=True)
class JournalConfig:
    """``journal-*`` elements of ``<core>``."""

    type: Literal["ASYNCIO", "NIO", "MAPPED"] = "ASYNCIO"
    file_size: int = 10_485_760  #: bytes per journal file
    min_files: int = 2  #: files pre-created at start
    pool_files: int = -1  #: files kept for reuse; -1 = never delete
    #: ns a write waits for more writes before flushing; None -> by type (ASYNCIO 500000,
    #: NIO/MAPPED 3333333); 0 = write directly.
    buffer_timeout_ns: int | None = None
    buffer_size: int = 490 * 1024  #: bytes of the write buffer
    sync_transactional: bool = True  #: sync on commit/prepare/rollback
    sync_non_transactional: bool = True  #: sync on non-transactional durable sends and acks
    datasync: bool = True  #: False = never fdatasync (process-crash durability only)
    compact_min_files: int = 10  #: 0 disables compaction
    compact_percentage: int = 30  #: compact when live data < this % of the files
    #: concurrent writes; None -> by type (ASYNCIO 4096, NIO/MAPPED 1)
    max_io: int | None = None
    #: None = the file system's block size (``artemis create`` writes 4096)
    device_block_size: int | None = None
    lock_acquisition_timeout_ms: int = -1  #: bound on every shared-store lock wait; -1 = forever
    file_open_timeout_s: int = 5
    max_attic_files: int = 10
    log_write_rate: bool = False
    #: whether journal-buffer-timeout was given (not Artemis's: see writer_buffer_timeout_ns)
    buffer_timeout_set: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "buffer_timeout_set", self.buffer_timeout_ns is not None)
        if self.buffer_timeout_ns is None:
            object.__setattr__(self, "buffer_timeout_ns", DEFAULT_BUFFER_TIMEOUT_NS[self.type])
        if self.max_io is None:
            object.__setattr__(self, "max_io", DEFAULT_MAX_IO[self.type])

    @property
    def writer_buffer_timeout_ns(self) -> int:
        """The timeout pybroker's journal writer uses.

        pybroker has no libaio journal: its one writer does positional writes and fdatasync,
        which is Artemis's NIO journal. Artemis without libaio switches an ASYNCIO journal to
        NIO (AMQ221045), and that journal takes the NIO timeout (3333333 ns; the configured
        value went to the AIO setting). pybroker does the same when journal-buffer-timeout is
        not given, and honours the value when it is (``pybroker create`` writes one).
        """
        if self.type == "ASYNCIO" and not self.buffer_timeout_set:
            return DEFAULT_BUFFER_TIMEOUT_NS["NIO"]
        assert self.buffer_timeout_ns is not None
        return self.buffer_timeout_ns


# --------------------------------------------------------------------------------------------
# Acceptors and connectors


def _param_int(owner: str, params: Mapping[str, str], key: str, default: int,
               file: str | None, line: int | None) -> int:
    text = params.get(key)
    if text is None:
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(
            f"{owner}: parameter {key}={text!r} is not an integer",
            file=file, line=line, element="acceptor",
        ) from None


def _param_bool(owner: str, params: Mapping[str, str], key: str, default: bool,
                file: str | None, line: int | None) -> bool:
    text = params.get(key)
    if text is None:
        return default
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ConfigError(
        f"{owner}: parameter {key}={text!r} is not true or false",
        file=file, line=line, element="acceptor",
    )


@dataclass(frozen=True)
class AcceptorConfig:
    """One ``<acceptor name="...">tcp://host:port?k=v;k=v</acceptor>``.

    ``params`` holds the URL query (split on ``;`` and ``&``, URL-decoded) as strings; read
    them with :meth:`param_int` / :meth:`param_bool`, which raise :class:`ConfigError` naming the
    acceptor and its line. ``protocols`` is the ``protocols=`` list upper-cased, or ``None`` for
    "every protocol, detected from the first bytes". ``port`` is ``None`` only for ``vm://``.
    """

    name: str
    url: str
    scheme: str = "tcp"
    host: str = "localhost"
    port: int | None = 61616
    params: Mapping[str, str] = field(default_factory=dict)
    protocols: frozenset[str] | None = None
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen_mapping(self.params))

    def param(self, key: str, default: str | None = None) -> str | None:
        """The raw value of URL parameter ``key``."""
        return self.params.get(key, default)

    def param_int(self, key: str, default: int) -> int:
        """URL parameter ``key`` as an int (``default`` when absent)."""
        return _param_int(f"acceptor {self.name!r}", self.params, key, default, self.file,
                          self.line)

    def param_bool(self, key: str, default: bool) -> bool:
        """URL parameter ``key`` as a bool (``true``/``false``, any case)."""
        return _param_bool(f"acceptor {self.name!r}", self.params, key, default, self.file,
                           self.line)

    def accepts(self, protocol: str) -> bool:
        """Whether this acceptor serves ``protocol`` (``"AMQP"``, ``"MQTT"``, ...)."""
        return self.protocols is None or protocol.upper() in self.protocols


@dataclass(frozen=True)
class ConnectorConfig:
    """One ``<connector name="...">tcp://host:port?...</connector>``: how others reach a node."""

    name: str
    url: str
    host: str
    port: int | None
    params: Mapping[str, str] = field(default_factory=dict)
    scheme: str = "tcp"
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen_mapping(self.params))

    def param_int(self, key: str, default: int) -> int:
        """URL parameter ``key`` as an int."""
        return _param_int(f"connector {self.name!r}", self.params, key, default, self.file,
                          self.line)

    def param_bool(self, key: str, default: bool) -> bool:
        """URL parameter ``key`` as a bool."""
        return _param_bool(f"connector {self.name!r}", self.params, key, default, self.file,
                           self.line)


# --------------------------------------------------------------------------------------------
# Cluster connections and HA


@dataclass(frozen=True)
class ClusterConnectionConfig:
    """One ``<cluster-connection name="...">``. Times in ms, sizes in bytes."""

    name: str
    connector_ref: str  #: the connector this node advertises (mandatory)
    address: str = ""  #: "" = all addresses; prefix match, comma list, ``!`` excludes
    static_connectors: tuple[str, ...] = ()
    allow_direct_connections_only: bool = False
    discovery_group_ref: str | None = None
    message_load_balancing: str = "ON_DEMAND"  #: OFF, STRICT, ON_DEMAND, OFF_WITH_REDISTRIBUTION
    max_hops: int = 1
    retry_interval: int = 500
    retry_interval_multiplier: float = 1.0
    max_retry_interval: int = 2000
    initial_connect_attempts: int = -1  #: -1 = forever
    reconnect_attempts: int = -1  #: -1 = forever
    use_duplicate_detection: bool = True
    check_period: int = 30000
    connection_ttl: int = 60000
    min_large_message_size: int = 102400
    call_timeout: int = 30000
    call_failover_timeout: int = -1
    confirmation_window_size: int = 10_485_760
    producer_window_size: int = 1_048_576
    notification_interval: int = 1000
    notification_attempts: int = 2
    topology_scanner_attempts: int = 30  #: 0 = off, -1 = until done
    client_id: str | None = None


@dataclass(frozen=True)
class ScaleDownConfig:
    """``<scale-down>``: parsed and kept, but pybroker does not scale down."""

    enabled: bool = True
    group_name: str | None = None
    discovery_group_ref: str | None = None
    connectors: tuple[str, ...] = ()
    commit_interval: int = -1  #: -1 = one transaction per queue


HAKind = Literal["primary-only", "shared-store-primary", "shared-store-backup"]


@dataclass(frozen=True)
class HAPolicy:
    """``<ha-policy>``; no element means ``primary-only`` (no HA).

    ``failover_on_shutdown`` and ``wait_for_activation`` matter for a primary,
    ``allow_failback``, ``restart_backup`` and ``failover_on_shutdown`` for a backup.
    ``restart_backup`` defaults to True as in Artemis's code (its docs say false).
    """

    kind: HAKind = "primary-only"
    failover_on_shutdown: bool = False
    wait_for_activation: bool = True
    allow_failback: bool = True
    restart_backup: bool = True
    scale_down: ScaleDownConfig | None = None

    @property
    def is_backup(self) -> bool:
        """True for a shared-store backup."""
        return self.kind == "shared-store-backup"

    @property
    def is_shared_store(self) -> bool:
        """True for either side of a shared-store pair."""
        return self.kind != "primary-only"


# --------------------------------------------------------------------------------------------
# Addresses and queues


@dataclass(frozen=True)
class QueueConfig:
    """A queue declared under ``<addresses>`` (or the deprecated ``<queues>``).

    ``set_fields`` names the fields the XML set. Artemis fills the others from the matching
    address-settings' ``default-*`` values when it creates the queue; so does
    :meth:`with_defaults_from`.
    """

    name: str
    address: str
    routing_type: RoutingType = RoutingType.MULTICAST
    durable: bool = True
    filter: str | None = None
    max_consumers: int = -1  #: -1 = unlimited
    purge_on_no_consumers: bool = False
    exclusive: bool = False
    last_value: bool = False
    last_value_key: str | None = None
    non_destructive: bool = False
    consumers_before_dispatch: int = 0
    delay_before_dispatch: int = -1  #: ms; -1 = do not wait
    group_rebalance: bool = False
    group_rebalance_pause_dispatch: bool = False
    group_buckets: int = -1
    group_first_key: str | None = None
    ring_size: int = -1
    enabled: bool = True
    user: str | None = None
    set_fields: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    #: queue field -> the address-setting that supplies its default
    ADDRESS_SETTING_DEFAULTS_FOR = MappingProxyType({
        "max_consumers": "default_max_consumers",
        "purge_on_no_consumers": "default_purge_on_no_consumers",
        "exclusive": "default_exclusive_queue",
        "last_value": "default_last_value_queue",
        "last_value_key": "default_last_value_key",
        "non_destructive": "default_non_destructive",
        "consumers_before_dispatch": "default_consumers_before_dispatch",
        "delay_before_dispatch": "default_delay_before_dispatch",
        "group_rebalance": "default_group_rebalance",
        "group_rebalance_pause_dispatch": "default_group_rebalance_pause_dispatch",
        "group_buckets": "default_group_buckets",
        "group_first_key": "default_group_first_key",
        "ring_size": "default_ring_size",
    })

    def with_defaults_from(self, settings: AddressSettings) -> QueueConfig:
        """A copy whose unset fields come from ``settings`` (a complete AddressSettings)."""
        changes = {}
        for queue_field, setting in self.ADDRESS_SETTING_DEFAULTS_FOR.items():
            if queue_field in self.set_fields:
                continue
            value = getattr(settings, setting)
            if value is not None:
                changes[queue_field] = value
        return dataclasses.replace(self, **changes) if changes else self


@dataclass(frozen=True)
class AddressConfig:
    """An ``<address name="...">`` with its routing types and declared queues."""

    name: str
    routing_types: frozenset[RoutingType] = frozenset({RoutingType.MULTICAST})
    queues: tuple[QueueConfig, ...] = ()


# --------------------------------------------------------------------------------------------
# Address settings


@dataclass(frozen=True, repr=False)
class AddressSettings:
    """One ``<address-setting>``: every field is ``None`` unless that element was given.

    Field names are the element names in Python spelling. Times are ms unless a comment says
    otherwise; sizes are bytes; policies are the Artemis strings. Defaults for every field are in
    :data:`ADDRESS_SETTING_DEFAULTS`; a few are derived from other fields when still unset after
    merging (see :meth:`with_derived_defaults`).
    """

    dead_letter_address: str | None = None
    auto_create_dead_letter_resources: bool | None = None
    dead_letter_queue_prefix: str | None = None
    dead_letter_queue_suffix: str | None = None
    expiry_address: str | None = None
    auto_create_expiry_resources: bool | None = None
    expiry_queue_prefix: str | None = None
    expiry_queue_suffix: str | None = None
    no_expiry: bool | None = None
    expiry_delay: int | None = None  #: ms; -1 = keep the message's own expiry
    min_expiry_delay: int | None = None  #: ms
    max_expiry_delay: int | None = None  #: ms
    redelivery_delay: int | None = None  #: ms
    redelivery_delay_multiplier: float | None = None
    redelivery_collision_avoidance_factor: float | None = None  #: 0.0 .. 1.0
    max_redelivery_delay: int | None = None  #: ms; derived: 10 x redelivery-delay
    max_delivery_attempts: int | None = None
    max_size_bytes: int | None = None  #: bytes; -1 = no limit
    max_size_messages: int | None = None  #: -1 = no limit
    page_limit_bytes: int | None = None  #: bytes
    page_limit_messages: int | None = None
    max_size_bytes_reject_threshold: int | None = None  #: bytes; -1 = off
    page_size_bytes: int | None = None  #: bytes
    page_max_cache_size: int | None = None  #: obsolete, ignored
    max_read_page_messages: int | None = None
    prefetch_page_messages: int | None = None  #: derived: max-read-page-messages
    max_read_page_bytes: int | None = None  #: bytes; derived: 2 x page-size-bytes
    prefetch_page_bytes: int | None = None  #: bytes; derived: max-read-page-bytes
    address_full_policy: str | None = None  #: PAGE, BLOCK, FAIL, DROP
    disk_full_policy: str | None = None  #: BLOCK, FAIL, DROP
    page_full_policy: str | None = None  #: DROP, FAIL
    message_counter_history_day_limit: int | None = None
    last_value_queue: bool | None = None  #: deprecated alias; the parser also sets the next field
    default_last_value_queue: bool | None = None
    default_last_value_key: str | None = None
    default_non_destructive: bool | None = None
    default_exclusive_queue: bool | None = None
    default_group_rebalance: bool | None = None
    default_group_rebalance_pause_dispatch: bool | None = None
    default_group_buckets: int | None = None
    default_group_first_key: str | None = None
    default_consumers_before_dispatch: int | None = None
    default_delay_before_dispatch: int | None = None  #: ms
    redistribution_delay: int | None = None  #: ms; -1 = never redistribute
    send_to_dla_on_no_route: bool | None = None
    slow_consumer_threshold: int | None = None  #: messages per unit; -1 = off
    slow_consumer_threshold_measurement_unit: str | None = None  #: MESSAGES_PER_SECOND, ...
    slow_consumer_policy: str | None = None  #: KILL, NOTIFY
    slow_consumer_check_period: int | None = None  #: seconds
    auto_create_jms_queues: bool | None = None  #: deprecated
    auto_delete_jms_queues: bool | None = None  #: deprecated
    auto_create_jms_topics: bool | None = None  #: deprecated
    auto_delete_jms_topics: bool | None = None  #: deprecated
    auto_create_queues: bool | None = None
    auto_delete_queues: bool | None = None
    auto_delete_created_queues: bool | None = None
    auto_delete_queues_delay: int | None = None  #: ms
    auto_delete_queues_message_count: int | None = None  #: -1 = any count
    auto_delete_queues_skip_usage_check: bool | None = None
    config_delete_queues: str | None = None  #: OFF, FORCE
    auto_create_addresses: bool | None = None
    auto_delete_addresses: bool | None = None
    auto_delete_addresses_delay: int | None = None  #: ms
    auto_delete_addresses_skip_usage_check: bool | None = None
    config_delete_addresses: str | None = None  #: OFF, FORCE
    config_delete_diverts: str | None = None  #: OFF, FORCE
    management_browse_page_size: int | None = None
    management_message_attribute_size_limit: int | None = None  #: bytes
    default_purge_on_no_consumers: bool | None = None
    default_max_consumers: int | None = None
    default_queue_routing_type: RoutingType | None = None
    default_address_routing_type: RoutingType | None = None
    default_consumer_window_size: int | None = None  #: bytes
    default_ring_size: int | None = None
    retroactive_message_count: int | None = None
    enable_metrics: bool | None = None
    enable_ingress_timestamp: bool | None = None
    id_cache_size: int | None = None  #: None = the global ``<id-cache-size>``
    initial_queue_buffer_size: int | None = None  #: a power of two

    def merged_over(self, less_specific: AddressSettings) -> AddressSettings:
        """A new instance: this one's set fields, the others from ``less_specific``."""
        changes = {}
        for f in _ADDRESS_SETTING_FIELDS:
            if getattr(self, f) is None:
                other = getattr(less_specific, f)
                if other is not None:
                    changes[f] = other
        return dataclasses.replace(self, **changes) if changes else self

    def with_derived_defaults(self) -> AddressSettings:
        """Fill the fields whose Artemis default depends on other fields (call after merging)."""
        changes: dict[str, Any] = {}
        if self.max_redelivery_delay is None and self.redelivery_delay is not None:
            changes["max_redelivery_delay"] = self.redelivery_delay * 10
        max_read_page_bytes = self.max_read_page_bytes
        if max_read_page_bytes is None and self.page_size_bytes is not None:
            max_read_page_bytes = 2 * self.page_size_bytes
            changes["max_read_page_bytes"] = max_read_page_bytes
        if self.prefetch_page_bytes is None and max_read_page_bytes is not None:
            changes["prefetch_page_bytes"] = max_read_page_bytes
        if self.prefetch_page_messages is None and self.max_read_page_messages is not None:
            changes["prefetch_page_messages"] = self.max_read_page_messages
        return dataclasses.replace(self, **changes) if changes else self

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.set_fields().items())
        return f"AddressSettings({inner})"

    def set_fields(self) -> dict[str, Any]:
        """The fields this instance sets, by name."""
        return {f: getattr(self, f) for f in _ADDRESS_SETTING_FIELDS
                if getattr(self, f) is not None}


_ADDRESS_SETTING_FIELDS = tuple(f.name for f in dataclasses.fields(AddressSettings))

#: Artemis's defaults for every address-setting. Fields left ``None`` here either have no value
#: by default (dead-letter-address, expiry-address, page limits and their policy, disk-full
#: policy, last-value key, group first key, id-cache-size = the global one) or are derived by
#: :meth:`AddressSettings.with_derived_defaults` (max-redelivery-delay, max-read-page-bytes,
#: prefetch-page-bytes, prefetch-page-messages).
ADDRESS_SETTING_DEFAULTS = AddressSettings(
    dead_letter_address=None,
    auto_create_dead_letter_resources=False,
    dead_letter_queue_prefix="DLQ.",
    dead_letter_queue_suffix="",
    expiry_address=None,
    auto_create_expiry_resources=False,
    expiry_queue_prefix="EXP.",
    expiry_queue_suffix="",
    no_expiry=False,
    expiry_delay=-1,
    min_expiry_delay=-1,
    max_expiry_delay=-1,
    redelivery_delay=0,
    redelivery_delay_multiplier=1.0,
    redelivery_collision_avoidance_factor=0.0,
    max_redelivery_delay=None,
    max_delivery_attempts=10,
    max_size_bytes=-1,
    max_size_messages=-1,
    page_limit_bytes=None,
    page_limit_messages=None,
    max_size_bytes_reject_threshold=-1,
    page_size_bytes=10 * MIB,
    page_max_cache_size=5,
    max_read_page_messages=-1,
    prefetch_page_messages=None,
    max_read_page_bytes=None,
    prefetch_page_bytes=None,
    address_full_policy="PAGE",
    disk_full_policy=None,
    page_full_policy=None,
    message_counter_history_day_limit=0,
    last_value_queue=False,
    default_last_value_queue=False,
    default_last_value_key=None,
    default_non_destructive=False,
    default_exclusive_queue=False,
    default_group_rebalance=False,
    default_group_rebalance_pause_dispatch=False,
    default_group_buckets=-1,
    default_group_first_key=None,
    default_consumers_before_dispatch=0,
    default_delay_before_dispatch=-1,
    redistribution_delay=-1,
    send_to_dla_on_no_route=False,
    slow_consumer_threshold=-1,
    slow_consumer_threshold_measurement_unit="MESSAGES_PER_SECOND",
    slow_consumer_policy="NOTIFY",
    slow_consumer_check_period=5,
    auto_create_jms_queues=True,
    auto_delete_jms_queues=True,
    auto_create_jms_topics=True,
    auto_delete_jms_topics=True,
    auto_create_queues=True,
    auto_delete_queues=True,
    auto_delete_created_queues=False,
    auto_delete_queues_delay=0,
    auto_delete_queues_message_count=0,
    auto_delete_queues_skip_usage_check=False,
    config_delete_queues="OFF",
    auto_create_addresses=True,
    auto_delete_addresses=True,
    auto_delete_addresses_delay=0,
    auto_delete_addresses_skip_usage_check=False,
    config_delete_addresses="OFF",
    config_delete_diverts="OFF",
    management_browse_page_size=200,
    management_message_attribute_size_limit=256,
    default_purge_on_no_consumers=False,
    default_max_consumers=-1,
    default_queue_routing_type=RoutingType.MULTICAST,
    default_address_routing_type=RoutingType.MULTICAST,
    default_consumer_window_size=1024 * 1024,
    default_ring_size=-1,
    retroactive_message_count=0,
    enable_metrics=True,
    enable_ingress_timestamp=False,
    id_cache_size=None,
    initial_queue_buffer_size=8192,
)


# --------------------------------------------------------------------------------------------
# Security and wildcards


@dataclass(frozen=True)
class SecuritySetting:
    """One ``<security-setting match="...">``: permission type -> roles that hold it.

    A permission absent from ``permissions`` is granted to no role.
    """

    permissions: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "permissions", _frozen_mapping(self.permissions))

    def roles_for(self, permission: str) -> frozenset[str]:
        """The roles granted ``permission`` (see :data:`PERMISSIONS`)."""
        permission = PERMISSION_ALIASES.get(permission, permission)
        return self.permissions.get(permission, frozenset())

    def allows(self, permission: str, roles: frozenset[str] | set[str]) -> bool:
        """Whether any of ``roles`` holds ``permission``."""
        return not self.roles_for(permission).isdisjoint(roles)


@dataclass(frozen=True)
class WildcardConfig:
    """``<wildcard-addresses>``: the word delimiter and the two wildcard characters."""

    routing_enabled: bool = True
    delimiter: str = "."
    any_words: str = "#"  #: zero or more words
    single_word: str = "*"  #: exactly one word


# --------------------------------------------------------------------------------------------
# The whole configuration


@dataclass(frozen=True)
class Configuration:
    """A parsed broker.xml. Times are ms unless the name says otherwise; sizes are bytes."""

    instance_dir: Path
    name: str = "localhost"
    config_file: Path | None = None
    persistence_enabled: bool = True
    # Directories (absolute; relative paths in broker.xml resolve against instance_dir).
    paging_directory: Path | None = None  #: default <instance>/data/paging
    bindings_directory: Path | None = None  #: default <instance>/data/bindings
    journal_directory: Path | None = None  #: default <instance>/data/journal
    large_messages_directory: Path | None = None  #: default <instance>/data/largemessages
    node_manager_lock_directory: Path | None = None  #: default: journal_directory
    create_bindings_dir: bool = True
    create_journal_dir: bool = True
    journal: JournalConfig = field(default_factory=JournalConfig)
    # Network
    acceptors: tuple[AcceptorConfig, ...] = ()
    connectors: Mapping[str, ConnectorConfig] = field(default_factory=dict)
    # Cluster and HA
    cluster_user: str = "ACTIVEMQ.CLUSTER.ADMIN.USER"
    cluster_password: str = "CHANGE ME!!"
    cluster_connections: tuple[ClusterConnectionConfig, ...] = ()
    ha_policy: HAPolicy = field(default_factory=HAPolicy)
    # Addressing
    addresses: tuple[AddressConfig, ...] = ()
    #: queues of the deprecated top-level ``<queues>`` element (MULTICAST, as in Artemis)
    queues: tuple[QueueConfig, ...] = ()
    #: (match, settings) in document order; each AddressSettings is partial
    address_settings: tuple[tuple[str, AddressSettings], ...] = ()
    wildcard_addresses: WildcardConfig = field(default_factory=WildcardConfig)
    literal_match_markers: str | None = None  #: two characters, e.g. "()"; None = off
    management_address: str = "activemq.management"
    management_notification_address: str = "activemq.notifications"
    internal_naming_prefix: str = DEFAULT_INTERNAL_NAMING_PREFIX
    temporary_queue_namespace: str = ""
    uuid_namespace: str = ""
    amqp_use_core_subscription_naming: bool = False
    # Security
    security_enabled: bool = True
    #: (match, setting) in document order; only the most specific match applies
    security_settings: tuple[tuple[str, SecuritySetting], ...] = ()
    security_invalidation_interval: int = 10000
    authentication_cache_size: int = 1000
    authorization_cache_size: int = 1000
    populate_validated_user: bool = False
    reject_empty_validated_user: bool = False
    mask_password: bool | None = None
    # Memory, disk and paging
    global_max_size: int = DEFAULT_GLOBAL_MAX_SIZE  #: bytes; broker.xml -1 -> 512 MiB
    global_max_messages: int = -1  #: -1 = no limit
    max_disk_usage: int = 90  #: percent; -1 = off
    min_disk_free: int = -1  #: bytes; -1 = off; wins over max_disk_usage
    disk_scan_period: int = 5000
    page_sync_timeout_ns: int = 3_333_333  #: default: the NIO journal buffer timeout
    page_max_concurrent_io: int = 5
    read_whole_page: bool = False
    purge_page_folders: bool = False
    large_message_sync: bool = True
    # Duplicate detection, redelivery
    id_cache_size: int = 20000
    persist_id_cache: bool = True
    persist_delivery_count_before_delivery: bool = False
    max_redelivery_records: int = 10
    # Scans and timeouts
    message_expiry_scan_period: int = 30000  #: -1 = off
    address_queue_scan_period: int = 30000  #: -1 = off
    transaction_timeout: int = 300000
    transaction_timeout_scan_period: int = 1000
    connection_ttl_override: int = -1
    connection_ttl_check_interval: int = 2000
    configuration_file_refresh_period: int = 5000
    graceful_shutdown_enabled: bool = False
    graceful_shutdown_timeout: int = -1
    # Critical analyzer
    critical_analyzer: bool = True
    critical_analyzer_timeout: int = 120000
    critical_analyzer_check_period: int = 60000  #: broker.xml 0 -> timeout / 2
    critical_analyzer_policy: str = "LOG"  #: LOG, HALT, SHUTDOWN
    # Message counters
    message_counter_enabled: bool = False
    message_counter_sample_period: int = 10000
    message_counter_max_day_history: int = 10
    # Protocol-specific
    mqtt_session_scan_interval: int = 5000
    mqtt_session_state_persistence_timeout: int = 5000
    mqtt_subscription_persistence_enabled: bool = True
    suppress_session_notifications: bool = False
    #: what the parser ignored or found deprecated, in document order (also logged)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        instance = Path(os.path.abspath(self.instance_dir))
        object.__setattr__(self, "instance_dir", instance)
        object.__setattr__(self, "connectors", _frozen_mapping(self.connectors))
        defaults = {
            "paging_directory": "data/paging",
            "bindings_directory": "data/bindings",
            "journal_directory": "data/journal",
            "large_messages_directory": "data/largemessages",
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            object.__setattr__(self, name, resolve_path(instance, value or default))
        if self.node_manager_lock_directory is None:
            object.__setattr__(self, "node_manager_lock_directory", self.journal_directory)
        else:
            object.__setattr__(self, "node_manager_lock_directory",
                               resolve_path(instance, self.node_manager_lock_directory))

    def replace(self, **changes: Any) -> Configuration:
        """A copy with ``changes`` applied (``dataclasses.replace``).

        Relative directories resolve against the (new) instance directory. A node-manager lock
        directory that was following the journal directory keeps following it.
        """
        if ("journal_directory" in changes and "node_manager_lock_directory" not in changes
                and self.node_manager_lock_directory == self.journal_directory):
            changes["node_manager_lock_directory"] = None
        return dataclasses.replace(self, **changes)

    def acceptor(self, name: str) -> AcceptorConfig | None:
        """The acceptor called ``name``, if any."""
        for acceptor in self.acceptors:
            if acceptor.name == name:
                return acceptor
        return None


def resolve_path(instance_dir: Path, value: str | Path) -> Path:
    """``value`` made absolute against ``instance_dir`` and normalised (symlinks kept)."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(instance_dir) / path
    return Path(os.path.normpath(os.path.abspath(path)))


__all__ = [
    "ADDRESS_SETTING_DEFAULTS",
    "DEFAULT_GLOBAL_MAX_SIZE",
    "PERMISSIONS",
    "AcceptorConfig",
    "AddressConfig",
    "AddressSettings",
    "ClusterConnectionConfig",
    "Configuration",
    "ConnectorConfig",
    "HAPolicy",
    "JournalConfig",
    "QueueConfig",
    "RoutingType",
    "ScaleDownConfig",
    "SecuritySetting",
    "WildcardConfig",
    "resolve_path",
]
