"""On PostgreSQL, a fresh ledger's statements by key are planned on the primary key.

A table not analysed yet looks tiny to the planner, and a worker's connection keeps its plans
(prepared statements): a finish planned on another index scanned every running — and every
dead — entry, and slowed down with every job of a fresh ledger's first backfill (migration
0009). Generic and custom plans alike must use the primary key, on an empty table."""

from __future__ import annotations

import asyncpg
import pytest

pytestmark = pytest.mark.integration

KEY_LOOKUPS = {
    "finish": (
        "UPDATE jobs SET status = $1, updated_at = 1 "
        "WHERE tenant = $2 AND job_id = $3 AND status = $4",
        ("succeeded", "acme", "job-1", "running"),
    ),
    "claim": (
        "SELECT status FROM jobs WHERE tenant = $1 AND job_id = $2 "
        "AND status = $3 AND (lease_expires_at <= $4 OR lease_owner = $5) FOR UPDATE",
        ("acme", "job-1", "running", 0.0, "worker-1"),
    ),
    "release": (  # the owner named as workers.ledger.database.models.held_by does
        "UPDATE jobs SET lease_expires_at = 0 "
        "WHERE tenant = $1 AND job_id = $2 AND coalesce(lease_owner, '') = $3 AND status = $4",
        ("acme", "job-1", "worker-1", "running"),
    ),
}


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
@pytest.mark.parametrize("lookup", sorted(KEY_LOOKUPS))
async def test_a_lookup_by_key_on_a_fresh_table_uses_the_primary_key(
    postgres_url: str, lookup: str, mode: str
) -> None:
    sql, arguments = KEY_LOOKUPS[lookup]
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        await conn.execute(f"PREPARE lookup AS {sql}")
        values = ", ".join(_literal(value) for value in arguments)
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN EXECUTE lookup({values})"))
    finally:
        await conn.close()
    assert "jobs_pkey" in plan, plan


def _literal(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)
