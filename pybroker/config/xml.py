"""Safe XML loading for broker.xml: no entities, no network, line numbers kept.

:func:`parse_document` returns the lxml root with comments and processing instructions
removed. It refuses any DOCTYPE that declares entities and any entity reference, so neither a
"billion laughs" document nor an external entity (``SYSTEM "file:///..."``) is ever expanded or
read. :func:`substitute_properties` then replaces ``${name}`` and ``${name:default}`` in every
text and attribute, in place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from lxml import etree

from pybroker.errors import ConfigError

XINCLUDE_NS = "http://www.w3.org/2001/XInclude"

_PROPERTY = re.compile(r"\$\{([^}]*)\}")
_ENTITY_DECLARATION = re.compile(rb"<!ENTITY\s+(?:%\s+)?([^\s>]*)")


def _parser() -> etree.XMLParser:
    # A new parser each call: lxml parsers are not thread-safe.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def local_name(element: etree._Element) -> str:
    """The element's tag without its namespace."""
    return etree.QName(element).localname


def namespace(element: etree._Element) -> str | None:
    """The element's namespace URI, or None."""
    return etree.QName(element).namespace


def child_elements(element: etree._Element) -> list[etree._Element]:
    """The element children of ``element`` (comments and PIs are already gone)."""
    return [child for child in element if isinstance(child.tag, str)]


def text_of(element: etree._Element) -> str:
    """The element's own text, stripped (the text before its first child)."""
    return (element.text or "").strip()


def parse_document(data: bytes | str, *, file: str) -> etree._Element:
    """Parse ``data`` and return the root element; refuse entities and DTD tricks.

    Raises :class:`ConfigError` with the file and line for malformed XML, for a DOCTYPE that
    declares entities and for any entity reference.
    """
    if isinstance(data, str):
        # lxml refuses str input that carries an encoding declaration; encode it ourselves.
        data = data.encode("utf-8")
    # Refuse entity declarations before libxml2 sees them, so no libxml2 version or limit
    # decides whether a "billion laughs" is expanded.
    declaration = _ENTITY_DECLARATION.search(data)
    if declaration is not None:
        line = data.count(b"\n", 0, declaration.start()) + 1
        name = declaration.group(1).decode("utf-8", "replace")
        raise ConfigError(
            f"DOCTYPE declares entity {name!r}; entity declarations are refused in broker "
            "configuration", file=file, line=line)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as error:
        line = error.lineno if error.lineno else None
        raise ConfigError(f"malformed XML: {error.msg}", file=file, line=line) from None
    if root is None:
        raise ConfigError("empty document", file=file)
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None:
        entities = [entity.name for entity in dtd.iterentities()]
        if entities:
            raise ConfigError(
                "DOCTYPE declares entities (" + ", ".join(sorted(entities)) + "); "
                "entity declarations are refused in broker configuration",
                file=file,
                line=1,
            )
    for node in root.iter(etree.Entity):
        raise ConfigError(
            f"entity reference {node.text} is refused in broker configuration",
            file=file,
            line=node.sourceline,
        )
    return root


def substitute(
    text: str,
    properties: Mapping[str, str] | None,
    *,
    file: str,
    line: int | None,
    element: str | None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Replace ``${name}`` / ``${name:default}`` in ``text``.

    Looks ``name`` up in ``properties`` first, then in the environment; a reference with
    neither a value nor a default raises :class:`ConfigError` naming the place.
    """
    if "${" not in text:
        return text
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        body = match.group(1)
        name, has_default, default = body.partition(":")
        name = name.strip()
        if properties is not None and name in properties:
            return str(properties[name])
        if name in env:
            return env[name]
        if has_default:
            return default.strip()
        raise ConfigError(
            f"unresolved property ${{{name}}}: pass it as a property or set the "
            f"environment variable {name}, or write ${{{name}:default}}",
            file=file,
            line=line,
            element=element,
        )

    return _PROPERTY.sub(replace, text)


def substitute_properties(
    root: etree._Element,
    properties: Mapping[str, str] | None,
    *,
    file: str,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Apply :func:`substitute` to every text, tail and attribute under ``root``, in place."""
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        name = local_name(element)
        line = element.sourceline
        if element.text and "${" in element.text:
            element.text = substitute(element.text, properties, file=file, line=line,
                                      element=name, environ=environ)
        if element.tail and "${" in element.tail:
            element.tail = substitute(element.tail, properties, file=file, line=line,
                                      element=name, environ=environ)
        for key, value in element.attrib.items():
            if "${" in value:
                element.set(key, substitute(value, properties, file=file, line=line,
                                            element=name, environ=environ))


def find_xincludes(root: etree._Element) -> list[etree._Element]:
    """Every ``xi:include`` element under ``root`` (pybroker does not process them)."""
    return [
        element
        for element in root.iter()
        if isinstance(element.tag, str)
        and namespace(element) == XINCLUDE_NS
        and local_name(element) == "include"
    ]


__all__ = [
    "child_elements",
    "find_xincludes",
    "local_name",
    "namespace",
    "parse_document",
    "substitute",
    "substitute_properties",
    "text_of",
]
