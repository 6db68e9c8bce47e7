"""The Alembic migrations build exactly the schema the models describe, on SQLite and on
PostgreSQL (a model changed without a migration fails here), and downgrade cleanly."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from workers.ledger.database.engine import alembic_config, create_engine, upgrade
from workers.ledger.database.models import Base


def differences(sync_conn: Any) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def schema_differences(url: str) -> list[Any]:
    """What the database's schema lacks or has beyond the models'."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            found: list[Any] = await conn.run_sync(differences)
            return found
    finally:
        await engine.dispose()


async def test_the_migrated_schema_is_the_models_schema(database_url: str) -> None:
    assert await schema_differences(database_url) == []


async def test_every_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    await upgrade(database_url)
    assert await schema_differences(database_url) == []
