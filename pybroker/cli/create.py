"""``pybroker create <directory>``: a broker instance shaped like one from ``artemis create``.

The instance has the files an Artemis lab refers to (``etc/broker.xml``, ``etc/bootstrap.xml``,
``etc/login.config``, ``etc/artemis-users.properties``, ``etc/artemis-roles.properties``, empty
``data/``, ``log/``, ``lib/``, ``tmp/``) and a POSIX launcher ``bin/pybroker`` that execs the
Python which ran ``create`` with ``PYBROKER_INSTANCE`` set, so ``bin/pybroker run`` runs it.

broker.xml carries the elements, values and order Artemis 2.40 writes (see
``/work/shared/reference/artemis-create-output.md``); the options change it the way Artemis's
options do. Where Artemis would prompt, pybroker never does:

* ``--user`` and ``--password`` are required (Artemis asks; ``--silent`` would use admin/admin).
* Neither ``--allow-anonymous`` nor ``--require-login``: login is required (Artemis asks;
  ``--silent`` would allow anonymous access). A note says so.
* Clustered (``--shared-store``, ``--static-cluster``, ``--clustered``) without
  ``--cluster-user``/``--cluster-password``: ``cluster-admin``/``password-admin``, the values
  ``artemis create --silent`` writes (and the seed lab uses), so two nodes created apart agree.
* Clustered with ``--host 0.0.0.0``: acceptors keep listening on 0.0.0.0, the announced
  ``artemis`` connector (and the default ``--name``) use ``localhost`` (Artemis asks for a host
  and offers ``localhost``).
* ``--no-fsync`` without a journal-type flag writes ``MAPPED`` (Artemis asks; ``--silent``
  picks mapped).

Deliberate differences: pybroker has no UDP discovery, so a clustered instance without
``--static-cluster`` gets the ``artemis`` connector and cluster credentials but no
broadcast/discovery groups and no cluster-connection (a note says to add ``--static-cluster``).
pybroker does not measure the disk: the tuned ``journal-buffer-timeout`` and
``page-sync-timeout`` are the values of the reference output (``--no-autotune`` omits them, as
in Artemis). ``--purge-page-folders`` writes ``<purge-page-folders>true`` (Artemis 2.41+ always
writes the element; 2.40 did not have it). Flags that only mean something to a JVM or the web
console are accepted and ignored with a note.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape, quoteattr

import click

from pybroker.config.passwords import hash_password
from pybroker.errors import ConfigError

DEFAULT_PORT = 61616
AMQP_PORT = 5672
STOMP_PORT = 61613
HORNETQ_PORT = 5445
MQTT_PORT = 1883
DEFAULT_HOST = "0.0.0.0"
DEFAULT_ROLE = "amq"
DEFAULT_DATA = "data"
# Artemis 2.40 wrote max-hops 0 (the reference output); 2.44 writes 1 (ARTEMIS-5718).
DEFAULT_MAX_HOPS = 0
DEFAULT_MESSAGE_LOAD_BALANCING = "ON_DEMAND"
MESSAGE_LOAD_BALANCING_TYPES = ("ON_DEMAND", "STRICT", "OFF", "OFF_WITH_REDISTRIBUTION")
# What `artemis create --silent` writes for the cluster credentials it would otherwise ask for.
DEFAULT_CLUSTER_USER = "cluster-admin"
DEFAULT_CLUSTER_PASSWORD = "password-admin"
# Tuned values of the reference output (Artemis measures the disk; pybroker does not).
JOURNAL_BUFFER_TIMEOUT = 8000
PAGE_SYNC_TIMEOUT = 188000
DEFAULT_JOURNAL_MAX_IO = 4096
DEFAULT_DEVICE_BLOCK_SIZE = 4096
JOURNAL_TYPES = ("ASYNCIO", "NIO", "MAPPED")
ROUTING_TYPES = ("anycast", "multicast")
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]")

_BUFFERS = "tcpSendBufferSize=1048576;tcpReceiveBufferSize=1048576"
_AMQP_FLOW = "amqpCredits=1000;amqpLowCredits=300"

# Instance sub-directories created empty (data is created separately: --data may move it).
_EMPTY_DIRECTORIES = ("bin", "etc", "log", "lib", "tmp")

# Flags pasted from Artemis documentation that mean nothing without a JVM or web console.
IGNORED_FLAGS = {
    "java_memory": ("--java-memory", "pybroker has no JVM"),
    "no_web": ("--no-web", "pybroker has no embedded web console in bootstrap.xml"),
    "http_host": ("--http-host", "pybroker has no embedded web console in bootstrap.xml"),
    "http_port": ("--http-port", "pybroker has no embedded web console in bootstrap.xml"),
    "security_manager": (
        "--security-manager",
        "pybroker always uses the JAAS-shaped etc/login.config",
    ),
    "silent": ("--silent", "pybroker create never prompts"),
}


@dataclass(frozen=True)
class CreateOptions:
    """Everything ``pybroker create`` writes into an instance; defaults are Artemis's."""

    user: str
    password: str
    name: str | None = None  # default: the host (the announced host when clustered)
    host: str = DEFAULT_HOST
    default_port: int = DEFAULT_PORT
    port_offset: int = 0
    data: str = DEFAULT_DATA
    role: str = DEFAULT_ROLE
    allow_anonymous: bool = False
    shared_store: bool = False
    backup: bool = False
    failover_on_shutdown: bool = False
    clustered: bool = False
    static_cluster: tuple[str, ...] = ()
    cluster_user: str = DEFAULT_CLUSTER_USER
    cluster_password: str = DEFAULT_CLUSTER_PASSWORD
    max_hops: int = DEFAULT_MAX_HOPS
    message_load_balancing: str = DEFAULT_MESSAGE_LOAD_BALANCING
    amqp_acceptor: bool = True
    stomp_acceptor: bool = True
    hornetq_acceptor: bool = True
    mqtt_acceptor: bool = True
    persistence_enabled: bool = True
    fsync: bool = True
    journal_type: str | None = None  # None: ASYNCIO, or MAPPED when fsync is off
    autotune: bool = True
    journal_device_block_size: int = DEFAULT_DEVICE_BLOCK_SIZE
    journal_max_io: int = DEFAULT_JOURNAL_MAX_IO
    paging: bool = True  # False: address-full-policy BLOCK
    auto_create: bool = True
    auto_delete: bool = False
    global_max_size: str | None = None
    global_max_messages: int = -1
    purge_page_folders: bool = False
    queues: tuple[tuple[str, str], ...] = ()  # (name, routing type)
    addresses: tuple[tuple[str, str], ...] = ()
    support_advisory: bool = False
    suppress_internal_management_objects: bool = False

    @property
    def is_clustered(self) -> bool:
        """True when Artemis would treat the instance as clustered."""
        return self.clustered or self.shared_store or bool(self.static_cluster)

    @property
    def announced_host(self) -> str:
        """The host other nodes and clients are told: ``localhost`` for a wildcard host."""
        return "localhost" if self.host in WILDCARD_HOSTS else self.host

    @property
    def broker_name(self) -> str:
        """``--name``, else the host (the announced host when clustered), as Artemis does."""
        if self.name is not None:
            return self.name
        return self.announced_host if self.is_clustered else self.host

    @property
    def effective_journal_type(self) -> str:
        """The journal-type written: the chosen one, else MAPPED without fsync, else ASYNCIO."""
        if self.journal_type is not None:
            return self.journal_type
        return "ASYNCIO" if self.fsync else "MAPPED"


