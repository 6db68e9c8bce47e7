"""The folders of ``workers/`` are the stages of a job's path, and docs/architecture.md's module
map is what is on disk: at most three files at the top, about eight modules a folder, and
the map regenerated from the modules' own first docstring lines.

``python -m tests.unit.test_layout`` prints the map to paste between its markers."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
WORKERS = ROOT / "workers"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- module map: begin -->", "<!-- module map: end -->"
MAX_MODULES = 9  # "about eight"
SUMMARY_CHARS = 96
#: the folders in the order a job meets them, then the tools around them
ORDER = [
    "runtime",
    "intake",
    "pipeline",
    "templates",
    "content",
    "guardrails",
    "admission",
    "calls",
    "providers",
    "batch_lane",
    "settle",
    "ledger",
    "audit",
    "telemetry",
    "cli",
    "devstack",
]


def _summary(path: Path) -> str:
    """The docstring's first sentence, on one line."""
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(docstring.split("\n\n")[0].split()).replace("``", "`")
    sentence = paragraph.split(". ")[0]
    if len(sentence) > SUMMARY_CHARS:
        return sentence[:SUMMARY_CHARS].rsplit(" ", 1)[0] + " …"
    return sentence if sentence.endswith(".") or sentence == paragraph else sentence + "."


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))


def _folders(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and (d / "__init__.py").exists())


def module_map() -> str:
    lines = ["```"]

    def folder(path: Path, depth: int) -> None:
        name = str(path.relative_to(WORKERS)) + "/"
        lines.append(f"{'  ' * depth}{name:<18} {_summary(path / '__init__.py')}")
        for module in _modules(path):
            lines.append(f"{'  ' * (depth + 1)}{module.stem:<16} {_summary(module)}")
        for sub in _folders(path):
            folder(sub, depth + 1)

    for name in ORDER:
        folder(WORKERS / name, 0)
    lines.append("```")
    return "\n".join(lines)


def test_the_top_of_workers_holds_only_the_package_files() -> None:
    top = sorted(p.name for p in WORKERS.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"]


def test_every_stage_folder_is_in_the_map_and_none_is_crowded() -> None:
    assert sorted(ORDER) == sorted(d.name for d in _folders(WORKERS))
    crowded = {
        str(d.relative_to(WORKERS)): len(_modules(d))
        for d in [*_folders(WORKERS), *(s for d in _folders(WORKERS) for s in _folders(d))]
        if len(_modules(d)) > MAX_MODULES
    }
    assert crowded == {}


def test_every_module_says_what_it_is_in_its_first_line() -> None:
    silent = [str(p.relative_to(ROOT)) for p in WORKERS.rglob("*.py") if not _summary(p)]
    assert silent == []


def test_the_architecture_doc_carries_the_current_module_map() -> None:
    text = DOC.read_text()
    assert BEGIN in text and END in text
    current = text.split(BEGIN)[1].split(END)[0].strip()
    assert current == module_map(), (
        "docs/architecture.md's module map is out of date: "
        "python -m tests.unit.test_layout prints the current one"
    )


if __name__ == "__main__":
    print(module_map())
