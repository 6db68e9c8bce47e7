"""Work under a lease that never outlives it, on SQLite and PostgreSQL: work held up past the
lease's length runs to its end while the lease is renewed (another worker cannot take it); a
lease another worker holds runs nothing; the work's own timeout is its own, not a lost lease;
the lease is given up at the end."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from workers.ledger.database.lease_keeper import LeaseKeeper, Tenure
from workers.ledger.database.models import LedgerLeaseRow
from workers.ledger.database.transactions import Connection, Transactions

LEASE_S = 0.6


async def expiry(ledger: Transactions, name: str) -> float:
    async def read(conn: Connection) -> float:
        found = await conn.execute(
            select(LedgerLeaseRow.expires_at).where(LedgerLeaseRow.name == name)
        )
        return float(found.scalar_one())

    return await ledger.run(read)


async def test_work_longer_than_the_lease_keeps_it_renewed_and_gives_it_up_at_the_end(
    ledger: Transactions,
) -> None:
    first = LeaseKeeper(ledger.run, "job", "w1", time.time, LEASE_S)
    second = LeaseKeeper(ledger.run, "job", "w2", time.time, LEASE_S)
    tries: list[Tenure] = []
    ran: list[str] = []

    async def long_work() -> None:
        for _ in range(8):  # 1.6 s: more than two leases
            tries.append(await second.hold(lambda: asyncio.sleep(0)))
            await asyncio.sleep(0.2)
        ran.append("w1")

    assert await first.hold(long_work) is Tenure.DONE
    assert ran == ["w1"] and set(tries) == {Tenure.NOT_HELD}
    assert await expiry(ledger, "job") == 0.0  # released
    assert await second.hold(lambda: asyncio.sleep(0)) is Tenure.DONE


async def test_a_lease_held_elsewhere_runs_nothing(ledger: Transactions) -> None:
    other = LeaseKeeper(ledger.run, "job", "w2", time.time, LEASE_S)
    ran: list[str] = []

    async def work() -> None:
        ran.append("w1")

    async def hold_it() -> None:
        assert await LeaseKeeper(ledger.run, "job", "w1", time.time, LEASE_S).hold(work) is (
            Tenure.NOT_HELD
        )

    assert await other.hold(hold_it) is Tenure.DONE
    assert ran == []


async def test_the_works_own_timeout_is_raised_not_taken_for_a_lost_lease(
    ledger: Transactions,
) -> None:
    keeper = LeaseKeeper(ledger.run, "job", "w1", time.time, LEASE_S)

    async def times_out() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        await keeper.hold(times_out)
    assert await expiry(ledger, "job") == 0.0
