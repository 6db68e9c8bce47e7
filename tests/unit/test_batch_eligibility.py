"""Which jobs the Batch-API lane takes: low priority with a deadline beyond the batch window
and the fallback margin, or any job on a prefer_batch route that leaves that much room."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.config import RouteConfig
from schemas.jobs import JobRequest, Priority
from workers.batch_lane.eligibility import batch_deployment

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def route(batch: bool = True, prefer: bool = False) -> RouteConfig:
    return RouteConfig.model_validate(
        {
            "kind": "chat",
            "prefer_batch": prefer,
            "deployments": [
                {"provider": "p", "model": "online"},
                {"provider": "p", "model": "batched", "batch": batch},
            ],
        }
    )


def job(hours: float | None, priority: Priority | None = None) -> JobRequest:
    return JobRequest.model_validate(
        {
            "job_id": "j",
            "tenant": "t",
            "kind": "chat",
            "route": "r",
            "messages": [{"role": "user", "content": "x"}],
            "priority": priority,
            "deadline": None if hours is None else (NOW + timedelta(hours=hours)).isoformat(),
        }
    )


@pytest.mark.parametrize(
    ("hours", "priority", "lane", "prefer", "batched"),
    [
        (48, None, Priority.LOW, False, True),  # low lane, deadline two days away
        (48, Priority.LOW, Priority.NORMAL, False, True),  # the job's own priority wins
        (24.5, None, Priority.LOW, False, False),  # no room for the online fallback
        (None, None, Priority.LOW, False, False),  # no deadline: not known to tolerate a day
        (48, None, Priority.NORMAL, False, False),
        (None, None, Priority.HIGH, True, True),  # prefer_batch: whatever the lane
        (2, None, Priority.HIGH, True, False),  # …unless the deadline is near
    ],
)
def test_which_jobs_are_batched(
    hours: float | None, priority: Priority | None, lane: Priority, prefer: bool, batched: bool
) -> None:
    chosen = batch_deployment(job(hours, priority), route(prefer=prefer), lane, NOW)
    assert (chosen is not None) == batched
    if chosen is not None:
        assert chosen.model == "batched"


def test_a_route_without_a_batch_deployment_runs_online() -> None:
    assert batch_deployment(job(48), route(batch=False, prefer=True), Priority.LOW, NOW) is None
