"""Chaos scenarios: processes killed, providers and the database taken away, garbage fed in.

`make test` runs them at bounded sizes; `make chaos` (``HEADWAY_CHAOS_FULL=1``) at the full
sizes of docs/reliability.md. Each test reports its figures through the ``figures`` fixture:
printed, and appended as a JSON line to ``HEADWAY_CHAOS_REPORT`` when that is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FULL = os.environ.get("HEADWAY_CHAOS_FULL") == "1"


def size(bounded: int, full: int) -> int:
    """The bounded size in `make test`, the full one in `make chaos`."""
    return full if FULL else bounded


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    def record(**values: Any) -> None:
        line = {"test": request.node.name, "full": FULL, **values}
        print(f"\nFIGURES {json.dumps(line)}")
        target = os.environ.get("HEADWAY_CHAOS_REPORT")
        if target:
            with open(target, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")

    return record