@dataclass(frozen=True)
class CreatedInstance:
    """What :func:`create_instance` wrote."""

    directory: Path
    launcher: Path
    broker_xml: Path
    notes: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------------------------
# parsing of the list options


def parse_destinations(
    text: str | None, default_routing: str, option: str
) -> list[tuple[str, str]]:
    """Parse ``--queues``/``--addresses``: ``name[:anycast|multicast],...``.

    Raises ConfigError naming the option for an empty name, a bad routing type or ``::``.
    """
    if text is None:
        return []
    result: list[tuple[str, str]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "::" in item:
            raise ConfigError(f"{option}: {item!r}: '::' is reserved for fully qualified queues")
        name, separator, routing = item.rpartition(":")
        if not separator:
            name, routing = item, default_routing
        name, routing = name.strip(), routing.strip().lower()
        if routing not in ROUTING_TYPES:
            raise ConfigError(
                f"{option}: invalid routing type {routing!r} in {item!r} (anycast or multicast)"
            )
        if not name:
            raise ConfigError(f"{option}: empty name in {item!r}")
        if ":" in name:
            raise ConfigError(f"{option}: {item!r}: a name must not contain ':'")
        result.append((name, routing))
    return result


def parse_static_cluster(text: str | None) -> list[str]:
    """Parse ``--static-cluster url1,url2``; raises ConfigError for an empty list or a non-URL."""
    if text is None:
        return []
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls:
        raise ConfigError("--static-cluster: no URL given (expected tcp://host:port,...)")
    for url in urls:
        if "://" not in url:
            raise ConfigError(f"--static-cluster: {url!r} is not a URL (expected tcp://host:port)")
    return urls


# --------------------------------------------------------------------------------------------
# validation


def _check_text(value: str, option: str, forbidden: str) -> None:
    bad = sorted(
        {character for character in value if character in forbidden or ord(character) < 32}
    )
    if bad:
        raise ConfigError(f"{option}: {value!r} contains unsupported characters {bad!r}")


def _check_port(port: int, what: str) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} is outside 1-65535 (check --port-offset)")


