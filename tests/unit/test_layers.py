"""The layers as the folders draw them: ``broker/`` (the client side and what both sides share)
never imports ``workers/``, so a producer installs and imports no worker code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
    return names


def test_broker_never_imports_workers() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            n for n in imported(path) if n.split(".")[0] == "workers"
        )
        for path in (ROOT / "broker").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_schemas_import_neither_broker_nor_workers() -> None:
    for path in (ROOT / "schemas").rglob("*.py"):
        layers = {name.split(".")[0] for name in imported(path)}
        assert not layers & {"broker", "workers"}, path
