"""The audit trail over a real broker and database (SQLite and PostgreSQL): every stored result
has one audit record saying who submitted it (which signing key), what ran where (route,
deployment, region), the guardrails' decisions, status and cost, with digests of the exact
request and result records anyone holding them checks with one hash; a tenant's captures are
PII-redacted by its guardrails and kept apart; records cannot be updated; the pruner removes
captures and records past their own retentions; ``headway audit`` reads them back."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import text
from typer.testing import CliRunner

from broker.client import HeadwayClient
from broker.config import GuardrailPolicy, TenantConfig, development_config
from broker.settings import RetentionSettings, Settings
from schemas.jobs import Priority
from tests.helpers import chat_job, point_cli_at, read_topic, running_worker
from workers.cli.main import app
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.transactions import transactions_for
from workers.ledger.retention.pruner import Pruner

SECRET_ENV = "HEADWAY_TEST_AUDIT_SECRET"
DAY = 86_400.0


def digests(collected: Any) -> dict[str, str]:
    """job_id → SHA-256 of its record's value, as a holder of the records computes it."""
    return {
        json.loads(record.value)["job_id"]: hashlib.sha256(record.value).hexdigest()
        for record in collected.records
    }


def audit_lines(*args: str) -> list[dict[str, Any]]:
    done = CliRunner().invoke(app, ["audit", *args, "--json"])
    assert done.exit_code == 0, done.output
    return [json.loads(line) for line in done.output.splitlines() if line.strip()]


