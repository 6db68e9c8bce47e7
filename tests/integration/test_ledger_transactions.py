"""How ledger transactions reach the database: SQLite on the ledger's own thread in one
hand-off per transaction; PostgreSQL awaited statement by statement on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from broker.errors import SuspendedLedgerWork
from broker.settings import LedgerSettings
from workers.ledger.database.engine import create_engine, upgrade
from workers.ledger.database.models import JobRow
from workers.ledger.database.transactions import (
    AsyncTransactions,
    Connection,
    ThreadTransactions,
    complete,
    transactions_for,
)
from workers.ledger.records import Claim, Claimed
from workers.ledger.repository import LedgerRepository
from workers.ledger.writer import LedgerWriter
from workers.runtime.readiness import Readiness


@pytest.fixture
async def sqlite_writer(sqlite_url: str) -> AsyncIterator[LedgerWriter]:
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    repository = LedgerRepository("w", 30.0, lambda: 1_000.0)
    settings = LedgerSettings(str(engine.url), "w", flush_ms=5, batch_max=500)
    async with LedgerWriter(engine, repository, settings, Readiness()) as writer:
        yield writer
    await engine.dispose()


def _count_hand_offs(transactions: ThreadTransactions) -> list[int]:
    """Count the calls handed to the ledger's thread."""
    handed = [0]
    pool = transactions._thread
    submit = pool.submit

    def counted(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        handed[0] += 1
        return submit(fn, *args, **kwargs)

    pool.submit = counted  # type: ignore[method-assign]
    return handed


async def test_a_sqlite_flush_of_many_claims_is_one_hand_off_to_the_ledger_thread(
    sqlite_writer: LedgerWriter,
) -> None:
    transactions = sqlite_writer.transactions
    assert isinstance(transactions, ThreadTransactions)
    handed = _count_hand_offs(transactions)
    claims = [Claim("acme", f"j{i}", None, "chat", "summarize") for i in range(50)]

    outcomes = await asyncio.gather(*(sqlite_writer.claim(c) for c in claims))

    assert outcomes == [Claimed(1)] * 50
    # the first claim may flush alone before the other 49 are queued: at most two flushes,
    # each one hand-off (through aiosqlite, each was BEGIN, INSERT, COMMIT and more)
    assert 1 <= handed[0] <= 2
    count = await sqlite_writer.run(
        lambda conn: _scalar(conn, select(func.count()).select_from(JobRow))
    )
    assert count == 50


async def _scalar(conn: Connection, statement: Any) -> Any:
    return (await conn.execute(statement)).scalar_one()


async def test_sqlite_ledger_statements_run_on_the_ledger_thread(
    sqlite_writer: LedgerWriter,
) -> None:
    seen: list[str] = []

    async def work(conn: Connection) -> int:
        seen.append(threading.current_thread().name)
        result: int = (await conn.execute(select(func.count()).select_from(JobRow))).scalar_one()
        seen.append(threading.current_thread().name)
        return result

    assert await sqlite_writer.run(work) == 0
    assert len(seen) == 2
    assert all(name.startswith("headway-ledger") for name in seen)
    assert threading.current_thread().name not in seen


async def test_ledger_work_that_awaits_anything_but_the_database_is_refused_not_retried(
    sqlite_writer: LedgerWriter,
) -> None:
    async def sleeps(conn: Connection) -> None:
        await asyncio.sleep(0)  # would need the event loop, which the ledger thread has not

    with pytest.raises(SuspendedLedgerWork, match="may await only its connection"):
        await sqlite_writer.run(sleeps)
    assert await sqlite_writer.run(lambda conn: _scalar(conn, select(1))) == 1  # still serves


async def test_a_transaction_that_raises_is_rolled_back(sqlite_writer: LedgerWriter) -> None:
    async def insert_then_fail(conn: Connection) -> None:
        await conn.execute(
            insert(JobRow).values(
                tenant="acme", job_id="gone", status="running", created_at=1.0, updated_at=1.0
            )
        )
        raise RuntimeError("boom")

    with pytest.raises(Exception, match="boom"):
        await sqlite_writer.run(insert_then_fail)
    count = await sqlite_writer.run(
        lambda conn: _scalar(conn, select(func.count()).select_from(JobRow))
    )
    assert count == 0


async def test_a_closed_ledger_thread_takes_no_more_work(sqlite_url: str) -> None:
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    transactions = transactions_for(engine)
    assert isinstance(transactions, ThreadTransactions)
    await transactions.close()
    await transactions.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await transactions.run(lambda conn: _scalar(conn, select(1)))
    await engine.dispose()


async def test_postgres_and_in_memory_sqlite_stay_on_the_event_loop(postgres_url: str) -> None:
    # an in-memory SQLite database lives in its one connection: a thread's own would be empty
    for engine in (create_engine(postgres_url), create_async_engine("sqlite+aiosqlite://")):
        transactions = transactions_for(engine)
        assert isinstance(transactions, AsyncTransactions)
        assert await transactions.run(lambda conn: _scalar(conn, select(1))) == 1
        await engine.dispose()


def test_complete_drives_a_coroutine_that_never_suspends_to_its_value() -> None:
    async def answer() -> int:
        return 42

    assert complete(answer()) == 42