def check_options(options: CreateOptions) -> None:
    """Raise ConfigError for options that cannot make a usable instance."""
    if not options.user:
        raise ConfigError("--user must not be empty")
    # The user name ends up as a properties key, a comma-separated roles value and a quoted
    # login.config option; these characters cannot be carried through all three.
    _check_text(options.user, "--user", ',"')
    _check_text(options.role, "--role", ',"')
    if not options.role:
        raise ConfigError("--role must not be empty")
    if options.name is not None:
        _check_text(options.name, "--name", "")
        if not options.name:
            raise ConfigError("--name must not be empty")
    if not options.host or any(character in options.host for character in "/?;@ "):
        raise ConfigError(f"--host: {options.host!r} is not a host name or address")
    if options.journal_type is not None and options.journal_type not in JOURNAL_TYPES:
        raise ConfigError(f"journal type {options.journal_type!r} is not one of {JOURNAL_TYPES}")
    if options.journal_device_block_size <= 0 or options.journal_device_block_size % 512:
        raise ConfigError("--journal-device-block-size must be a positive multiple of 512")
    if options.journal_max_io < 1:
        raise ConfigError("--journal-max-io must be at least 1")
    if options.max_hops < 0:
        raise ConfigError("--max-hops must not be negative")
    if options.message_load_balancing not in MESSAGE_LOAD_BALANCING_TYPES:
        raise ConfigError(
            f"--message-load-balancing: {options.message_load_balancing!r} is not one of "
            f"{', '.join(MESSAGE_LOAD_BALANCING_TYPES)}"
        )
    if options.global_max_messages < -1:
        raise ConfigError("--global-max-messages must be -1 (no limit) or a count")
    if options.global_max_size is not None and not options.global_max_size.strip():
        raise ConfigError("--global-max-size must not be empty")
    if not options.data.strip():
        raise ConfigError("--data must not be empty")
    if options.backup and not options.shared_store:
        raise ConfigError("--backup (--slave) needs --shared-store (pybroker has no replication)")
    if options.failover_on_shutdown and not options.shared_store:
        raise ConfigError("--failover-on-shutdown is valid only with --shared-store")
    _check_text(options.cluster_user, "--cluster-user", "")
    for url in options.static_cluster:
        _check_text(url, "--static-cluster", "")
    for name, port in _acceptor_ports(options):
        _check_port(port, f"acceptor {name!r}")
    seen = {"DLQ", "ExpiryQueue"}
    for name, _routing in (*options.queues, *options.addresses):
        _check_text(name, "--queues/--addresses", "")
        if name in seen:
            raise ConfigError(f"--queues/--addresses: address {name!r} is defined twice")
        seen.add(name)


# --------------------------------------------------------------------------------------------
# rendering


def _template(name: str) -> Template:
    return Template(resources.files("pybroker.cli").joinpath("templates", name).read_text("utf-8"))


def _xml_text(value: object) -> str:
    return escape(str(value))


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _acceptor_ports(options: CreateOptions) -> list[tuple[str, int]]:
    ports = [("artemis", options.default_port + options.port_offset)]
    if options.amqp_acceptor:
        ports.append(("amqp", AMQP_PORT + options.port_offset))
    if options.stomp_acceptor:
        ports.append(("stomp", STOMP_PORT + options.port_offset))
    if options.hornetq_acceptor:
        ports.append(("hornetq", HORNETQ_PORT + options.port_offset))
    if options.mqtt_acceptor:
        ports.append(("mqtt", MQTT_PORT + options.port_offset))
    return ports


