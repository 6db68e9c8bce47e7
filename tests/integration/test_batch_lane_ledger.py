"""The batch lane's ledger state on SQLite and PostgreSQL: items are taken by one packer at a
time, come back when a packer's lease lapses, a submission is polled by one worker at a time,
and jobs handed back go to the online path."""

from __future__ import annotations

import time

from sqlalchemy import insert, select

from workers.ledger import batch_lane_rows as lane
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import JobRow


def item(n: int, deployment: str = "sim:m") -> lane.Item:
    return lane.Item(
        tenant="acme",
        job_id=f"j{n}",
        custom_id=f"c{n}",
        deployment_key=deployment,
        kind="chat",
        line="{}",
        job_json="{}",
        who_json="{}",
        topic="t",
        record_value="{}",
        record_headers="[]",
        deadline=None,
        generation=1,
    )


async def test_packing_polling_and_handing_back(database_url: str) -> None:
    engine = create_engine(database_url)
    now = time.time()
    try:
        async with engine.begin() as conn:
            for n in range(5):
                await conn.execute(
                    insert(JobRow).values(
                        tenant="acme",
                        job_id=f"j{n}",
                        status="running",
                        attempts=0,
                        input_tokens=0,
                        output_tokens=0,
                        cost_nusd=0,
                        lease_owner="w1",
                        lease_expires_at=now + 30,
                        claims=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                await lane.enqueue(
                    conn, item(n, "sim:m" if n < 4 else "sim:other"), now + 90_000, now
                )
        async with engine.begin() as conn:
            waiting = sorted((w.deployment_key, w.items) for w in await lane.waiting(conn, now))
            assert waiting == [("sim:m", 4), ("sim:other", 1)]
            first = await lane.take_pending(conn, "sim:m", 3, "w1", 60, now)
        async with engine.begin() as conn:
            second = await lane.take_pending(conn, "sim:m", 3, "w2", 60, now)
        assert [i.job_id for i in first] == ["j0", "j1", "j2"]
        assert [i.job_id for i in second] == ["j3"]  # never the same rows twice
        async with engine.begin() as conn:
            await lane.submitted(conn, "batch_1", "sim:m", first, "w1", now)
        async with engine.begin() as conn:  # w2's lease lapses before it submits
            again = await lane.take_pending(conn, "sim:m", 3, "w3", 60, now + 61)
            assert [i.job_id for i in again] == ["j3"]
        async with engine.begin() as conn:
            assert await lane.take_due_batch(conn, "w1", 30, now) == ("batch_1", "sim:m")
            assert await lane.take_due_batch(conn, "w2", 30, now) is None  # w1 polls it
            assert await lane.take_due_batch(conn, "w2", 30, now + 31) == ("batch_1", "sim:m")
            items = await lane.items_of(conn, "batch_1")
            assert sorted(i.custom_id for i in items) == ["c0", "c1", "c2"]
            await lane.items_done(conn, [("acme", "j0"), ("acme", "j1")])
            await lane.release_jobs(conn, [("acme", "j2")])
            await lane.batch_ended(conn, "batch_1", now)
            assert await lane.items_of(conn, "batch_1") == [i for i in items if i.job_id == "j2"]
            rows = {
                r.job_id: r for r in await conn.execute(select(JobRow.job_id, JobRow.lease_owner))
            }
        assert rows["j0"].lease_owner == lane.BATCH_OWNER
        assert rows["j2"].lease_owner is None  # back to the online path
    finally:
        await engine.dispose()
