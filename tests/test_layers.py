"""Imports flow one way (DESIGN.md §1): config -> journal -> storage -> broker -> protocol/transport
-> ha/cluster -> management/cli. A module may import its own layer and the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pybroker"

LAYERS = {
    "errors": 0,
    "version": 0,
    "config": 1,
    "journal": 2,
    "storage": 3,
    "broker": 4,
    "protocol": 5,
    "transport": 5,
    "ha": 6,
    "cluster": 6,
    "embedded": 7,
    "testing": 8,
    "management": 8,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "pybroker":
        return None
    if len(parts) == 1:
        return LAYERS["__init__"]
    return LAYERS.get(parts[1])


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, node.lineno, False))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno, False))
    # imports under `if TYPE_CHECKING:` are annotations only
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            lines = {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
            found = [(m, line, checking or line in lines) for m, line, checking in found]
    return found


def test_every_package_has_a_layer():
    for child in PACKAGE.iterdir():
        name = child.stem if child.suffix == ".py" else child.name
        if child.name.startswith((".", "_")) and name not in ("__init__", "__main__"):
            continue
        if child.is_dir() and not (child / "__init__.py").exists():
            continue
        assert name in LAYERS, f"{child} is not placed in a layer"


def test_imports_flow_one_way():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts)
        own = _layer(module if not module.endswith(".__init__") else module[: -len(".__init__")])
        if own is None:
            continue
        for imported, line, type_only in _imports(path):
            target = _layer(imported)
            if target is None or type_only:
                continue
            if target > own:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert violations == []


def test_sans_io_modules_import_no_io():
    sans_io = [
        PACKAGE / "journal" / "framing.py",
        PACKAGE / "protocol" / "detect.py",
        PACKAGE / "protocol" / "amqp" / "codec.py",
        PACKAGE / "protocol" / "amqp" / "sasl.py",
        PACKAGE / "protocol" / "mqtt" / "codec.py",
        PACKAGE / "protocol" / "stomp" / "codec.py",
        PACKAGE / "protocol" / "stomp" / "frames.py",
    ]
    forbidden = {"asyncio", "socket", "os", "selectors", "threading"}
    for path in sans_io:
        if not path.exists():
            continue
        for imported, line, _ in _imports(path):
            assert imported.split(".")[0] not in forbidden, f"{path.name}:{line} imports {imported}"
