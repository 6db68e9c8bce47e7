"""Routing strategies order a route's deployments for one job; max_cost_usd filters them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from broker.config import RouteConfig
from broker.settings import CircuitSettings
from schemas.jobs import JobRequest
from workers.calls.health import HealthBoard
from workers.calls.limits import LimitBoard
from workers.calls.routing import CostLimited, DeploymentState, Router
from workers.calls.tokens import BilledInput, Calibration


def route(strategy: str, *deployments: dict[str, Any]) -> RouteConfig:
    return RouteConfig.model_validate(
        {"kind": "chat", "strategy": strategy, "deployments": list(deployments)}
    )


def job(job_id: str = "j1", **extra: Any) -> JobRequest:
    return JobRequest.model_validate(
        {
            "job_id": job_id,
            "tenant": "t",
            "kind": "chat",
            "route": "r",
            "messages": [{"role": "user", "content": "x" * 4000}],
            "params": {"max_tokens": 100},
            **extra,
        }
    )


CHEAP = {"provider": "a", "model": "cheap", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.4}
DEAR = {"provider": "b", "model": "dear", "input_usd_per_mtok": 3, "output_usd_per_mtok": 15}


def router_over(board: HealthBoard | None = None, calibration: Calibration | None = None) -> Router:
    """A router over this worker's view of its deployments (fresh unless given)."""
    health = board if board is not None else HealthBoard(CircuitSettings())
    known = calibration if calibration is not None else Calibration()
    return Router(DeploymentState(health, LimitBoard(8), known))


def plan(router: Router, chosen: RouteConfig, request: JobRequest) -> Any:
    """The router's plan for the job, its billed input estimated as the pipeline does."""
    messages = [m.model_dump(exclude_none=True) for m in request.messages or ()]
    return router.plan(chosen, request, BilledInput(request, messages))


def models(plan: Any) -> list[str]:
    return [d.model for d in plan]


def test_ordered_keeps_the_config_order() -> None:
    router = router_over()
    assert models(plan(router, route("ordered", DEAR, CHEAP), job())) == ["dear", "cheap"]


def test_cheapest_sorts_by_this_jobs_estimated_cost() -> None:
    router = router_over()
    assert models(plan(router, route("cheapest", DEAR, CHEAP), job())) == ["cheap", "dear"]


def test_max_cost_removes_deployments_over_it_and_none_left_is_a_cost_limit() -> None:
    router = router_over()
    # ~1,000 input tokens + 100 output: cheap ≈ 0.00014 USD, dear ≈ 0.0045 USD
    fits = plan(router, route("ordered", DEAR, CHEAP), job(max_cost_usd=0.001))
    assert models(fits) == ["cheap"]
    limited = plan(router, route("ordered", DEAR, CHEAP), job(max_cost_usd=0.00001))
    assert isinstance(limited, CostLimited)
    assert "max_cost_usd" in limited.message


def test_weighted_splits_by_weight_and_is_stable_per_job() -> None:
    router = router_over()
    r = route("weighted", {**CHEAP, "weight": 3}, {**DEAR, "weight": 1})
    first = Counter(models(plan(router, r, job(f"job-{i}")))[0] for i in range(4000))
    assert 0.70 < first["cheap"] / 4000 < 0.80
    again = [models(plan(router, r, job(f"job-{i}"))) for i in range(50)]
    assert again == [models(plan(router, r, job(f"job-{i}"))) for i in range(50)]
    assert all(len(p) == 2 for p in again)  # the other deployment stays as failover


def test_fastest_prefers_lower_latency_and_tries_unknown_deployments() -> None:
    board = HealthBoard(CircuitSettings())
    router = router_over(board)
    r = route("fastest", CHEAP, DEAR)
    board["a:cheap"].try_acquire()
    board["a:cheap"].succeeded(0.9)
    assert models(plan(router, r, job())) == ["dear", "cheap"]  # dear untried
    board["b:dear"].try_acquire()
    board["b:dear"].succeeded(2.0)
    assert models(plan(router, r, job())) == ["cheap", "dear"]


def test_deployments_that_cannot_take_a_call_now_go_last() -> None:
    board = HealthBoard(CircuitSettings(failures=1))
    router = router_over(board)
    board["a:cheap"].try_acquire()
    board["a:cheap"].failed()  # circuit open
    assert models(plan(router, route("cheapest", CHEAP, DEAR), job())) == ["dear", "cheap"]


def test_calibration_learns_a_tokenizer_that_counts_more() -> None:
    calibration = Calibration()
    for _ in range(60):
        calibration.observe("a:cheap", raw_estimate=100, reported=200)
    assert 190 <= calibration.estimate("a:cheap", 100) <= 200
    assert calibration.estimate("b:other", 100) == 100
