"""The batch commands of ``headway`` (CONTRACT §8): ``submit``, ``results``, ``status``,
``cancel``, ``usage``, ``budget set`` — publish jobs, steer them, and read back what became
of them.

A batch is read as one tenant's (producers choose batch ids: two tenants may share one):
``--tenant`` names it, and without it a read by batch takes the batch id's only tenant, or is
refused saying how many tenants have the id (:func:`tenant_of`). ``cancel`` and ``budget set``
always name their tenant."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Collection
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TextIO

import typer
from aiokafka.errors import KafkaError
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.client import HeadwayClient
from broker.errors import HeadwayError, UnscopedRead
from broker.settings import Settings
from schemas.control import ControlCommand
from schemas.jobs import Priority
from workers.cli.exports import ResultFormat, batch_lines, openai_batch_line
from workers.cli.submission import Overrides, parse_file
from workers.cli.support import console, csv_writer, err, load_settings, shown
from workers.intake.backlog import LaneBacklog, batch_in_lanes
from workers.ledger import queries
from workers.ledger.database.engine import create_engine

SUBSCRIPTION_IDLE_S = 5.0  # without --follow: a subscription ends after this long with nothing new


def register(app: typer.Typer) -> None:
    for command in (submit, results, status, cancel, usage):
        app.command()(command)
    budget_app = typer.Typer(no_args_is_help=True, help="batches' budgets")
    budget_app.command("set")(budget_set)
    app.add_typer(budget_app, name="budget")


async def tenant_of(
    engine: AsyncEngine, batch: str, tenant: str | None, seen: Collection[str] = ()
) -> str:
    """Whose batch a command reads: ``tenant`` when given, else the only tenant with jobs or a
    cap in the batch (in the ledger, and ``seen`` elsewhere: the lanes); refused otherwise."""
    if tenant is not None:
        return tenant
    tenants = {*await queries.batch_tenants(engine, batch), *seen}
    if len(tenants) == 1:
        return tenants.pop()
    raise UnscopedRead(
        f"batch {batch!r} has jobs of {len(tenants)} tenants: give --tenant (batch ids are "
        "chosen by producers, so tenants may share one)"
    )


def _secret(signing_secret_env: str | None) -> str | None:
    if signing_secret_env is None:
        return None
    secret = os.environ.get(signing_secret_env)
    if not secret:
        raise typer.BadParameter(f"environment variable {signing_secret_env} is not set")
    return secret


SIGNING_HELP = (
    "sign the command with the secret in this environment variable (tenants with "
    "require_signed_control apply only signed commands)"
)


def submit(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JobRequest or OpenAI Batch JSONL")
    ],
    tenant: Annotated[str | None, typer.Option()] = None,
    batch: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[Priority | None, typer.Option()] = None,
    route: Annotated[str | None, typer.Option()] = None,
    skip_invalid: Annotated[
        bool, typer.Option(help="publish the valid lines even if some are bad")
    ] = False,
) -> None:
    """Publish the jobs of a JSONL file."""
    parsed = parse_file(file, Overrides(tenant, batch, priority, route))
    for message in parsed.errors[:20]:
        err.print(f"[red]{shown(file)}[/] {shown(message)}")
    if parsed.errors and not skip_invalid:
        raise HeadwayError(
            f"{len(parsed.errors)} invalid lines; nothing was published "
            "(--skip-invalid publishes the valid ones)"
        )

    async def main() -> int:
        async with HeadwayClient(load_settings()) as client:
            return await client.submit_many(parsed.jobs)

    count = asyncio.run(main())
    console.print(f"published {count} jobs" + (f" (batch {shown(batch)})" if batch else ""))


def results(
    batch: Annotated[str | None, typer.Option(help="batch id (needed without --group)")] = None,
    out: Annotated[Path | None, typer.Option(help="write JSONL here instead of stdout")] = None,
    follow: Annotated[bool, typer.Option(help="keep printing new results")] = False,
    tenant: Annotated[str | None, typer.Option()] = None,
    count: Annotated[
        int | None, typer.Option(help="with --follow: stop after this many results")
    ] = None,
    form: Annotated[
        ResultFormat, typer.Option("--format", help="native JobResult lines or OpenAI Batch lines")
    ] = ResultFormat.NATIVE,
    group: Annotated[
        str | None,
        typer.Option(
            help="read the results topic as this consumer group: resume where the group left "
            "off, commit each result once written (at least once; duplicates share tenant and "
            "job_id)"
        ),
    ] = None,
) -> None:
    """Results of one tenant's batch as JSONL (from the ledger: one per job), as JobResults or
    as OpenAI Batch output lines (--format openai-batch); with --group, from the results topic
    as a durable subscription (any batch, or one tenant's --batch). Without --tenant, the
    batch id must be one tenant's."""
    if batch is None and group is None:
        raise HeadwayError("give --batch (results from the ledger) or --group (a subscription)")

    async def main() -> int:
        settings = load_settings()
        sink = out.open("w") if out else sys.stdout
        try:
            if group is not None:
                return await _subscribed(settings, group, batch, tenant, form, follow, count, sink)
            assert batch is not None
            return await _from_ledger(settings, batch, tenant, form, follow, count, sink)
        finally:
            if out:
                sink.close()

    written = asyncio.run(main())
    if out:
        console.print(f"wrote {written} results to {shown(out)}")


async def _from_ledger(
    settings: Settings,
    batch: str,
    tenant: str | None,
    form: ResultFormat,
    follow: bool,
    count: int | None,
    sink: TextIO,
) -> int:
    engine = create_engine(settings.database_url)
    written = 0
    try:
        whose = await tenant_of(engine, batch, tenant)
    except BaseException:
        await engine.dispose()
        raise
    lines = batch_lines(engine, batch, whose, form, follow=follow)
    try:
        async for line in lines:
            sink.write(line + "\n")
            written += 1
            if follow:
                sink.flush()
            if count is not None and written >= count:
                break
        return written
    finally:
        await lines.aclose()
        await engine.dispose()


async def _subscribed(
    settings: Settings,
    group: str,
    batch: str | None,
    tenant: str | None,
    form: ResultFormat,
    follow: bool,
    count: int | None,
    sink: TextIO,
) -> int:
    """Each result is written (and flushed) before the next is asked for, so it is committed
    only once written."""
    written = 0
    idle = None if follow else SUBSCRIPTION_IDLE_S
    if batch is not None and tenant is None:
        engine = create_engine(settings.database_url)
        try:
            tenant = await tenant_of(engine, batch, None)
        finally:
            await engine.dispose()
    subscription = HeadwayClient(settings).subscribe(
        group, batch=batch, tenant=tenant, idle_timeout_s=idle
    )
    async with subscription as found:
        async for result in found:
            # as written: a field a newer headway added is kept, not dropped by this model
            text = found.raw.decode("utf-8", "replace") or result.model_dump_json()
            if form is ResultFormat.OPENAI_BATCH:
                text = json.dumps(openai_batch_line(text))
            sink.write(text + "\n")
            sink.flush()
            written += 1
            if count is not None and written >= count:
                break
    return written


def status(
    batch: Annotated[str, typer.Option()],
    tenant: Annotated[str | None, typer.Option()] = None,
    lanes: Annotated[
        bool,
        typer.Option(
            help="read the lanes past the workers' committed offsets, to count the batch's "
            "jobs not read yet or buffered by a worker (--no-lanes: the ledger only)"
        ),
    ] = True,
    scan_limit: Annotated[
        int, typer.Option(min=1, help="read at most this many lane records")
    ] = 1_000_000,
) -> None:
    """Counts by status, spend and progress of one tenant's batch; queued jobs wherever they
    wait. Without --tenant, the batch id must be one tenant's (in the ledger and the lanes)."""

    async def main() -> tuple[queries.BatchStatus, LaneBacklog | None, str, str]:
        settings = load_settings()
        found: LaneBacklog | None = None
        unread = ""
        if lanes:
            try:
                found = await batch_in_lanes(settings, batch, tenant, scan_limit)
            except (KafkaError, HeadwayError) as error:  # the ledger's counts are still worth it
                unread = f"{type(error).__name__}: {error}"
        engine = create_engine(settings.database_url)
        try:
            in_lanes = found.jobs if found else ()
            whose = await tenant_of(engine, batch, tenant, {t for t, _ in in_lanes})
            theirs = [key for key in in_lanes if key[0] == whose]
            counted = await queries.batch_status(engine, batch, whose, theirs)
            return counted, found, unread, whose
        finally:
            await engine.dispose()

    found, backlog, unread, whose = asyncio.run(main())
    table = Table(title=f"batch {shown(batch)}: {found.finished}/{found.total} finished")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    table.add_row("tenant", shown(whose))
    if backlog is not None:
        at_least = "" if backlog.complete else "≥ "
        table.add_row("queued (in the lanes)", f"{at_least}{found.in_lanes}")
    if found.queued:
        table.add_row("queued (spilled, in the ledger)", str(found.queued))
    for name, jobs in sorted(found.by_status.items()):
        table.add_row(shown(name), str(jobs))
    if found.in_batch_lane:
        table.add_row("  of which in provider batches", str(found.in_batch_lane))
    table.add_row("tokens in / out", f"{found.input_tokens:,} / {found.output_tokens:,}")
    table.add_row("spend USD", f"{found.cost_usd:.6f}")
    for cap in found.caps:
        table.add_row(
            "budget USD",
            f"{cap.spent_usd:.6f} of {cap.budget_usd:.2f} ({shown(cap.source)})",
        )
    console.print(table)
    if backlog is not None and not backlog.complete:
        err.print(f"read the first {backlog.records:,} lane records only (--scan-limit)")
    if unread:
        err.print(
            f"[yellow]the lanes were not read[/] ({shown(unread)}): jobs not read yet not counted"
        )


def cancel(
    tenant: Annotated[str, typer.Option()],
    batch: Annotated[str | None, typer.Option()] = None,
    job: Annotated[str | None, typer.Option()] = None,
    signing_secret_env: Annotated[str | None, typer.Option(help=SIGNING_HELP)] = None,
) -> None:
    """Publish a cancel command for a job or a batch."""
    command = ControlCommand(action="cancel", tenant=tenant, job_id=job, batch_id=batch)
    _publish(command, _secret(signing_secret_env))
    console.print(f"cancel published: {shown(command.model_dump_json(exclude_none=True))}")


def budget_set(
    tenant: Annotated[str, typer.Option()],
    batch: Annotated[str, typer.Option()],
    usd: Annotated[float, typer.Option(min=0, help="the batch's cap, in USD, for its life")],
    signing_secret_env: Annotated[str | None, typer.Option(help=SIGNING_HELP)] = None,
) -> None:
    """Set (raise, lower) a batch's budget: every worker applies it within seconds; the later
    of two sets wins."""
    command = ControlCommand(
        action="set_budget", tenant=tenant, batch_id=batch, budget_usd=usd, at=datetime.now(UTC)
    )
    _publish(command, _secret(signing_secret_env))
    console.print(f"budget published: {shown(command.model_dump_json(exclude_none=True))}")


def _publish(command: ControlCommand, secret: str | None) -> None:
    async def main() -> None:
        async with HeadwayClient(load_settings(), signing_secret=secret) as client:
            await client.control(command)

    asyncio.run(main())


class UsageFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


USAGE_FIELDS = ("tenant", "group", "events", "input_tokens", "output_tokens", "cost_usd")


def usage(
    tenant: Annotated[str | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option(help="ISO date or timestamp (UTC)")] = None,
    by: Annotated[
        str, typer.Option(help="route, batch, deployment, day, or tag:KEY (a usage tag)")
    ] = "route",
    form: Annotated[UsageFormat, typer.Option("--format")] = UsageFormat.TABLE,
) -> None:
    """Spend and tokens by tenant and route (or batch, deployment, day, usage tag); CSV and
    JSON lines for finance."""
    if by not in queries.USAGE_GROUPS and not (by.startswith("tag:") and len(by) > 4):
        raise typer.BadParameter(
            f"one of {', '.join(queries.USAGE_GROUPS)} or tag:KEY", param_hint="--by"
        )
    start = (since.replace(tzinfo=since.tzinfo or UTC)).timestamp() if since else None

    async def main() -> list[queries.UsageLine]:
        engine = create_engine(load_settings().database_url)
        try:
            return await queries.usage_summary(engine, tenant, start, by)
        finally:
            await engine.dispose()

    lines = asyncio.run(main())
    if form is UsageFormat.CSV:
        writer = csv_writer(sys.stdout)
        writer.writerow(("tenant", by, *USAGE_FIELDS[2:]))
        for line in lines:
            writer.writerow([getattr(line, name) for name in USAGE_FIELDS])
        return
    if form is UsageFormat.JSON:
        for line in lines:
            row = {name: getattr(line, name) for name in USAGE_FIELDS}
            row["by"] = by
            sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(title=f"usage by {shown(by)}")
    for column in ("tenant", by, "calls", "input tokens", "output tokens", "cost USD"):
        table.add_column(shown(column))
    for line in lines:
        table.add_row(
            shown(line.tenant),
            shown(line.group),
            str(line.events),
            f"{line.input_tokens:,}",
            f"{line.output_tokens:,}",
            f"{line.cost_usd:.6f}",
        )
    console.print(table)
