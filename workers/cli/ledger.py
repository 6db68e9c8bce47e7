"""``headway ledger prune``: keep the ledger small now, as the workers do every ``prune_s``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from workers.cli.support import console, load_settings
from workers.ledger.database.engine import create_engine
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
        f"{report.finished_deleted} old jobs and {report.usage_days_deleted} daily usage rows "
        f"{verb} deleted"
    )
    if not dry_run:
        rebuilt = ", ".join(report.reindexed) or "none"
        console.print(
            f"took {report.seconds:.1f} s, longest batch {report.longest_batch_s:.2f} s; "
            f"indexes rebuilt: {rebuilt}"
        )
