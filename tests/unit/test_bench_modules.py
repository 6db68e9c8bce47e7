"""`make bench` runs on demand, not in CI: at least every benchmark module must import, so a
moved helper breaks the suite instead of the next benchmark run."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench

MODULES = sorted(info.name for info in pkgutil.iter_modules(bench.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")


def test_the_suite_includes_every_scenario_module() -> None:
    assert {"overhead", "latency", "memory", "limits", "embeddings", "producer"} <= set(MODULES)