async def test_every_stored_result_has_one_audit_record_saying_who_what_where_and_cost(
    make_settings: Callable[..., Settings],
    database_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, "acme-secret")
    settings = make_settings(database_url=database_url)
    point_cli_at(settings, monkeypatch)
    base = development_config(simulator.base_url)
    acme = TenantConfig(signing_secret_env=SECRET_ENV, guardrails=["pii"], audit_capture="redacted")
    config = base.model_copy(
        update={
            "guardrails": {
                "pii": GuardrailPolicy(redact_pii=["email"], block_terms=["classified"])
            },
            "tenants": {**base.tenants, "acme": acme},
        }
    )
    sent = chat_job(
        "ok-1",
        tenant="acme",
        batch_id="b1",
        messages=[{"role": "user", "content": "Write to bob@example.com about the plan"}],
    )
    acme_jobs = [
        sent,
        chat_job("blocked-1", tenant="acme", messages=[{"role": "user", "content": "classified"}]),
        chat_job("noroute-1", tenant="acme", route="nope"),
    ]
    bootstrap = settings.kafka_bootstrap or ""
    async with (
        running_worker(settings, config),
        HeadwayClient(settings, signing_secret="acme-secret") as signed,
        HeadwayClient(settings) as unsigned,
    ):
        await signed.submit_many(acme_jobs)
        await unsigned.submit(chat_job("d-1"))
        results = await read_topic(bootstrap, settings.topics.results, until_keys=4)
        requests = await read_topic(
            bootstrap, settings.topics.jobs(Priority.NORMAL), until_keys=1, until_records=4
        )
    outcome = {key: copies[0] for key, copies in results.by_key.items()}
    sent_digests, result_digests = digests(requests), digests(results)

    records = await asyncio.to_thread(audit_lines, "--tenant", "acme")
    by_job = {r["job_id"]: r for r in records}
    assert sorted(by_job) == ["blocked-1", "noroute-1", "ok-1"] and len(records) == 3
    ok = by_job["ok-1"]
    assert ok["signed_by"].startswith(f"{SECRET_ENV}#") and "acme-secret" not in ok["signed_by"]
    assert (ok["status"], ok["batch_id"], ok["route"]) == ("succeeded", "b1", "summarize")
    assert (ok["provider"], ok["deployment"]) == ("simulator", "sim-chat-mini")
    assert ok["cost_usd"] == pytest.approx(outcome["ok-1"]["cost_usd"]) and ok["cost_usd"] > 0
    assert ok["request_sha256"] == sent_digests["ok-1"]  # the bytes its signature covers
    assert ok["result_sha256"] == result_digests["ok-1"]
    assert ok["submitted_at"] is not None and ok["submitted_at"] <= ok["completed_at"]
    assert ok["capture"] == "redacted"
    assert ok["captured_prompt"] == [
        {"role": "user", "content": "Write to [EMAIL_1] about the plan"}
    ]
    assert "bob@example.com" not in json.dumps(ok)
    assert ok["captured_output"]["text"] == outcome["ok-1"]["output"]["text"]
    blocked = by_job["blocked-1"]
    assert (blocked["status"], blocked["error_code"]) == ("rejected", "content_blocked")
    assert "classified" in blocked["guardrails"]["blocked"]
    assert blocked["result_sha256"] == result_digests["blocked-1"]
    assert by_job["noroute-1"]["error_code"] == "unknown_route"
    [demo] = await asyncio.to_thread(audit_lines, "--tenant", "demo", "--job", "d-1")
    assert (demo["signed_by"], demo["capture"], demo["captured_prompt"]) == (None, "digest", None)
    assert demo["request_sha256"] == sent_digests["d-1"]

    engine = create_engine(database_url)
    try:
        for table in ("audit_records", "audit_captures"):  # no update path, in code or by hand
            with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(text(f"UPDATE {table} SET completed_at = 0"))
        transactions = transactions_for(engine)
        run = transactions.run
        two_days_on = datetime.fromisoformat(ok["completed_at"]).timestamp() + 2 * DAY

        def clock() -> float:
            return two_days_on

        captures_only = RetentionSettings(audit_d=30.0, audit_captures_d=1.0)
        report = await Pruner(run, engine, captures_only, owner="p", clock=clock).prune()
        assert (report.captures_deleted, report.audit_deleted) == (3, 0)  # acme's three
        records = await asyncio.to_thread(audit_lines, "--tenant", "acme", "--job", "ok-1")
        assert records[0]["captured_prompt"] is None and records[0]["request_sha256"]
        everything = RetentionSettings(audit_d=1.0, audit_captures_d=1.0, batch=1)  # per tenant
        report = await Pruner(run, engine, everything, owner="p", clock=clock).prune()
        assert report.audit_deleted == 4
        assert await asyncio.to_thread(audit_lines, "--tenant", "acme") == []
        await transactions.close()
    finally:
        await engine.dispose()


GRANTS = Path(__file__).parents[2] / "deploy" / "postgres" / "audit-grants.sql"
ROW = (
    "INSERT INTO audit_records (tenant, job_id, completed_at, status, attempts, input_tokens, "
    "output_tokens, cost_nusd, capture) VALUES ('t', 'j', 1.0, 'succeeded', 1, 1, 1, 1, 'digest')"
)


async def test_the_grants_let_the_workers_role_append_and_read_the_trail_never_change_it(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(GRANTS.read_text())  # type: ignore[union-attr]
        async with engine.begin() as conn:
            await conn.execute(text("SET ROLE headway_worker"))
            await conn.execute(text(ROW))
            assert (await conn.execute(text("SELECT count(*) FROM audit_records"))).scalar() == 1
            await conn.execute(text("SELECT count(*) FROM jobs"))  # the rest of the ledger too
        for statement in ("DELETE FROM audit_records", "TRUNCATE audit_captures"):
            with pytest.raises(sqlalchemy.exc.DBAPIError, match="permission denied"):
                async with engine.begin() as conn:
                    await conn.execute(text("SET ROLE headway_worker"))
                    await conn.execute(text(statement))
        async with engine.begin() as conn:  # the pruning role deletes what is past retention
            await conn.execute(text("SET ROLE headway_pruner"))
            await conn.execute(text("DELETE FROM audit_records WHERE completed_at < 2"))
    finally:
        await engine.dispose()
