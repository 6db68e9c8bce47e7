"""Metric labels come from the config: records naming endless tenants or routes cannot grow
the series count (and push real tenants out of the exporter's limit)."""

from __future__ import annotations

from schemas.results import ErrorCode, JobStatus
from workers.settle.outcomes import Identity, terminal_result
from workers.telemetry.metrics import Metrics


def test_unlisted_tenants_and_routes_share_one_label_each() -> None:
    metrics = Metrics(tenants={"acme", "default"}, routes={"summarize"})
    for i in range(500):
        who = Identity(f"j{i}", f"mallory{i}", None, None, f"route-{i}")
        metrics.job_ended(terminal_result(who, JobStatus.REJECTED, ErrorCode.FORBIDDEN, "no"))
    who = Identity("a1", "acme", None, None, "summarize")
    metrics.job_ended(terminal_result(who, JobStatus.REJECTED, ErrorCode.FORBIDDEN, "no"))
    metrics.set_aside("mallory7", "rpm")
    text = metrics.render().decode()
    jobs = [line for line in text.splitlines() if line.startswith("headway_jobs_total{")]
    assert len(jobs) == 2, jobs
    assert any('tenant="acme"' in line and 'route="summarize"' in line for line in jobs)
    assert any('tenant="default"' in line and 'route="unknown"' in line for line in jobs)
    assert "mallory" not in text
