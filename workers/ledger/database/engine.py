"""Engine creation and migrations for the ledger database (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import migrations

if TYPE_CHECKING:  # Alembic is imported when a migration runs: every CLI command starts faster
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(migrations.__file__).parent
WAL_SWITCH_TRIES = 10  # ~1 s in all
CONNECT_TIMEOUT_S = 10.0  # PostgreSQL: opening a connection
COMMAND_TIMEOUT_S = 60.0  # PostgreSQL: one statement


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    # busy_timeout first: switching to WAL needs a lock another connection may hold
    cursor.execute("PRAGMA busy_timeout=30000")
    _wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # SQLAlchemy then emits BEGIN itself (_sqlite_begin_immediate)
    dbapi_connection.isolation_level = None


def _wal(cursor: Any) -> None:
    """WAL mode is kept in the file: a new connection to a database already in WAL mode does
    not ask for it again. Asking takes a lock for which SQLite may answer "database is locked"
    at once, without waiting on busy_timeout, while another connection writes (seen when a
    second worker opened its connection mid-write), so the switch itself is retried briefly."""
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    for attempt in range(WAL_SWITCH_TRIES):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as error:  # the driver's OperationalError, as the adapter raises it
            if "locked" not in str(error) or attempt == WAL_SWITCH_TRIES - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _sqlite_begin_immediate(connection: Any) -> None:
    """Take the write lock at BEGIN: a deferred transaction that reads and then writes would
    fail at once with "database is locked" when another connection wrote in between (SQLite
    does not wait there, to avoid deadlock); IMMEDIATE waits on busy_timeout instead."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout and BEGIN IMMEDIATE on every connection of ``engine``."""
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin_immediate)


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite runs in WAL mode with one writer connection."""
    if is_sqlite(url):
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
        configure_sqlite(engine.sync_engine)
        return engine
    # bounded waits: a database behind a dead network must fail a transaction, not hang it
    return create_async_engine(
        url,
        pool_size=8,
        max_overflow=8,
        pool_pre_ping=True,
        pool_timeout=30,
        connect_args={"timeout": CONNECT_TIMEOUT_S, "command_timeout": COMMAND_TIMEOUT_S},
    )


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_sync(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations (``headway db upgrade``); runs Alembic in a thread."""
    await asyncio.to_thread(upgrade_sync, url, revision)
