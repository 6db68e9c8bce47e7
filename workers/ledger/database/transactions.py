"""How a ledger transaction reaches the database: one protocol, two ways.

The ledger's SQL (this package) is written once, as coroutines taking a :class:`Connection` —
the part of SQLAlchemy's ``AsyncConnection`` it uses — and run by a :class:`Transactions`:

* :class:`AsyncTransactions` (PostgreSQL over asyncpg): each statement is awaited on the
  event loop, as usual.
* :class:`ThreadTransactions` (SQLite): the whole transaction — BEGIN, every statement, COMMIT —
  runs on the ledger's own thread in **one** hand-off. Through aiosqlite each of those is a
  hand-off of its own (queue to its thread, wake the loop with the answer), and under load a
  busy event loop makes each wait: a 10-job flush took 3.3 ms of which 0.9 ms was SQLite's.
  The coroutine is driven to completion on the thread without an event loop
  (:func:`complete`): every ``await`` on a :class:`_ThreadConnection` returns at once, so the
  work may await nothing else — a coroutine that does is an error, raised.

One thread and one connection serve all of a worker's SQLite transactions, in order, as the
single pooled aiosqlite connection did before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar, TypeVarTuple, overload

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import CursorResult, Executable, create_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.selectable import TypedReturnsRows
from sqlalchemy.util.typing import TupleAny

from broker.errors import SuspendedLedgerWork
from workers.ledger.database.engine import configure_sqlite

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Connection(Protocol):
    """What ledger SQL needs of a connection (``AsyncConnection`` has it)."""

    @property
    def dialect(self) -> Dialect: ...

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*Ts], parameters: Any = None
    ) -> CursorResult[*Ts]: ...

    @overload
    async def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[*TupleAny]: ...

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None
    ) -> CursorResult[*TupleAny]: ...


Work = Callable[[Connection], Coroutine[Any, Any, T]]


class Transact(Protocol):
    """What a component is given to run its ledger work in a transaction
    (``LedgerWriter.run``)."""

    def __call__(self, work: Work[T], /) -> Awaitable[T]: ...


class Transactions(Protocol):
    async def run(self, work: Work[T]) -> T:
        """Run ``work`` in one transaction: committed when it returns, rolled back if it
        raises."""
        ...

    async def close(self) -> None: ...


class AsyncTransactions:
    """Each statement awaited on the event loop (PostgreSQL, asyncpg)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, work: Work[T]) -> T:
        async with self.engine.begin() as conn:
            return await work(conn)

    async def close(self) -> None:
        return None


class _ThreadConnection:
    """A synchronous connection behind the awaitable :class:`Connection` face."""

    __slots__ = ("_conn",)

    def __init__(self, conn: SyncConnection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        return self._conn.dialect

    async def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[*TupleAny]:
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None
    ) -> CursorResult[*TupleAny]:
        return self._conn.exec_driver_sql(statement, parameters)


def complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends to its result, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise SuspendedLedgerWork(
        "ledger work on the SQLite thread may await only its connection, nothing else"
    )


class ThreadTransactions:
    """Each transaction in one hand-off to the ledger's own thread (SQLite, ``url`` with the
    pysqlite driver); its connection is set up as the async engine's (WAL, busy timeout,
    BEGIN IMMEDIATE)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
        configure_sqlite(self.engine)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "headway-ledger")
        self._closed = False

    async def run(self, work: Work[T]) -> T:
        if self._closed:
            raise RuntimeError("the ledger's transactions are closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transaction, work)

    def _transaction(self, work: Work[T]) -> T:
        with self.engine.begin() as conn:
            return complete(work(_ThreadConnection(conn)))

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self.engine.dispose)
        self._thread.shutdown(wait=True)


def transactions_for(engine: AsyncEngine) -> Transactions:
    """SQLite (a file): on the ledger's own thread; anything else: on the event loop. (An
    in-memory SQLite database lives in one connection: it stays on the engine's.)"""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        sync_url = url.set(drivername="sqlite+pysqlite")
        return ThreadTransactions(sync_url.render_as_string(hide_password=False))
    return AsyncTransactions(engine)
