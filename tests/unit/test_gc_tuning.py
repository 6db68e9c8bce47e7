"""Specs: the worker's garbage-collector tuning is applied while it runs and undone after."""

from __future__ import annotations

import gc

from workers.runtime.gc_tuning import OLDER_GENERATIONS, tuned_gc


def test_tuning_freezes_the_heap_and_raises_the_threshold_until_left() -> None:
    before = gc.get_threshold()
    with tuned_gc(40_000):
        assert gc.get_threshold() == (40_000, *OLDER_GENERATIONS)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_nested_workers_share_one_tuning_restored_by_the_last_to_leave() -> None:
    before = gc.get_threshold()
    with tuned_gc(40_000):
        with tuned_gc(10_000):  # a second worker in the same process
            assert gc.get_threshold()[0] == 40_000
        assert gc.get_threshold()[0] == 40_000  # the first still runs
    assert gc.get_threshold() == before


def test_threshold_zero_leaves_the_collector_alone() -> None:
    before = gc.get_threshold()
    with tuned_gc(0):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
