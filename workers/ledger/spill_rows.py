"""Spilled jobs in the ledger: stored when a lane's buffer is full, taken fairly by any worker.

A spilled job's row is *waiting* (no ``lease_owner``) until a worker takes it (``lease_owner``
set, ``lease_expires_at`` renewed while the worker holds the job), and is deleted once the job
has finished. A row whose worker stopped renewing is waiting again (:func:`reclaim`); a worker
that gives a job back releases it (:func:`release`).

``fair_shares`` orders the accounts of a lane: :func:`take` serves the waiting accounts with
the least virtual time first, splitting what it takes between them by weight, and adds *taken*
/ weight to their time — in the transaction that takes the rows, so every worker serves by the
same clock. Its ``waiting`` count (rows no worker holds) changes in the same transactions as
the rows; a take that finds fewer rows than the count promised recounts them, so a count can
never strand an account.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, case, delete, func, select, update

from broker.headers import RecordHeaders, restored_headers, stored_headers
from workers.ledger.database.models import FairShareRow, FinishedJobRow, JobRow, SpilledJobRow
from workers.ledger.database.statements import dialect_insert, statements
from workers.ledger.database.transactions import Connection

ACCOUNTS_PER_TAKE = 16  # accounts served by one turn of a take, least virtual time first
MIN_WEIGHT = 0.01

STORE_COLUMNS = (
    "lane",
    "account",
    "tenant",
    "job_id",
    "batch_id",
    "record_topic",
    "record_partition",
    "record_offset",
    "record_timestamp",
    "record_key",
    "record_value",
    "record_headers",
    "spilled_at",
    "lease_expires_at",
)


@dataclass(frozen=True, slots=True)
class SpilledRecord:
    """A fetched job record, as stored: where it came from and everything to run it again."""

    lane: str
    account: str
    tenant: str
    job_id: str
    batch_id: str | None
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes
    headers: bytes  # encode_headers()


@dataclass(frozen=True, slots=True)
class Taken:
    """A spilled job a worker now holds."""

    id: int
    record: SpilledRecord
    spilled_at: float


NO_HEADERS = b"[]"


def encode_headers(headers: RecordHeaders) -> bytes:
    """Record headers as stored (:func:`~broker.headers.stored_headers`, as JSON bytes)."""
    if not headers:  # most records: no JSON at all (spilling is on the fetch loop's path)
        return NO_HEADERS
    return json.dumps(stored_headers(headers), separators=(",", ":")).encode()


def decode_headers(stored: bytes) -> list[tuple[str, bytes | None]]:
    if stored == NO_HEADERS:
        return []
    return restored_headers(json.loads(stored))


async def store(conn: Connection, records: Sequence[SpilledRecord], now: float) -> None:
    """Store records as waiting rows, and count them in their accounts' fair shares. A record
    already stored (read again after a rebalance) is stored once; it is counted twice, which
    the next take that comes up short corrects."""
    if not records:
        return
    sql = (
        f"INSERT INTO {SpilledJobRow.__tablename__} ({','.join(STORE_COLUMNS)}) "
        f"VALUES ({','.join(statements(conn.dialect.name).placeholders(len(STORE_COLUMNS)))}) "
        "ON CONFLICT DO NOTHING"
    )
    rows = [
        (
            r.lane,
            r.account,
            r.tenant,
            r.job_id,
            r.batch_id,
            r.topic,
            r.partition,
            r.offset,
            r.timestamp,
            r.key,
            r.value,
            r.headers,
            now,
            0.0,
        )
        for r in records
    ]
    await conn.exec_driver_sql(sql, rows)
    await _count_waiting(conn, Counter((r.lane, r.account) for r in records))


async def _count_waiting(conn: Connection, added: Counter[tuple[str, str]]) -> None:
    """Add to accounts' waiting counts; an account waiting again starts at its lane's least
    virtual time among waiting accounts (no credit for having been idle)."""
    lanes = sorted({lane for lane, _ in added})
    found = await conn.execute(
        select(FairShareRow.lane, func.min(FairShareRow.vtime))
        .where(FairShareRow.lane.in_(lanes), FairShareRow.waiting > 0)
        .group_by(FairShareRow.lane)
    )
    least = {lane: 0.0 for lane in lanes} | {lane: float(v) for lane, v in found}
    table = FairShareRow.__table__
    insert = dialect_insert(conn)
    for (lane, account), count in sorted(added.items()):  # one lock order for every worker
        statement = insert(table).values(
            lane=lane, account=account, vtime=least[lane], waiting=count
        )
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.lane, table.c.account],
            set_={
                "waiting": table.c.waiting + excluded.waiting,
                "vtime": case(
                    (and_(table.c.waiting <= 0, table.c.vtime < excluded.vtime), excluded.vtime),
                    else_=table.c.vtime,
                ),
            },
        )
        await conn.execute(statement)


_TAKEN_COLUMNS = (
    SpilledJobRow.id,
    SpilledJobRow.lane,
    SpilledJobRow.account,
    SpilledJobRow.tenant,
    SpilledJobRow.job_id,
    SpilledJobRow.batch_id,
    SpilledJobRow.record_topic,
    SpilledJobRow.record_partition,
    SpilledJobRow.record_offset,
    SpilledJobRow.record_timestamp,
    SpilledJobRow.record_key,
    SpilledJobRow.record_value,
    SpilledJobRow.record_headers,
    SpilledJobRow.spilled_at,
)


async def take(
    conn: Connection,
    lane: str,
    limit: int,
    owner: str,
    lease_until: float,
    weight: Callable[[str], float],
) -> list[Taken]:
    """Take up to ``limit`` waiting jobs of a lane, in turns: each turn splits what is left
    of ``limit`` by weight between the (up to 16) accounts with the least virtual time,
    oldest jobs first within an account."""
    taken: list[Taken] = []
    while len(taken) < limit:
        turn = await _turn(conn, lane, limit - len(taken), owner, lease_until, weight)
        if not turn:
            break
        taken.extend(turn)
    return taken


async def _turn(
    conn: Connection,
    lane: str,
    limit: int,
    owner: str,
    lease_until: float,
    weight: Callable[[str], float],
) -> list[Taken]:
    shares = await conn.execute(
        select(FairShareRow.account)
        .where(FairShareRow.lane == lane, FairShareRow.waiting > 0)
        .order_by(FairShareRow.vtime, FairShareRow.account)
        .limit(ACCOUNTS_PER_TAKE)
    )
    accounts = [account for (account,) in shares.all()]
    weights = {account: max(weight(account), MIN_WEIGHT) for account in accounts}
    total = sum(weights.values())
    taken: list[Taken] = []
    turns: list[tuple[str, float, int, int]] = []
    for account in accounts:
        if len(taken) >= limit:
            break
        share = weights[account]
        want = min(limit - len(taken), max(1, round(limit * share / total)))
        got = await _take_of(conn, lane, account, want, owner, lease_until)
        taken.extend(got)
        turns.append((account, share, want, len(got)))
    for account, share, want, got_count in sorted(turns):  # one lock order for every worker
        share_row = and_(FairShareRow.lane == lane, FairShareRow.account == account)
        waiting: Any
        if got_count < want:  # fewer than counted: count again (the count heals itself)
            # the share row is locked first, so the count (a statement of its own, with a
            # snapshot taken after that) sees every store that added to it before
            await conn.execute(select(FairShareRow.lane).where(share_row).with_for_update())
            waiting = (
                select(func.count())
                .select_from(SpilledJobRow)
                .where(
                    SpilledJobRow.lane == lane,
                    SpilledJobRow.account == account,
                    SpilledJobRow.lease_owner.is_(None),
                )
                .scalar_subquery()
            )
        else:
            waiting = FairShareRow.waiting - got_count
        await conn.execute(
            update(FairShareRow)
            .where(share_row)
            .values(waiting=waiting, vtime=FairShareRow.vtime + got_count / share)
        )
    return taken


async def _take_of(
    conn: Connection, lane: str, account: str, want: int, owner: str, lease_until: float
) -> list[Taken]:
    # driver SQL: the statement's text is built once per dialect, and rows come back as
    # tuples (through SQLAlchemy's expression and result layers a take cost 2.5 x as much)
    dialect = conn.dialect.name
    sql = _TAKE_SQL.get(dialect)
    if sql is None:
        sql = _TAKE_SQL[dialect] = _take_sql(dialect)
    rows = await conn.exec_driver_sql(sql, (owner, lease_until, lane, account, want))
    got = [Taken(row[0], SpilledRecord(*row[1:13]), row[13]) for row in rows.all()]
    got.sort(key=lambda job: job.id)
    return got


_TAKE_SQL: dict[str, str] = {}


def _take_sql(dialect: str) -> str:
    owner, until, lane, account, want = statements(dialect).placeholders(5)
    # another worker's rows are skipped, not waited on (SQLite has one writer)
    skip = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    table = SpilledJobRow.__tablename__
    return (
        f"UPDATE {table} SET lease_owner = {owner}, lease_expires_at = {until} "
        f"WHERE id IN (SELECT id FROM {table} WHERE lane = {lane} AND account = {account} "
        f"AND lease_owner IS NULL ORDER BY id LIMIT {want}{skip}) "
        f"RETURNING {', '.join(column.name for column in _TAKEN_COLUMNS)}"
    )


async def finish(conn: Connection, ids: Sequence[int]) -> None:
    """Delete the rows of finished jobs."""
    if ids:
        await conn.execute(delete(SpilledJobRow).where(SpilledJobRow.id.in_(ids)))


async def release(conn: Connection, owner: str, ids: Sequence[int] | None = None) -> int:
    """Give held rows back (``ids``, or every row ``owner`` holds): waiting again."""
    held = SpilledJobRow.lease_owner == owner
    where = held if ids is None else and_(held, SpilledJobRow.id.in_(ids))
    return await _make_waiting(conn, where)


async def reclaim(conn: Connection, now: float) -> int:
    """Rows whose worker stopped renewing its lease are waiting again."""
    lapsed = and_(SpilledJobRow.lease_owner.is_not(None), SpilledJobRow.lease_expires_at < now)
    return await _make_waiting(conn, lapsed)


async def _make_waiting(conn: Connection, where: object) -> int:
    rows = await conn.execute(
        update(SpilledJobRow)
        .where(where)  # type: ignore[arg-type]
        .values(lease_owner=None, lease_expires_at=0.0)
        .returning(SpilledJobRow.lane, SpilledJobRow.account)
    )
    added = Counter((lane, account) for lane, account in rows)
    if added:
        await _count_waiting(conn, added)
    return sum(added.values())


async def renew(conn: Connection, owner: str, lease_until: float) -> None:
    await conn.execute(
        update(SpilledJobRow)
        .where(SpilledJobRow.lease_owner == owner)
        .values(lease_expires_at=lease_until)
    )


async def waiting_accounts(conn: Connection) -> dict[str, dict[str, int]]:
    """The accounts with waiting spilled jobs, per lane, and how many wait."""
    rows = await conn.execute(
        select(FairShareRow.lane, FairShareRow.account, FairShareRow.waiting).where(
            FairShareRow.waiting > 0
        )
    )
    found: dict[str, dict[str, int]] = {}
    for lane, account, waiting in rows:
        found.setdefault(lane, {})[account] = int(waiting)
    return found


async def queued_in_batch(conn: Connection, batch_id: str, tenant: str | None = None) -> int:
    """A batch's spilled jobs that have not started (no ledger row of their own yet)."""
    return int((await conn.execute(queued_statement(batch_id, tenant))).scalar_one())


def queued_statement(batch_id: str, tenant: str | None = None) -> Select[int]:
    """How many of a batch's jobs wait in the ledger, spilled, not claimed yet."""
    claimed = (
        select(JobRow.job_id)
        .where(JobRow.tenant == SpilledJobRow.tenant, JobRow.job_id == SpilledJobRow.job_id)
        .exists()
    )
    moved = (  # a copy of a job that finished long ago (its row moved)
        select(FinishedJobRow.job_id)
        .where(
            FinishedJobRow.tenant == SpilledJobRow.tenant,
            FinishedJobRow.job_id == SpilledJobRow.job_id,
        )
        .exists()
    )
    statement = select(func.count()).where(SpilledJobRow.batch_id == batch_id, ~claimed, ~moved)
    if tenant is not None:
        statement = statement.where(SpilledJobRow.tenant == tenant)
    return statement
