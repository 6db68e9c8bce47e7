"""Route → the deployments to try for this job, best first.

- ``ordered``: the config's order, failing over down the list;
- ``cheapest``: by the estimated cost of *this* job (its billed input, estimated — see
  ``workers/calls/tokens.py`` — × input price + its output allowance × output price);
- ``weighted``: one deployment drawn by weight, stable per (tenant, job_id) so a redelivered
  job takes the same one, then the others by weight;
- ``fastest``: by the latency EWMA of recent calls (an untried deployment counts as fastest,
  so it gets tried).

Whatever the strategy, deployments that can take a call now (circuit closed or probing, no
Retry-After pause) come before those that cannot, and a job's ``max_cost_usd`` removes every
deployment whose estimated cost exceeds it — none left is a ``cost_limit_exceeded`` rejection.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.config import DeploymentConfig, RouteConfig, Strategy
from schemas.jobs import JobRequest
from workers.calls import tokens
from workers.calls.health import HealthBoard
from workers.calls.limits import LimitBoard
from workers.calls.shared_pace import SharedPace
from workers.content.features import NOTHING, Capabilities, Needs, Unsupported


@dataclass(frozen=True, slots=True)
class CostLimited:
    """No deployment of the route fits the job's ``max_cost_usd``."""

    message: str


def stable_fraction(tenant: str, job_id: str) -> float:
    """A number in [0, 1) that depends only on the job's identity."""
    digest = hashlib.sha256(f"{tenant}\x00{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """What a worker knows about each deployment: its health (circuit, latency, pauses), its
    limits (rpm, tpm, adaptive concurrency) and how its token counts compare with estimates."""

    health: HealthBoard
    limits: LimitBoard
    calibration: tokens.Calibration
    pace: SharedPace | None = None  # rpm/tpm shared with every worker (None: this one alone)


class Router:
    def __init__(
        self,
        state: DeploymentState,
        clock: Callable[[], float] = time.monotonic,
        capabilities: Capabilities | None = None,  # None: every deployment takes everything
    ) -> None:
        self.board = state.health
        self.calibration = state.calibration
        self._clock = clock
        self._capabilities = capabilities

    def able(
        self, route: RouteConfig, job: JobRequest, need: Needs
    ) -> list[DeploymentConfig] | Unsupported:
        """The route's deployments that can take what the job needs (all, when it needs
        nothing beyond text)."""
        if not need or self._capabilities is None:
            return list(route.deployments)
        return self._capabilities.able(job.route, route.deployments, need)

    def estimated_cost(
        self, deployment: DeploymentConfig, job: JobRequest, raw_input_tokens: int
    ) -> float:
        input_tokens = self.calibration.estimate(deployment.key, raw_input_tokens)
        return deployment.cost_usd(input_tokens, tokens.output_allowance(job))

    def plan(
        self,
        route: RouteConfig,
        job: JobRequest,
        billed: tokens.BilledInput,
        need: Needs = NOTHING,
    ) -> list[DeploymentConfig] | CostLimited | Unsupported:
        deployments = self.able(route, job, need)
        if isinstance(deployments, Unsupported):
            return deployments
        if len(deployments) == 1 and job.max_cost_usd is None:
            return deployments  # nothing to choose or to filter: the common case, kept cheap
        raw_tokens = billed.tokens
        costs = {d.key: self.estimated_cost(d, job, raw_tokens) for d in deployments}
        if job.max_cost_usd is not None:
            affordable = [d for d in deployments if costs[d.key] <= job.max_cost_usd]
            if not affordable:
                cheapest = min(costs.values())
                return CostLimited(
                    f"max_cost_usd: {job.max_cost_usd} is below the estimated cost of every "
                    f"deployment of route '{job.route}' (cheapest ≈ {cheapest:.6f} USD)"
                )
            deployments = affordable
        ordered = self._by_strategy(route.strategy, deployments, costs, job)
        now = self._clock()
        # a stable sort: deployments that can take a call now first, strategy order within
        return sorted(ordered, key=lambda d: self.board[d.key].available_at() > now)

    def _by_strategy(
        self,
        strategy: Strategy,
        deployments: list[DeploymentConfig],
        costs: dict[str, float],
        job: JobRequest,
    ) -> list[DeploymentConfig]:
        if len(deployments) < 2 or strategy is Strategy.ORDERED:
            return deployments
        if strategy is Strategy.CHEAPEST:
            return sorted(deployments, key=lambda d: costs[d.key])
        if strategy is Strategy.FASTEST:
            return sorted(deployments, key=lambda d: self.board[d.key].latency_s or 0.0)
        return _weighted(deployments, stable_fraction(job.tenant, job.job_id))


def _weighted(deployments: list[DeploymentConfig], fraction: float) -> list[DeploymentConfig]:
    point = fraction * sum(d.weight for d in deployments)
    index = len(deployments) - 1  # float rounding can leave the point at the very end
    for position, deployment in enumerate(deployments):
        point -= deployment.weight
        if point < 0:
            index = position
            break
    chosen = deployments[index]
    rest = sorted((d for i, d in enumerate(deployments) if i != index), key=lambda d: -d.weight)
    return [chosen, *rest]