def acceptor_urls(options: CreateOptions) -> list[tuple[str, str]]:
    """The (name, URL) of every acceptor ``create`` writes, ports shifted by the offset."""
    parameters = {
        "artemis": (
            f"{_BUFFERS};amqpMinLargeMessageSize=102400;"
            "protocols=CORE,AMQP,STOMP,HORNETQ,MQTT,OPENWIRE;useEpoll=true;"
            f"{_AMQP_FLOW};amqpDuplicateDetection=true;"
            f"supportAdvisory={_bool(options.support_advisory)};"
            "suppressInternalManagementObjects="
            f"{_bool(options.suppress_internal_management_objects)}"
        ),
        "amqp": (
            f"{_BUFFERS};protocols=AMQP;useEpoll=true;{_AMQP_FLOW};"
            "amqpMinLargeMessageSize=102400;amqpDuplicateDetection=true"
        ),
        "stomp": f"{_BUFFERS};protocols=STOMP;useEpoll=true",
        "hornetq": (
            "anycastPrefix=jms.queue.;multicastPrefix=jms.topic.;protocols=HORNETQ,STOMP;useEpoll=true"
        ),
        "mqtt": f"{_BUFFERS};protocols=MQTT;useEpoll=true",
    }
    host = _url_host(options.host)
    return [
        (name, f"tcp://{host}:{port}?{parameters[name]}") for name, port in _acceptor_ports(options)
    ]


def own_connector_url(options: CreateOptions) -> str:
    """The URL this node announces (connector ``artemis``): announced host, shifted port."""
    return f"tcp://{_url_host(options.announced_host)}:{options.default_port + options.port_offset}"


def _journal_tuning(options: CreateOptions) -> tuple[str, str]:
    """The journal-buffer-timeout/journal-max-io and page-sync-timeout text, as Artemis tunes."""
    if not options.autotune:
        return "", ""
    journal_type = options.effective_journal_type
    if journal_type == "MAPPED" and not options.fsync:
        buffer_timeout, max_io, page_sync = 0, 1, 0
    else:
        buffer_timeout = JOURNAL_BUFFER_TIMEOUT
        max_io = options.journal_max_io if journal_type == "ASYNCIO" else 1
        page_sync = PAGE_SYNC_TIMEOUT if options.fsync else 0
    journal = (
        "\n      <!-- Nanoseconds a write may wait to share an fsync with later writes. -->\n"
        f"      <journal-buffer-timeout>{buffer_timeout}</journal-buffer-timeout>\n"
        "\n      <!-- Queue depth of asynchronous writes with ASYNCIO. -->\n"
        f"      <journal-max-io>{max_io}</journal-max-io>\n"
    )
    page = f"\n      <page-sync-timeout>{page_sync}</page-sync-timeout>\n"
    return journal, page


def _connectors(options: CreateOptions) -> str:
    if not options.is_clustered:
        return ""
    lines = [
        "",
        "      <connectors>",
        "         <!-- This node, as announced to cluster peers, backups and clients. -->",
        f'         <connector name="artemis">{_xml_text(own_connector_url(options))}</connector>',
    ]
    for index, url in enumerate(options.static_cluster):
        lines.append(f'         <connector name="node{index}">{_xml_text(url)}</connector>')
    lines += ["      </connectors>", ""]
    return "\n".join(lines)


def _cluster(options: CreateOptions) -> str:
    if not options.is_clustered:
        return ""
    text = (
        "\n"
        f"      <cluster-user>{_xml_text(options.cluster_user)}</cluster-user>\n"
        "\n"
        f"      <cluster-password>{_xml_text(options.cluster_password)}</cluster-password>\n"
    )
    if options.static_cluster:
        references = "".join(
            f"               <connector-ref>node{index}</connector-ref>\n"
            for index in range(len(options.static_cluster))
        )
        text += (
            "\n"
            "      <cluster-connections>\n"
            '         <cluster-connection name="my-cluster">\n'
            "            <connector-ref>artemis</connector-ref>\n"
            "            <message-load-balancing>"
            f"{options.message_load_balancing}</message-load-balancing>\n"
            f"            <max-hops>{options.max_hops}</max-hops>\n"
            "            <static-connectors>\n"
            f"{references}"
            "            </static-connectors>\n"
            "         </cluster-connection>\n"
            "      </cluster-connections>\n"
        )
    return text


