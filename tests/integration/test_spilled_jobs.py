"""Spilled jobs in the ledger, on SQLite and PostgreSQL: stored rows are taken fairly by
account weight across takers, a row is held by one taker at a time, and rows that a worker
gave back or stopped renewing are taken again."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from typing import Any

import pytest

from workers.ledger import spill_rows
from workers.ledger.database.transactions import Transactions
from workers.ledger.spill_rows import SpilledRecord

WEIGHTS = {"heavy": 3.0, "light": 1.0}


def weight(account: str) -> float:
    return WEIGHTS.get(account, 1.0)


def records(account: str, count: int, *, lane: str = "normal", batch: str = "b") -> list[Any]:
    return [
        SpilledRecord(
            lane,
            account,
            account,
            f"{account}-{i}",
            batch,
            f"jobs.{account}",
            0,
            i,
            1_700_000_000_000,
            None,
            b'{"job_id": "%d"}' % i,
            spill_rows.encode_headers([("headway-signature", b"\xff\x00"), ("null", None)]),
        )
        for i in range(count)
    ]


async def take(ledger: Transactions, limit: int, owner: str = "w1", **kw: Any) -> list[Any]:
    work = functools.partial(
        spill_rows.take,
        lane=kw.get("lane", "normal"),
        limit=limit,
        owner=owner,
        lease_until=kw.get("lease_until", 1e12),
        weight=weight,
    )
    return list(await ledger.run(work))


async def test_a_record_comes_back_as_it_was_stored(ledger: Transactions) -> None:
    stored = records("light", 1)
    await ledger.run(functools.partial(spill_rows.store, records=stored, now=10.0))
    [taken] = await take(ledger, 5)
    assert taken.record == stored[0]
    assert taken.spilled_at == 10.0
    assert spill_rows.decode_headers(taken.record.headers) == [
        ("headway-signature", b"\xff\x00"),
        ("null", None),  # a null value stays null
    ]


async def test_accounts_are_served_by_weight_whoever_takes(ledger: Transactions) -> None:
    await ledger.run(
        functools.partial(
            spill_rows.store, records=records("heavy", 400) + records("light", 400), now=1.0
        )
    )
    served: Counter[str] = Counter()
    for turn in range(10):  # three workers taking in turn, 16 at a time
        for job in await take(ledger, 16, owner=f"w{turn % 3}"):
            served[job.record.account] += 1
    assert sum(served.values()) == 160
    assert served["heavy"] / served["light"] == pytest.approx(3.0, rel=0.1)


async def test_an_account_that_was_idle_starts_level_with_the_others(
    ledger: Transactions,
) -> None:
    await ledger.run(functools.partial(spill_rows.store, records=records("light", 200), now=1.0))
    for _ in range(10):  # light alone: its virtual time runs ahead
        await take(ledger, 8)
    await ledger.run(functools.partial(spill_rows.store, records=records("newcomer", 50), now=2.0))
    served = Counter(job.record.account for job in await take(ledger, 16))
    # the newcomer banks no credit for the time it had nothing queued: turns alternate
    assert served == {"light": 8, "newcomer": 8}


async def test_a_row_is_held_by_one_taker_and_finished_rows_are_gone(
    ledger: Transactions,
) -> None:
    await ledger.run(functools.partial(spill_rows.store, records=records("light", 100), now=1.0))
    first, second = await asyncio.gather(take(ledger, 60, "w1"), take(ledger, 60, "w2"))
    ids = [job.id for job in first + second]
    assert len(ids) == len(set(ids)) == 100
    await ledger.run(functools.partial(spill_rows.finish, ids=ids))
    assert await take(ledger, 10) == []
    assert await ledger.run(spill_rows.waiting_accounts) == {}


async def test_given_back_and_lapsed_rows_are_taken_again(ledger: Transactions) -> None:
    await ledger.run(functools.partial(spill_rows.store, records=records("light", 30), now=1.0))
    held = await take(ledger, 10, "w1", lease_until=100.0)
    given = await take(ledger, 10, "w2", lease_until=10_000.0)
    assert len(held) == len(given) == 10
    back = await ledger.run(
        functools.partial(spill_rows.release, owner="w2", ids=[job.id for job in given[:4]])
    )
    assert back == 4
    lapsed = await ledger.run(functools.partial(spill_rows.reclaim, now=500.0))
    assert lapsed == 10  # w1 stopped renewing; w2 renewed
    again = await take(ledger, 100, "w3")
    assert len(again) == 10 + 4 + 10
    assert {job.id for job in held} <= {job.id for job in again}


async def test_a_batch_counts_its_spilled_jobs(ledger: Transactions) -> None:
    stored = records("light", 7, batch="nightly") + records("heavy", 3, batch="other")
    await ledger.run(functools.partial(spill_rows.store, records=stored, now=1.0))
    await take(ledger, 2)
    count = functools.partial(spill_rows.queued_in_batch, batch_id="nightly")
    assert await ledger.run(count) == 7  # waiting or held: not finished
    assert await ledger.run(functools.partial(count, tenant="heavy")) == 0
