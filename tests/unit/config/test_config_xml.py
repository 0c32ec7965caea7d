"""Safe XML loading: entities refused, line numbers kept, ${property} substitution."""

from __future__ import annotations

import pytest

from pybroker.config import parse_config
from pybroker.config.xml import parse_document, substitute, substitute_properties
from pybroker.errors import ConfigError

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
<name>&lol9;</name>
</core></configuration>
"""


def test_billion_laughs_is_refused():
    with pytest.raises(ConfigError) as raised:
        parse_config(BILLION_LAUGHS, file="bomb.xml", instance_dir="/x")
    assert raised.value.file == "bomb.xml"
    assert "entit" in str(raised.value)
    assert "lol" in str(raised.value)
    assert raised.value.line == 3


def test_external_entity_file_is_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    text = f"""<?xml version="1.0"?>
<!DOCTYPE configuration [<!ENTITY xxe SYSTEM "file://{secret}">]>
<configuration xmlns="urn:activemq"><core xmlns="urn:activemq:core">
<name>&xxe;</name></core></configuration>"""
    with pytest.raises(ConfigError) as raised:
        parse_config(text, file="xxe.xml", instance_dir=tmp_path)
    assert "TOP-SECRET-MARKER" not in str(raised.value)
    assert "xxe" in str(raised.value)


def test_external_entity_in_attribute_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    text = f"""<!DOCTYPE core [<!ENTITY xxe SYSTEM "file://{secret}">]>
<core><acceptors><acceptor name="&xxe;">tcp://h:1</acceptor></acceptors></core>"""
    with pytest.raises(ConfigError) as raised:
        parse_config(text, instance_dir=tmp_path)
    assert "TOP-SECRET-MARKER" not in str(raised.value)


def test_undeclared_entity_reference_is_an_error():
    with pytest.raises(ConfigError) as raised:
        parse_document("<core>\n<name>&nope;</name></core>", file="b.xml")
    assert raised.value.line == 2


def test_doctype_without_entities_and_predefined_entities_are_fine():
    root = parse_document('<!DOCTYPE core [<!ELEMENT core ANY>]><core a="&lt;&amp;&#65;"/>',
                          file="b.xml")
    assert root.get("a") == "<&A"


def test_malformed_xml_names_the_line():
    with pytest.raises(ConfigError) as raised:
        parse_document("<core>\n<name>x</nam>\n</core>", file="broker.xml")
    assert raised.value.file == "broker.xml"
    assert raised.value.line == 2
    assert str(raised.value).startswith("broker.xml:2: malformed XML")


def test_empty_document():
    with pytest.raises(ConfigError, match="malformed XML"):
        parse_document("", file="b.xml")


def test_string_input_with_encoding_declaration():
    root = parse_document('<?xml version="1.0" encoding="UTF-8"?><core><name>é</name></core>',
                          file="b.xml")
    assert root[0].text == "é"


def test_comments_inside_text_are_removed():
    root = parse_document("<core><name>bro<!-- note -->ker</name></core>", file="b.xml")
    assert root[0].text == "broker"


def test_line_numbers_are_kept():
    root = parse_document("<core>\n\n<name>x</name>\n</core>", file="b.xml")
    assert root[0].sourceline == 3


# --------------------------------------------------------------------------------------------
# ${property} substitution


def sub(text, properties=None, environ=None):
    return substitute(text, properties, file="b.xml", line=4, element="name",
                      environ=environ or {})


def test_substitution_from_properties_then_environment():
    assert sub("${a}", {"a": "1"}, {"a": "env"}) == "1"
    assert sub("${a}", {}, {"a": "env"}) == "env"
    assert sub("x${a}y${b}z", {"a": "1", "b": "2"}) == "x1y2z"
    assert sub("${ a }", {"a": "1"}) == "1"


def test_substitution_defaults():
    assert sub("${a:fallback}") == "fallback"
    assert sub("${url:tcp://localhost:61616}") == "tcp://localhost:61616"
    assert sub("${a:}") == ""
    assert sub("${a:fallback}", {"a": "set"}) == "set"


def test_unresolved_property_is_an_error():
    with pytest.raises(ConfigError) as raised:
        sub("tcp://${host}:1")
    error = raised.value
    assert (error.file, error.line, error.element) == ("b.xml", 4, "name")
    assert "${host}" in str(error)


def test_text_without_properties_is_unchanged():
    assert sub("plain $ text {x}") == "plain $ text {x}"


def test_substitute_properties_in_text_and_attributes():
    root = parse_document('<core>\n<a k="${p}">${q:d}</a>\n<b>${p}</b></core>', file="b.xml")
    substitute_properties(root, {"p": "P"}, file="b.xml", environ={})
    assert root[0].get("k") == "P" and root[0].text == "d" and root[1].text == "P"


def test_substitute_properties_error_names_the_element():
    root = parse_document("<core>\n\n<journal-directory>${data}/journal</journal-directory>"
                          "</core>", file="b.xml")
    with pytest.raises(ConfigError) as raised:
        substitute_properties(root, None, file="b.xml", environ={})
    assert (raised.value.line, raised.value.element) == (3, "journal-directory")


def test_substitution_in_comments_is_ignored():
    config = parse_config("<core><!-- ${not.defined} --><name>n</name></core>",
                          instance_dir="/x")
    assert config.name == "n"


def test_environment_is_used_by_parse_config(monkeypatch):
    monkeypatch.setenv("PYBROKER_TEST_NAME", "from-env")
    config = parse_config("<core><name>${PYBROKER_TEST_NAME}</name></core>", instance_dir="/x")
    assert config.name == "from-env"


def test_parameter_entity_is_refused(tmp_path):
    text = (f'<!DOCTYPE core [<!ENTITY % remote SYSTEM "file://{tmp_path}/x.dtd"> %remote;]>'
            "<core/>")
    with pytest.raises(ConfigError, match="entity 'remote'"):
        parse_document(text, file="b.xml")