def _ha_policy(options: CreateOptions) -> str:
    if not options.shared_store:
        return ""
    role = "backup" if options.backup else "primary"
    return (
        "\n"
        "      <ha-policy>\n"
        "         <shared-store>\n"
        f"            <{role}>\n"
        "               <failover-on-shutdown>"
        f"{_bool(options.failover_on_shutdown)}</failover-on-shutdown>\n"
        f"            </{role}>\n"
        "         </shared-store>\n"
        "      </ha-policy>\n"
    )


def _addresses(options: CreateOptions) -> str:
    lines: list[str] = []
    for name, routing in options.queues:
        lines += [
            f"         <address name={quoteattr(name)}>",
            f"            <{routing}>",
            f"               <queue name={quoteattr(name)} />",
            f"            </{routing}>",
            "         </address>",
        ]
    for name, routing in options.addresses:
        lines += [
            f"         <address name={quoteattr(name)}>",
            f"            <{routing}/>",
            "         </address>",
        ]
    return "".join(line + "\n" for line in lines)


def render_broker_xml(options: CreateOptions) -> str:
    """The text of ``etc/broker.xml`` for ``options``."""
    journal_tuning, page_sync = _journal_tuning(options)
    acceptors = "\n".join(
        f"         <acceptor name={quoteattr(name)}>{_xml_text(url)}</acceptor>"
        for name, url in acceptor_urls(options)
    )
    purge = (
        "\n      <!-- Remove an address's page folder when it leaves page mode. -->\n"
        "      <purge-page-folders>true</purge-page-folders>\n"
        if options.purge_page_folders
        else ""
    )
    global_max_size = (
        "\n      <!-- Bytes of message data held in memory before addresses start paging. -->\n"
        f"      <global-max-size>{_xml_text(options.global_max_size)}</global-max-size>\n"
        if options.global_max_size is not None
        else ""
    )
    return _template("broker.xml").substitute(
        name=_xml_text(options.broker_name),
        persistence_enabled=_bool(options.persistence_enabled),
        journal_type=options.effective_journal_type,
        purge_page_folders=purge,
        data=_xml_text(options.data),
        fsync=_bool(options.fsync),
        device_block_size=options.journal_device_block_size,
        journal_tuning=journal_tuning,
        connectors=_connectors(options),
        page_sync=page_sync,
        global_max_size=global_max_size,
        global_max_messages=options.global_max_messages,
        acceptors=acceptors,
        cluster=_cluster(options),
        ha_policy=_ha_policy(options),
        role=quoteattr(options.role)[1:-1],
        full_policy="PAGE" if options.paging else "BLOCK",
        auto_create=_bool(options.auto_create),
        auto_delete=_bool(options.auto_delete),
        addresses=_addresses(options),
    )


def render_login_config(options: CreateOptions) -> str:
    """``etc/login.config``: domain ``activemq``; a guest module with ``allow_anonymous``."""
    if options.allow_anonymous:
        return _template("login-with-guest.config").substitute(user=options.user, role=options.role)
    return _template("login-without-guest.config").substitute()


def _properties_escape(text: str, *, key: bool) -> str:
    """Escape for a Java properties file (keys also escape separators and leading comments)."""
    out = []
    for index, character in enumerate(text):
        if character == "\\":
            out.append("\\\\")
        elif key and (character in " =:" or (index == 0 and character in "#!")):
            out.append("\\" + character)
        elif character == "\t":
            out.append("\\t")
        elif index == 0 and character == " ":
            out.append("\\ ")
        else:
            out.append(character)
    return "".join(out)


def render_users(options: CreateOptions, *, hashed_password: str | None = None) -> str:
    """``etc/artemis-users.properties``: ``<user> = ENC(...)`` (hashed unless one is given)."""
    stored = hashed_password if hashed_password is not None else hash_password(options.password)
    return _template("artemis-users.properties").substitute(
        user=_properties_escape(options.user, key=True),
        password=_properties_escape(stored, key=False),
    )


def render_roles(options: CreateOptions) -> str:
    """``etc/artemis-roles.properties``: ``<role> = <user>``."""
    return _template("artemis-roles.properties").substitute(
        role=_properties_escape(options.role, key=True),
        user=_properties_escape(options.user, key=False),
    )


def render_bootstrap(etc_directory: Path) -> str:
    """``etc/bootstrap.xml`` naming the JAAS domain and the absolute broker.xml URI."""
    uri = (etc_directory.absolute() / "broker.xml").as_uri()
    return _template("bootstrap.xml").substitute(broker_xml_uri=quoteattr(uri)[1:-1])


