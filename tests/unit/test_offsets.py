"""Commits never pass an unfinished offset, whatever order jobs finish in."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from workers.intake.offsets import OffsetTracker, PartitionOffsets

TP = TopicPartition("jobs", 0)


def test_the_commit_point_is_the_first_unfinished_offset() -> None:
    p = PartitionOffsets()
    for offset in range(10, 15):
        p.add(offset)
    assert p.commit_point() == 10
    p.done(12)
    p.done(11)
    assert p.commit_point() == 10
    p.done(10)
    assert p.commit_point() == 13
    p.done(13)
    p.done(14)
    assert p.commit_point() == 15


def test_gaps_in_offsets_are_fine() -> None:
    p = PartitionOffsets()
    for offset in (3, 7, 20):
        p.add(offset)
    p.done(7)
    assert p.commit_point() == 3
    p.done(3)
    assert p.commit_point() == 20


def test_the_tracker_reports_only_moved_points_and_forgets_revoked_partitions() -> None:
    tracker = OffsetTracker()
    tracker.assign({TP})
    tracker.add(TP, 0)
    tracker.add(TP, 1)
    tracker.done(TP, 0)
    assert tracker.to_commit() == {TP: 1}
    tracker.committed({TP: 1})
    assert tracker.to_commit() == {}
    tracker.forget({TP})
    tracker.done(TP, 1)  # a late finish after revocation is ignored
    assert tracker.to_commit() == {}


@given(st.permutations(list(range(50))), st.integers(min_value=0, max_value=50))
def test_commit_never_passes_an_unfinished_offset(order: list[int], finished: int) -> None:
    p = PartitionOffsets()
    for offset in range(50):
        p.add(offset)
    done = set(order[:finished])
    for offset in order[:finished]:
        p.done(offset)
    point = p.commit_point()
    assert point is not None
    assert all(offset in done for offset in range(point))
    assert point == 50 or point not in done
