"""The SQLite ledger runs in WAL mode (readers never wait for the writer), set by the first
connection and kept in the file; a later connection, opened while another writes, does not
ask for it again."""

from __future__ import annotations

from pathlib import Path

from workers.ledger.database.engine import create_engine


async def test_a_new_sqlite_ledger_is_in_wal_mode_for_every_connection(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/ledger.db"
    one, two = create_engine(url), create_engine(url)
    try:
        async with one.begin() as writing:
            await writing.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await writing.exec_driver_sql("INSERT INTO t VALUES (1)")
            async with two.connect():  # opened (its pragmas run) mid-write
                pass
            mode = (await writing.exec_driver_sql("PRAGMA journal_mode")).scalar()
        assert mode == "wal"
    finally:
        await one.dispose()
        await two.dispose()