def _sh_quote(text: str) -> str:
    """Quote for POSIX sh, always with single quotes (an embedded ' becomes '\\'')."""
    return "'" + text.replace("'", "'\\''") + "'"


def render_launcher(instance_directory: Path, python: str) -> str:
    """``bin/pybroker``: set PYBROKER_INSTANCE and exec ``python -m pybroker "$@"``."""
    return _template("pybroker.sh").substitute(
        instance=_sh_quote(str(instance_directory)), python=_sh_quote(python)
    )


# --------------------------------------------------------------------------------------------
# writing


def _write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` crash-atomically: temporary file, fsync, rename, fsync the directory."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _check_target(directory: Path, force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    if directory.is_dir():
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"the directory {directory} is not writable")
        if not force and any(directory.iterdir()):
            raise ConfigError(
                f"the directory {directory} is not empty; pass --force to overwrite the "
                "instance's configuration files (data/ is kept)"
            )


def create_instance(
    directory: str | os.PathLike[str],
    options: CreateOptions,
    *,
    force: bool = False,
    python: str | None = None,
) -> CreatedInstance:
    """Write a broker instance into ``directory`` (created if missing) and return its paths.

    ``force`` allows a non-empty directory and overwrites the configuration files and launcher;
    other files (``data/``, ``log/``) are left as they are. ``python`` is the interpreter the
    launcher execs (default: the one running now, absolute). Raises ConfigError for bad options
    or an unusable directory; nothing is written then.
    """
    check_options(options)
    instance = Path(os.path.abspath(directory))
    _check_target(instance, force)
    interpreter = os.path.abspath(python if python is not None else sys.executable)

    notes: list[str] = []
    if options.is_clustered and not options.static_cluster:
        notes.append(
            "pybroker has no UDP discovery: no cluster-connection was written. Add "
            "--static-cluster tcp://<peer>:<port> so a backup can announce itself and "
            "failback can happen."
        )

    broker_xml = render_broker_xml(options)
    users = render_users(options)

    try:
        instance.mkdir(parents=True, exist_ok=True)
        for name in _EMPTY_DIRECTORIES:
            (instance / name).mkdir(exist_ok=True)
        data = Path(options.data)
        (data if data.is_absolute() else instance / data).mkdir(parents=True, exist_ok=True)
        etc = instance / "etc"
        _write_file(etc / "broker.xml", broker_xml)
        _write_file(etc / "bootstrap.xml", render_bootstrap(etc))
        _write_file(etc / "login.config", render_login_config(options))
        _write_file(etc / "artemis-users.properties", users)
        _write_file(etc / "artemis-roles.properties", render_roles(options))
        launcher = instance / "bin" / "pybroker"
        _write_file(launcher, render_launcher(instance, interpreter), mode=0o755)
    except OSError as error:
        raise ConfigError(f"cannot write the instance: {error}", file=str(instance)) from error
    return CreatedInstance(instance, launcher, etc / "broker.xml", tuple(notes))


# --------------------------------------------------------------------------------------------
# the click command


def _usage_error(message: str) -> click.UsageError:
    return click.UsageError(message)


class _Values:
    """Typed access to the option values click passes as keyword arguments."""

    def __init__(self, values: dict[str, object]) -> None:
        self._values = values

    def optional(self, key: str) -> str | None:
        value = self._values[key]
        return None if value is None else str(value)

    def text(self, key: str) -> str:
        return str(self._values[key])

    def integer(self, key: str) -> int:
        value = self._values[key]
        if not isinstance(value, int):
            raise TypeError(f"option {key!r} is not an integer: {value!r}")
        return value

    def flag(self, key: str) -> bool:
        return bool(self._values[key])


def _ignored_notes(values: dict[str, object]) -> Iterable[str]:
    for key, (flag, reason) in IGNORED_FLAGS.items():
        value = values.get(key)
        if value not in (None, False):
            yield f"{flag} ignored: {reason}."


@click.command(name="create")
@click.argument("directory", type=click.Path(file_okay=True, dir_okay=True, path_type=Path))
@click.option("--name", help="Broker name. Default: the host (the announced host when clustered).")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Acceptor host.")
@click.option(
    "--default-port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    help="Port of the 'artemis' acceptor.",
)
@click.option(
    "--port-offset", type=int, default=0, show_default=True, help="Added to every acceptor port."
)
@click.option(
    "--data",
    default=DEFAULT_DATA,
    show_default=True,
    help="Data directory, relative to the instance unless absolute.",
)
@click.option("--user", help="The user to create (required: pybroker create never prompts).")
@click.option("--password", help="That user's password (required: no prompt); stored hashed.")
@click.option("--role", default=DEFAULT_ROLE, show_default=True, help="The user's role.")
@click.option(
    "--allow-anonymous/--require-login",
    "allow_anonymous",
    default=None,
    help="Let connections without credentials in as the user. Default: require login.",
)
@click.option("--shared-store", is_flag=True, help="Shared-store HA: write <ha-policy>.")
@click.option("--backup", is_flag=True, help="Be the backup of a shared-store pair.")
@click.option("--slave", is_flag=True, hidden=True, help="Deprecated alias of --backup.")
@click.option(
    "--failover-on-shutdown",
    is_flag=True,
    help="A graceful stop lets the backup take over (shared store only).",
)
@click.option("--clustered", is_flag=True, help="Write the connector and cluster credentials.")
@click.option(
    "--static-cluster",
    "--staticCluster",
    "static_cluster",
    help="Peers, comma-separated: tcp://host:port,... (implies clustered).",
)
@click.option(
    "--cluster-user",
    default=DEFAULT_CLUSTER_USER,
    show_default=True,
    help="Cluster user (when clustered).",
)
@click.option(
    "--cluster-password",
    default=DEFAULT_CLUSTER_PASSWORD,
    show_default=True,
    help="Cluster password (when clustered).",
)
@click.option("--max-hops", type=int, default=DEFAULT_MAX_HOPS, show_default=True)
@click.option(
    "--message-load-balancing",
    default=DEFAULT_MESSAGE_LOAD_BALANCING,
    type=click.Choice(MESSAGE_LOAD_BALANCING_TYPES, case_sensitive=False),
    show_default=True,
)
@click.option("--no-amqp-acceptor", is_flag=True, help="Omit the 'amqp' acceptor (5672).")
@click.option("--no-stomp-acceptor", is_flag=True, help="Omit the 'stomp' acceptor (61613).")
@click.option("--no-hornetq-acceptor", is_flag=True, help="Omit the 'hornetq' acceptor (5445).")
@click.option("--no-mqtt-acceptor", is_flag=True, help="Omit the 'mqtt' acceptor (1883).")
@click.option("--disable-persistence", is_flag=True, help="persistence-enabled false.")
@click.option("--no-fsync", is_flag=True, help="journal-datasync false.")
@click.option("--aio", is_flag=True, help="journal-type ASYNCIO (the default).")
@click.option("--nio", is_flag=True, help="journal-type NIO (same pybroker journal).")
@click.option("--mapped", is_flag=True, help="journal-type MAPPED (same pybroker journal).")
@click.option(
    "--no-autotune",
    is_flag=True,
    help="Omit journal-buffer-timeout, journal-max-io and page-sync-timeout.",
)
@click.option(
    "--journal-device-block-size", type=int, default=DEFAULT_DEVICE_BLOCK_SIZE, show_default=True
)
@click.option("--journal-max-io", type=int, default=DEFAULT_JOURNAL_MAX_IO, show_default=True)
@click.option(
    "--paging/--blocking",
    "paging",
    default=True,
    show_default=True,
    help="address-full-policy PAGE or BLOCK.",
)
@click.option(
    "--autocreate/--no-autocreate",
    "auto_create",
    default=True,
    show_default=True,
    help="Auto-create addresses and queues.",
)
@click.option("--autodelete", is_flag=True, help="Auto-delete addresses and queues.")
@click.option("--global-max-size", help="global-max-size, e.g. 100Mb. Default: not written.")
@click.option("--global-max-messages", type=int, default=-1, show_default=True)
@click.option(
    "--purge-page-folders",
    is_flag=True,
    help="Remove page folders when an address leaves page mode.",
)
@click.option("--queues", help="Queues: name[:anycast|multicast],... (default anycast).")
@click.option("--addresses", help="Addresses: name[:anycast|multicast],... (default multicast).")
@click.option("--support-advisory", is_flag=True, help="OpenWire advisories flag on 'artemis'.")
@click.option(
    "--suppress-internal-management-objects",
    is_flag=True,
    help="OpenWire flag on the 'artemis' acceptor.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write into a non-empty directory, overwriting configuration files.",
)
@click.option("--java-memory", hidden=True)
@click.option("--no-web", is_flag=True, hidden=True)
@click.option("--http-host", hidden=True)
@click.option("--http-port", type=int, hidden=True)
@click.option("--security-manager", hidden=True)
@click.option("--silent", is_flag=True, hidden=True)
def create(directory: Path, **values: object) -> None:
    """Create a broker instance in DIRECTORY, shaped like one from `artemis create`.

    Artemis-only flags (--java-memory, --no-web, --http-host, --http-port,
    --security-manager, --silent) are accepted and ignored.
    """
    for option in ("user", "password"):
        if values[option] is None:
            raise _usage_error(
                f"Missing option '--{option}': pybroker create does not prompt "
                f"(artemis create would ask); give --{option} on the command line."
            )
    notes = list(_ignored_notes(values))
    allow_anonymous = values["allow_anonymous"]
    if allow_anonymous is None:
        allow_anonymous = False
        notes.append(
            "neither --allow-anonymous nor --require-login given: login is required "
            "(artemis create --silent would allow anonymous access)."
        )
    journal_types = [name for name in ("aio", "nio", "mapped") if values[name]]
    if len(journal_types) > 1:
        raise _usage_error("You can only select one journal type (--nio | --aio | --mapped).")
    journal_type = (
        {"aio": "ASYNCIO", "nio": "NIO", "mapped": "MAPPED"}[journal_types[0]]
        if journal_types
        else None
    )
    get = _Values(values)
    try:
        options = CreateOptions(
            user=get.text("user"),
            password=get.text("password"),
            name=get.optional("name"),
            host=get.text("host"),
            default_port=get.integer("default_port"),
            port_offset=get.integer("port_offset"),
            data=get.text("data"),
            role=get.text("role"),
            allow_anonymous=bool(allow_anonymous),
            shared_store=get.flag("shared_store"),
            backup=get.flag("backup") or get.flag("slave"),
            failover_on_shutdown=get.flag("failover_on_shutdown"),
            clustered=get.flag("clustered"),
            static_cluster=tuple(parse_static_cluster(get.optional("static_cluster"))),
            cluster_user=get.text("cluster_user"),
            cluster_password=get.text("cluster_password"),
            max_hops=get.integer("max_hops"),
            message_load_balancing=get.text("message_load_balancing").upper(),
            amqp_acceptor=not get.flag("no_amqp_acceptor"),
            stomp_acceptor=not get.flag("no_stomp_acceptor"),
            hornetq_acceptor=not get.flag("no_hornetq_acceptor"),
            mqtt_acceptor=not get.flag("no_mqtt_acceptor"),
            persistence_enabled=not get.flag("disable_persistence"),
            fsync=not get.flag("no_fsync"),
            journal_type=journal_type,
            autotune=not get.flag("no_autotune"),
            journal_device_block_size=get.integer("journal_device_block_size"),
            journal_max_io=get.integer("journal_max_io"),
            paging=get.flag("paging"),
            auto_create=get.flag("auto_create"),
            auto_delete=get.flag("autodelete"),
            global_max_size=get.optional("global_max_size"),
            global_max_messages=get.integer("global_max_messages"),
            purge_page_folders=get.flag("purge_page_folders"),
            queues=tuple(parse_destinations(get.optional("queues"), "anycast", "--queues")),
            addresses=tuple(
                parse_destinations(get.optional("addresses"), "multicast", "--addresses")
            ),
            support_advisory=get.flag("support_advisory"),
            suppress_internal_management_objects=get.flag("suppress_internal_management_objects"),
        )
        created = create_instance(directory, options, force=get.flag("force"))
    except ConfigError as error:
        raise _usage_error(str(error)) from None
    click.echo(f"Creating pybroker instance at: {created.directory}")
    for note in (*notes, *created.notes):
        click.echo(f"Note: {note}", err=True)
    click.echo("")
    click.echo("You can now start the broker by executing:")
    click.echo("")
    click.echo(f'   "{created.launcher}" run')
    click.echo("")


__all__ = [
    "CreateOptions",
    "CreatedInstance",
    "acceptor_urls",
    "check_options",
    "create",
    "create_instance",
    "own_connector_url",
    "parse_destinations",
    "parse_static_cluster",
    "render_bootstrap",
    "render_broker_xml",
    "render_launcher",
    "render_login_config",
    "render_roles",
    "render_users",
]
