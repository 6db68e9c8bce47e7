"""``headway ledger prune``: keep the ledger small now, as the workers do every ``prune_s``;
``headway audit``: read the audit trail."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from schemas.audit import AuditRecord
from workers.audit import rows as audit_rows
from workers.cli.support import console, load_settings, shown
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import from_nano
from workers.ledger.database.transactions import transactions_for
from workers.ledger.retention.pruner import Pruner, PruneReport

ledger_app = typer.Typer(no_args_is_help=True, help="the ledger's retention")


@ledger_app.command("prune")
def ledger_prune(
    dry_run: Annotated[bool, typer.Option(help="count what would be pruned")] = False,
) -> None:
    """Move finished jobs past HEADWAY_RETAIN_RESULTS_H out of `jobs`, sum usage events past
    HEADWAY_RETAIN_USAGE_H by day, delete what is past HEADWAY_RETAIN_JOBS_D and
    HEADWAY_RETAIN_USAGE_DAYS_D — in batches, one pruner at a time (workers included)."""
    settings = load_settings()

    async def main() -> PruneReport:
        engine = create_engine(settings.database_url)
        transactions = transactions_for(engine)
        try:
            owner = f"cli-{settings.worker_id}"
            pruner = Pruner(transactions.run, engine, settings.retention, owner=owner)
            return await pruner.prune(dry_run=dry_run)
        finally:
            await transactions.close()
            await engine.dispose()

    report = asyncio.run(main())
    if not report.held:
        console.print("another worker is pruning the ledger now: nothing done")
        raise typer.Exit(1)
    verb = "would be" if dry_run else "were"
    console.print(
        f"{report.moved} finished jobs {verb} moved out of jobs (results expired), "
        f"{report.usage_rolled_up} usage events {verb} summed by day, "
        f"{report.finished_deleted} old jobs, {report.usage_days_deleted} daily usage rows, "
        f"{report.audit_deleted} audit records and {report.captures_deleted} captures "
        f"{verb} deleted"
    )
    if not dry_run:
        rebuilt = ", ".join(report.reindexed) or "none"
        console.print(
            f"took {report.seconds:.1f} s, longest batch {report.longest_batch_s:.2f} s; "
            f"indexes rebuilt: {rebuilt}"
        )


#: the instants a datetime can hold, as seconds since the epoch
EARLIEST_S = datetime.min.replace(tzinfo=UTC).timestamp()
LATEST_S = datetime.max.replace(tzinfo=UTC).timestamp()


def instant(value: float | None) -> datetime | None:
    """A stored time as a datetime; one outside the years 1-9999 (a record timestamp its
    producer set far off, stored before submitted_at was clamped) as the nearest it can be."""
    if value is None:
        return None
    if value >= LATEST_S:
        return datetime.max.replace(tzinfo=UTC)
    return datetime.fromtimestamp(max(value, EARLIEST_S), UTC)


def _record(row: dict[str, Any]) -> AuditRecord:
    def parsed(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return AuditRecord.model_validate(
        {
            **row,
            "submitted_at": instant(row["submitted_at"]),
            "completed_at": instant(row["completed_at"]),
            "guardrails": parsed(row["guardrails"]),
            "cost_usd": from_nano(row["cost_nusd"]),
            "captured_prompt": parsed(row["captured_prompt"]),
            "captured_output": parsed(row["captured_output"]),
        }
    )


def audit(
    tenant: Annotated[str, typer.Option()],
    since: Annotated[
        datetime | None, typer.Option(help="ISO date or timestamp (UTC): completed since")
    ] = None,
    job: Annotated[str | None, typer.Option(help="one job's records")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="AuditRecord JSON lines (schemas/json/)")
    ] = False,
    limit: Annotated[int, typer.Option(min=1)] = 10_000,
) -> None:
    """A tenant's audit trail: who submitted what, what ran where, what it cost, the
    guardrails' decisions, digests of prompt and output (and captures, when kept)."""
    start = (since.replace(tzinfo=since.tzinfo or UTC)).timestamp() if since else None

    async def main() -> list[dict[str, Any]]:
        engine = create_engine(load_settings().database_url)
        try:
            return await audit_rows.read(engine, tenant, start, job, limit)
        finally:
            await engine.dispose()

    records = [_record(row) for row in asyncio.run(main())]
    if as_json:
        for record in records:
            sys.stdout.write(record.model_dump_json() + "\n")
        return
    table = Table(title=f"audit trail of {shown(tenant)}")
    for column in (
        "completed",
        "job",
        "batch",
        "route",
        "deployment",
        "region",
        "signed by",
        "status",
        "cost USD",
        "request sha256",
    ):
        table.add_column(column)
    for r in records:
        table.add_row(
            f"{r.completed_at:%Y-%m-%d %H:%M:%S}", shown(r.job_id), shown(r.batch_id or ""),
            shown(r.route or ""), shown(r.deployment or ""), shown(r.region or ""),
            shown(r.signed_by or ""),
            shown(r.status + (f" ({r.error_code})" if r.error_code else "")),
            f"{r.cost_usd:.6f}", shown((r.request_sha256 or "")[:16]),
        )  # fmt: skip
    console.print(table)
