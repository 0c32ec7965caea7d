"""Shared helpers for the configuration tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def wrap_core(body: str) -> str:
    """A broker.xml whose <core> holds ``body``."""
    return (
        '<?xml version="1.0"?>\n'
        '<configuration xmlns="urn:activemq">\n'
        '  <core xmlns="urn:activemq:core">\n'
        f"{body}\n"
        "  </core>\n"
        "</configuration>\n"
    )


@pytest.fixture
def core_xml() -> Callable[[str], str]:
    """``core_xml(body)`` -> a complete broker.xml text."""
    return wrap_core


@pytest.fixture
def create_xml_text() -> str:
    """The create-style broker.xml of the fixtures folder."""
    return (FIXTURES / "create-master-broker.xml").read_text(encoding="utf-8")


@pytest.fixture
def with_in_core() -> Callable[[str, str], str]:
    """``with_in_core(xml, snippet)`` -> ``xml`` with ``snippet`` inserted before ``</core>``."""

    def insert(xml: str, snippet: str) -> str:
        return re.sub(r"(\s*</core>)", "\n" + snippet.replace("\\", "\\\\") + r"\1", xml,
                      count=1)

    return insert


def _line_of(text: str, needle: str) -> int:
    index = text.index(needle)
    return text.count("\n", 0, index) + 1


@pytest.fixture
def line_of() -> Callable[[str, str], int]:
    """``line_of(text, needle)`` -> the 1-based line of the first ``needle`` in ``text``."""
    return _line_of
