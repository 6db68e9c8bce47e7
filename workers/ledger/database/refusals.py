"""Telling a value the database refuses from a database that is down.

A batched ledger write fails as a whole when one of its operations carries a value a column
cannot hold: a U+0000 in a PostgreSQL text column, an integer beyond BIGINT or SQLite's
INTEGER. Retrying that batch would fail for ever and hold every job flushed with it, so the
writer asks :func:`refused_value` and, when it says so, runs the batch's operations one by one:
only the offending one fails, with :class:`~broker.errors.LedgerRefused`, and goes down the
poison path. Anything else (connections, timeouts, locks) is an outage: the jobs wait.
"""

from __future__ import annotations

from sqlalchemy.exc import DataError

#: SQLSTATE class 22, "data exception" (invalid text encoding, numeric out of range, …)
DATA_EXCEPTION_CLASS = "22"


def refused_value(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says a value could not be stored or sent."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DataError | OverflowError | UnicodeEncodeError):
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(DATA_EXCEPTION_CLASS):
            return True
        # asyncpg refuses an argument before sending it with its DataError, a ValueError
        if isinstance(current, ValueError) and type(current).__module__.startswith("asyncpg"):
            return True
        wrapped = getattr(current, "orig", None)
        current = (
            (wrapped if isinstance(wrapped, BaseException) else None)
            or current.__cause__
            or current.__context__
        )
    return False
