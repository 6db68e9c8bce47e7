"""docs/security.md is the threat model, and every boundary in it names the spec that proves it:
each spec it names exists, so a row cannot point at a test that was renamed or never written."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
#: a spec as the doc names it: `tests/x/test_y.py`, `test_y.py`, optionally `::test_name` (a
#: trailing `…` abbreviates the name); a bare `::test_name` is in the file named before it
SPEC = re.compile(r"`((?:tests/[\w/]+/)?test_\w+\.py)?(?:::(\w+)(…)?)?`")


def _tables(text: str, heading: str) -> list[list[str]]:
    """The rows of the tables under ``heading`` (to the next heading of its level), split."""
    section = text.split(heading, 1)[1]
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|") and not re.match(r"\|\s*-", line)
    ][1:]


def _test_file(name: str) -> Path:
    if "/" in name:
        return ROOT / name
    found = sorted(ROOT.glob(f"tests/**/{name}"))
    assert len(found) == 1, f"{name}: {len(found)} files of that name under tests/"
    return found[0]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def _named_specs(cell: str) -> list[tuple[str, str | None, bool]]:
    specs: list[tuple[str, str | None, bool]] = []
    for match in SPEC.finditer(cell):
        if match[1] is None and match[2] is None:
            continue  # some other code span
        file = match[1] or (specs[-1][0] if specs else "")
        assert file, f"{match[0]} names no file before it"
        specs.append((file, match[2] or None, bool(match[3])))
    return specs


def test_every_surface_names_specs_that_exist() -> None:
    rows = _tables(DOC.read_text(), "## Surfaces")
    assert len(rows) >= 15, "the surfaces table lost rows"
    for row in rows:
        surface, spec = row[0], row[-1]
        specs = _named_specs(spec)
        assert specs or spec == "—", f"{surface}: names no spec"
        for file, name, abbreviated in specs:
            path = _test_file(file)
            assert path.is_file(), f"{surface}: {file} does not exist"
            if name is None:
                assert _test_names(path), f"{surface}: {file} holds no test"
                continue
            names = _test_names(path)
            matches = [n for n in names if n == name or (abbreviated and n.startswith(name))]
            assert matches, f"{surface}: {file}::{name} does not exist"


def test_every_finding_of_the_second_review_has_a_spec_that_exists() -> None:
    rows = _tables(DOC.read_text(), "## Issue 33")
    assert [row[0] for row in rows] == [str(n) for n in range(1, 17)]
    for row in rows:
        specs = _named_specs(row[-1])
        assert specs, f"finding {row[0]}: names no spec"
        for file, name, abbreviated in specs:
            names = _test_names(_test_file(file))
            assert name is None or any(
                n == name or (abbreviated and n.startswith(name)) for n in names
            ), f"finding {row[0]}: {file}::{name} does not exist"
