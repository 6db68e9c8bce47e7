"""Route → the deployments to try, in order.

``ordered`` keeps the config order (failover down the list); ``cheapest`` sorts by the
estimated cost of this job. (Weighted, fastest, health and provider limits build on this.)
"""

from __future__ import annotations

from broker.config import DeploymentConfig, RouteConfig, Strategy
from schemas.jobs import JobRequest

DEFAULT_OUTPUT_TOKENS = 256
CHARS_PER_TOKEN = 4


def estimate_input_tokens(job: JobRequest, messages: list[dict[str, str]] | None) -> int:
    text = sum(len(m["content"]) for m in messages or []) + sum(len(i) for i in job.inputs)
    return max(1, text // CHARS_PER_TOKEN)


def plan(
    route: RouteConfig, job: JobRequest, messages: list[dict[str, str]] | None
) -> list[DeploymentConfig]:
    deployments = list(route.deployments)
    if route.strategy is Strategy.CHEAPEST and len(deployments) > 1:
        tokens = estimate_input_tokens(job, messages)
        max_tokens = (job.params.max_tokens if job.params else None) or DEFAULT_OUTPUT_TOKENS
        deployments.sort(key=lambda d: d.cost_usd(tokens, max_tokens))
    return deployments
