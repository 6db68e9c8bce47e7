"""Response-cache rows: read by key, written with the job that produced them, pruned by age.

An entry is written in the transaction that stores the result of the job whose provider call
produced it (:meth:`LedgerRepository.finish_many`), so an entry exists only for an answer
that was also delivered as a result. A later answer for the same key replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, tuple_

from workers.ledger.database.models import CacheRow
from workers.ledger.database.statements import dialect_insert
from workers.ledger.database.transactions import Connection

STORE_CHUNK = 500  # rows per statement: well inside both databases' bind-parameter limits


@dataclass(frozen=True, slots=True)
class CacheEntry:
    scope: str
    key: str
    provider: str
    deployment: str
    output_json: str
    input_tokens: int
    output_tokens: int
    created_at: float
    expires_at: float


async def lookup(conn: Connection, keys: Sequence[tuple[str, str]], now: float) -> list[CacheEntry]:
    """The live entries among (scope, key) pairs."""
    if not keys:
        return []
    rows = await conn.execute(
        select(CacheRow).where(
            tuple_(CacheRow.scope, CacheRow.key).in_(list(keys)), CacheRow.expires_at > now
        )
    )
    return [
        CacheEntry(
            row.scope,
            row.key,
            row.provider,
            row.deployment,
            row.output_json,
            row.input_tokens,
            row.output_tokens,
            row.created_at,
            row.expires_at,
        )
        for row in rows
    ]


async def store(conn: Connection, entries: Sequence[CacheEntry]) -> None:
    """Insert or replace entries (the newest answer for a key wins)."""
    for start in range(0, len(entries), STORE_CHUNK):
        await _store(conn, entries[start : start + STORE_CHUNK])


async def _store(conn: Connection, entries: Sequence[CacheEntry]) -> None:
    insert = dialect_insert(conn)
    values = [
        {
            "scope": e.scope,
            "key": e.key,
            "provider": e.provider,
            "deployment": e.deployment,
            "output_json": e.output_json,
            "input_tokens": e.input_tokens,
            "output_tokens": e.output_tokens,
            "created_at": e.created_at,
            "expires_at": e.expires_at,
        }
        for e in {(e.scope, e.key): e for e in entries}.values()  # one row per key per statement
    ]
    statement = insert(CacheRow).values(values)
    replaced = {
        column: statement.excluded[column]
        for column in (
            "provider",
            "deployment",
            "output_json",
            "input_tokens",
            "output_tokens",
            "created_at",
            "expires_at",
        )
    }
    await conn.execute(
        statement.on_conflict_do_update(index_elements=["scope", "key"], set_=replaced)
    )


async def prune(conn: Connection, now: float, max_entries: int) -> int:
    """Drop expired entries, then the oldest beyond ``max_entries``; returns how many."""
    expired = await conn.execute(delete(CacheRow).where(CacheRow.expires_at <= now))
    dropped = expired.rowcount or 0
    count = (await conn.execute(select(func.count()).select_from(CacheRow))).scalar_one()
    excess = count - max_entries
    if excess > 0:
        cutoff = (
            await conn.execute(
                select(CacheRow.created_at).order_by(CacheRow.created_at).offset(excess).limit(1)
            )
        ).scalar()
        if cutoff is not None:
            oldest = await conn.execute(delete(CacheRow).where(CacheRow.created_at < cutoff))
            dropped += oldest.rowcount or 0
    return dropped
