"""The collaborators of a job's path, in the groups :class:`JobPipeline` takes them.

Built once, by the composition root (:mod:`workers.runtime.wiring`); the pipeline builds
nothing itself, so a test hands it fakes of any group.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.settings import RetrySettings
from workers.admission.gate import Admission
from workers.audit.facts import Auditor
from workers.batch_lane.lane import BatchLane
from workers.calls.executor import Executor
from workers.calls.routing import Router
from workers.pipeline.cancellations import Cancellations
from workers.pipeline.claimants import Claimants
from workers.pipeline.parking import Parking
from workers.pipeline.preparation import Preparation
from workers.pipeline.replays import ReplayCheck
from workers.pipeline.response_cache import ResponseCache
from workers.settle.poison import PoisonPath
from workers.settle.settlement import Settlement
from workers.telemetry.metrics import Metrics
from workers.telemetry.tracing import Tracing


@dataclass(frozen=True, slots=True)
class Checks:
    """Whether, and how, a job may run: access, templates and guardrails (preparation),
    cancels, genuine replays, the response cache, admission, one claimant per job; and what
    its audit record keeps of the request."""

    preparation: Preparation
    cancellations: Cancellations
    replays: ReplayCheck | None  # None: a replay header is never honoured
    cache: ResponseCache
    admission: Admission
    claimants: Claimants
    auditor: Auditor


@dataclass(frozen=True, slots=True)
class Calls:
    """Calling providers: the route's plan, the calls, and when a wait parks the job."""

    router: Router
    executor: Executor
    retry: RetrySettings


@dataclass(frozen=True, slots=True)
class Endings:
    """Where a job's path ends: settled (stored, published), parked, dead-lettered, or handed
    to the provider Batch-API lane (None: no deployment has ``batch = true``)."""

    settlement: Settlement
    parking: Parking
    poison: PoisonPath
    batch_lane: BatchLane | None


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What the pipeline tells operators: metrics and the job's trace."""

    metrics: Metrics
    tracing: Tracing
