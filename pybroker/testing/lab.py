"""The seed lab's hand edits of broker.xml, done the way a lab user does them: by editing text.

The lab creates two instances (``master`` and ``slave``, the slave with ``--port-offset 1``),
then in each broker.xml points the four data directories at a shared store, adds two
connectors, cluster credentials, a static cluster connection and a shared-store ha-policy.
:func:`apply_lab_edits` does exactly that to a created instance, so end-to-end HA tests start
from the same files a lab user would have.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Literal

from lxml import etree

from pybroker.errors import ConfigError

LAB_DIRECTORIES = {
    "paging-directory": "data/paging",
    "bindings-directory": "data/bindings",
    "journal-directory": "data/journal",
    "large-messages-directory": "data/large-messages",
}
# Elements the lab adds; any existing ones are removed first (so the edit can be re-applied and
# works on an instance created with --shared-store or --static-cluster).
LAB_REPLACED_ELEMENTS = (
    "connectors",
    "cluster-user",
    "cluster-password",
    "broadcast-groups",
    "discovery-groups",
    "cluster-connections",
    "ha-policy",
)

_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def lab_snippet(
    role: Literal["master", "slave"],
    ports: tuple[int, int] = (61616, 61617),
    *,
    shared_store: str = "../sharedstore",
) -> str:
    """The text the lab inserts into ``<core>`` for ``role``.

    ``ports`` are (master port, slave port). The master's ``netty-connector`` is its own port
    and ``netty-backup-connector`` the slave's; the slave has them swapped. The master is
    ``<master><failover-on-shutdown>true``; the slave ``<slave>`` with ``allow-failback`` and
    ``failover-on-shutdown`` true (so a stopped slave hands back to a restarted master).
    """
    if role not in ("master", "slave"):
        raise ValueError(f"role must be 'master' or 'slave', not {role!r}")
    own, other = ports if role == "master" else (ports[1], ports[0])
    if role == "master":
        policy = "<master><failover-on-shutdown>true</failover-on-shutdown></master>"
    else:
        policy = (
            "<slave><allow-failback>true</allow-failback>"
            "<failover-on-shutdown>true</failover-on-shutdown></slave>"
        )
    directories = "".join(
        f"      <{element}>{shared_store}/{path}</{element}>\n"
        for element, path in LAB_DIRECTORIES.items()
    )
    return (
        directories
        + "      <connectors>\n"
        + f'         <connector name="netty-connector">tcp://localhost:{own}</connector>\n'
        + f'         <connector name="netty-backup-connector">tcp://localhost:{other}</connector>\n'
        + "      </connectors>\n"
        + "      <cluster-user>cluster-admin</cluster-user>\n"
        + "      <cluster-password>password-admin</cluster-password>\n"
        + '      <cluster-connections><cluster-connection name="my-cluster">'
        + "<connector-ref>netty-connector</connector-ref>\n"
        + "        <retry-interval>500</retry-interval>"
        + "<use-duplicate-detection>true</use-duplicate-detection>\n"
        + "        <message-load-balancing>STRICT</message-load-balancing>"
        + "<max-hops>1</max-hops>\n"
        + "        <static-connectors><connector-ref>netty-backup-connector</connector-ref>"
        + "</static-connectors>\n"
        + "      </cluster-connection></cluster-connections>\n"
        + f"      <ha-policy><shared-store>{policy}</shared-store></ha-policy>\n"
    )


def _outside_comments(text: str, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    comments = [match.span() for match in _COMMENT.finditer(text)]
    return [
        match
        for match in pattern.finditer(text)
        if not any(start <= match.start() < end for start, end in comments)
    ]


def _remove_elements(text: str, tag: str) -> str:
    pattern = re.compile(
        rf"[ \t]*<{re.escape(tag)}(?:\s[^>]*?)?(?:/>|>.*?</{re.escape(tag)}\s*>)[ \t]*\n?",
        re.DOTALL,
    )
    for match in reversed(_outside_comments(text, pattern)):
        text = text[: match.start()] + text[match.end() :]
    return text


def edit_broker_xml_text(
    text: str,
    role: Literal["master", "slave"],
    ports: tuple[int, int] = (61616, 61617),
    *,
    shared_store: str = "../sharedstore",
) -> str:
    """Return ``text`` with the lab edits applied (see :func:`apply_lab_edits`)."""
    snippet = lab_snippet(role, ports, shared_store=shared_store)
    for tag in (*LAB_DIRECTORIES, *LAB_REPLACED_ELEMENTS):
        text = _remove_elements(text, tag)
    closers = _outside_comments(text, re.compile(r"[ \t]*</core\s*>"))
    if len(closers) != 1:
        raise ConfigError(f"expected one </core> in broker.xml, found {len(closers)}")
    at = closers[0].start()
    return text[:at] + snippet + text[at:]


def _write_atomically(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), os.stat(path).st_mode & 0o7777)
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


def apply_lab_edits(
    broker_xml_path: str | os.PathLike[str],
    role: Literal["master", "slave"],
    ports: tuple[int, int] = (61616, 61617),
    *,
    shared_store: str = "../sharedstore",
) -> str:
    """Edit a created instance's broker.xml as the seed lab says, in place; return the new text.

    The four data directories move to ``<shared_store>/data/...`` (relative to the instance),
    any existing connectors, cluster credentials, cluster connections, broadcast/discovery
    groups and ha-policy are removed, and the lab's versions are inserted before ``</core>``.
    ``ports`` are (master port, slave port). Raises ConfigError if the result is not
    well-formed XML (the original is then left untouched).
    """
    path = Path(broker_xml_path)
    text = edit_broker_xml_text(
        path.read_text(encoding="utf-8"), role, ports, shared_store=shared_store
    )
    try:
        etree.fromstring(
            text.encode("utf-8"),
            etree.XMLParser(resolve_entities=False, no_network=True),
        )
    except etree.XMLSyntaxError as error:
        raise ConfigError(
            f"lab edits made broken XML: {error}", file=str(path), line=error.lineno
        ) from None
    _write_atomically(path, text)
    return text


__all__ = ["apply_lab_edits", "edit_broker_xml_text", "lab_snippet"]
