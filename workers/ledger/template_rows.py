"""Prompt templates in the database, seen together with the built-in ones.

Versions are immutable: a push adds version ``latest + 1`` unless its content is the same as
the latest version's (then it is that version: pushing twice is harmless). Two pushers racing
on a new version collide on the primary key; the loser re-reads and tries again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.ledger.database.models import TemplateRow
from workers.ledger.database.transactions import Connection
from workers.templates.rendering import BUILTIN, Template, TemplateSpec

PUSH_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Pushed:
    version: int
    created: bool  # False: the latest version already had this content


@dataclass(frozen=True, slots=True)
class Listed:
    name: str
    version: int
    description: str
    builtin: bool
    created_at: float | None


async def get(conn: Connection, name: str, version: int | None) -> Template | None:
    """A version of ``name`` (None: the latest), stored or built in; None when absent."""
    if version is None:
        version = await latest_version(conn, name)
        if version is None:
            return None
    row = (
        await conn.execute(
            select(TemplateRow.body).where(TemplateRow.name == name, TemplateRow.version == version)
        )
    ).first()
    if row is not None:
        return Template(TemplateSpec.from_body(name, json.loads(row.body)), version)
    return next((t for t in BUILTIN.get(name, []) if t.version == version), None)


async def latest_version(conn: Connection, name: str) -> int | None:
    stored = (
        await conn.execute(select(func.max(TemplateRow.version)).where(TemplateRow.name == name))
    ).scalar()
    builtin = max((t.version for t in BUILTIN.get(name, [])), default=None)
    versions = [v for v in (stored, builtin) if v is not None]
    return max(versions) if versions else None


async def push(conn: AsyncConnection, spec: TemplateSpec) -> Pushed:
    """Store ``spec`` as the next version of its name (in its own savepoint per attempt)."""
    digest = spec.digest()
    for _ in range(PUSH_ATTEMPTS):
        latest = await get(conn, spec.name, None)
        if latest is not None and latest.spec.digest() == digest:
            return Pushed(latest.version, created=False)
        version = (latest.version if latest is not None else 0) + 1
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(TemplateRow).values(
                        name=spec.name,
                        version=version,
                        digest=digest,
                        body=json.dumps(spec.body(), sort_keys=True),
                        created_at=time.time(),
                    )
                )
        except IntegrityError:  # another pusher took this version: look again
            continue
        return Pushed(version, created=True)
    raise RuntimeError(f"could not push template {spec.name!r}: too many concurrent pushes")


async def listing(conn: Connection, name: str | None = None) -> list[Listed]:
    """Every version (of ``name``), built-in ones included, by name then version."""
    query = select(TemplateRow.name, TemplateRow.version, TemplateRow.body, TemplateRow.created_at)
    if name is not None:
        query = query.where(TemplateRow.name == name)
    found = [
        Listed(
            row.name,
            row.version,
            json.loads(row.body).get("description", ""),
            False,
            row.created_at,
        )
        for row in await conn.execute(query)
    ]
    for builtin_name, versions in BUILTIN.items():
        if name is None or builtin_name == name:
            found += [Listed(t.name, t.version, t.spec.description, True, None) for t in versions]
    return sorted(found, key=lambda item: (item.name, item.version))
