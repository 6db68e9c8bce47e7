"""Which jobs the provider Batch-API lane takes (docs/batch-lane.md).

A job goes through a provider's Batch API when its route has a deployment with ``batch =
true`` and either the job is ``low`` priority with a deadline at least ``BATCH_WINDOW_S`` plus
the fallback margin away, or the route sets ``prefer_batch`` — and even then only when its
deadline (if any) leaves the batch window and the margin, so that an item the provider does
not finish can still run online in time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from broker.config import DeploymentConfig, RouteConfig
from broker.settings import BatchLaneSettings
from schemas.jobs import JobRequest, Priority

BATCH_WINDOW_S = 24 * 3600.0  # the providers' completion window
#: time left for the online path when a batch item comes back undone
FALLBACK_MARGIN_S = BatchLaneSettings.margin_s


def batch_deployment(
    job: JobRequest,
    route: RouteConfig,
    lane: Priority,
    now: datetime,
    margin_s: float = FALLBACK_MARGIN_S,
    deployments: Sequence[DeploymentConfig] | None = None,
) -> DeploymentConfig | None:
    """The deployment to batch the job on, or None (it runs online). ``deployments``: those
    of the route that can take the job (default: all of them)."""
    candidates = route.deployments if deployments is None else deployments
    deployment = next((d for d in candidates if d.batch), None)
    if deployment is None:
        return None
    room_s = (job.deadline - now).total_seconds() if job.deadline is not None else None
    fits = room_s is None or room_s >= BATCH_WINDOW_S + margin_s
    if route.prefer_batch:
        return deployment if fits else None
    priority = job.priority or lane
    if priority is Priority.LOW and room_s is not None and fits:
        return deployment
    return None
