"""The shipped database roles over a real PostgreSQL, set up as the deployments do it (the
migration role migrates, then applies deploy/postgres/audit-grants.sql and role-passwords.sql
with psql): the workers' role can use every table a worker needs and cannot delete, truncate or
update the audit trail, switch its trigger off or move the schema's version; a worker logged in
as that role serves jobs, budgets and alerts; the pruning role, logged in as itself, prunes
everything past retention — audit records included — as `headway ledger prune` does on its
schedule."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from broker.client import HeadwayClient
from broker.config import parse_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine

ROOT = Path(__file__).parents[2]
GRANTS = ROOT / "deploy" / "postgres" / "audit-grants.sql"
PASSWORDS = ROOT / "deploy" / "postgres" / "role-passwords.sql"
SECRETS = {
    "WORKER_DB_PASSWORD": "worker-test-only",
    "PRUNER_DB_PASSWORD": "pruner-test-only",
}
AUDIT = {"audit_records", "audit_captures"}
JOBS = 12
RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
#: each table of the ledger, and which of RIGHTS the connected role holds on it
PRIVILEGES = (
    "SELECT tablename, "
    + ", ".join(f"has_table_privilege(tablename, '{right}')" for right in RIGHTS)
    + " FROM pg_tables WHERE schemaname = 'public'"
)


def as_role(url: str, role: str) -> str:
    """``url`` (the owner's) logged in as ``role`` with its password."""
    password = SECRETS[f"{role.removeprefix('headway_').upper()}_DB_PASSWORD"]
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}:{password}@{rest.split('@', 1)[1]}"


def apply_grants(owner_url: str) -> None:
    """What the migration job runs after `headway db upgrade`, as the schema's owner."""
    psql = shutil.which("psql")
    assert psql is not None, "psql is needed (Debian's postgresql-client; .ci/run installs it)"
    done = subprocess.run(
        [psql, "-v", "ON_ERROR_STOP=1", "-q", "-d",
         owner_url.replace("postgresql+asyncpg://", "postgresql://"),
         "-f", str(GRANTS), "-f", str(PASSWORDS)],
        env={**os.environ, **SECRETS}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


async def test_the_workers_role_uses_every_ledger_table_and_cannot_change_the_audit_trail(
    postgres_url: str,
) -> None:
    apply_grants(postgres_url)
    engine = create_engine(as_role(postgres_url, "headway_worker"))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(PRIVILEGES))
            rights = {table: {r for r, held in zip(RIGHTS, row, strict=True) if held}
                      for table, *row in rows}  # fmt: skip
        tables = set(rights)
        assert {"jobs", "usage_events", "budget_alerts", "ledger_leases"} <= tables
        for table, held in rights.items():
            if table in AUDIT:
                assert held == {"SELECT", "INSERT"}, table  # appended and read, nothing more
            elif table == "alembic_version":
                assert held == {"SELECT"}, table  # the schema's version is the migrations'
            else:
                assert held == {"SELECT", "INSERT", "UPDATE", "DELETE"}, table
        for statement in (
            "DELETE FROM audit_records",
            "TRUNCATE audit_captures",
            "UPDATE audit_records SET status = 'failed'",
            "ALTER TABLE audit_records DISABLE TRIGGER ALL",
            "DROP TABLE audit_captures",
            "UPDATE alembic_version SET version_num = '0001'",
        ):
            with pytest.raises(sqlalchemy.exc.DBAPIError, match=r"permission denied|must be owner"):
                async with engine.begin() as conn:
                    await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def test_a_worker_serves_as_the_workers_role_and_the_pruner_prunes_as_its_own(
    make_settings: Callable[..., Settings], postgres_url: str, simulator: SimulatorServer
) -> None:
    apply_grants(postgres_url)
    settings = make_settings(
        database_url=as_role(postgres_url, "headway_worker"), prune_s=0, budget_gauges_s=0.2
    )
    config = parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": simulator.base_url}},
            "routes": {"summarize": {"kind": "chat", "deployments": [
                {"provider": "sim", "model": "sim-chat-mini", "input_usd_per_mtok": 0.15,
                 "output_usd_per_mtok": 0.6}]}},
            "budget_alerts": [0.000001],
            "tenants": {"demo": {"budget_usd": 100.0, "rpm": 10_000, "audit_capture": "redacted"}},
        }
    )  # fmt: skip
    worker_db = create_engine(settings.database_url)
    try:
        async with running_worker(settings, config), HeadwayClient(settings) as client:
            await client.submit_many([chat_job(f"role-{i}", batch_id="b1") for i in range(JOBS)])
            results = await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=JOBS
            )
            await read_topic(settings.kafka_bootstrap or "", settings.topics.alerts, until_keys=1)
        statuses = {r[0]["status"] for r in results.by_key.values()}
        assert statuses == {"succeeded"}
        async with worker_db.connect() as conn:
            audited = (await conn.execute(text("SELECT count(*) FROM audit_records"))).scalar()
        assert audited == JOBS

        pruned = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "workers", "ledger", "prune"],
            env={**os.environ, "HEADWAY_DATABASE_URL": as_role(postgres_url, "headway_pruner"),
                 "HEADWAY_RETAIN_RESULTS_H": "0", "HEADWAY_RETAIN_USAGE_H": "0",
                 "HEADWAY_RETAIN_JOBS_D": "0", "HEADWAY_RETAIN_AUDIT_D": "0",
                 "HEADWAY_RETAIN_AUDIT_CAPTURES_D": "0"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        said = " ".join(pruned.stdout.split())
        assert pruned.returncode == 0, pruned.stderr + pruned.stdout
        assert f"{JOBS} finished jobs were moved" in said, said
        assert f"{JOBS} audit records and {JOBS} captures" in said, said
        async with worker_db.connect() as conn:
            left = (await conn.execute(text("SELECT count(*) FROM audit_records"))).scalar()
        assert left == 0
    finally:
        await worker_db.dispose()
