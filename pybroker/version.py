"""The installed pybroker version (``0`` when running from a source tree without metadata)."""

from __future__ import annotations


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pybroker")
    except Exception:  # noqa: BLE001 - no distribution metadata
        return "0"


VERSION = _version()
