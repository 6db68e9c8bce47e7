"""Telling a value the database refuses from a database that is down.

A batched ledger write fails as a whole when one of its operations carries a value a column
cannot hold: a U+0000 in a PostgreSQL text column, an integer beyond BIGINT or SQLite's
INTEGER. Retrying that batch would fail for ever and hold every job flushed with it, so the
writer asks :func:`refused_value` and, when it says so, runs the batch's operations one by one:
only the offending one fails, with :class:`~broker.errors.LedgerRefused`, and goes down the
poison path. A transaction the database rolled back to break a deadlock or a serialization
conflict (:func:`conflicted`) is run again at once. Anything else (connections, timeouts) is
an outage: the jobs wait.
"""

from __future__ import annotations

from sqlalchemy.exc import DataError

#: SQLSTATE class 22, "data exception" (invalid text encoding, numeric out of range, …)
DATA_EXCEPTION_CLASS = "22"
#: SQLSTATE class 40, "transaction rollback" (deadlock detected, serialization failure)
ROLLBACK_CLASS = "40"
#: SQLSTATE 42501, "insufficient privilege" (a role without the right, e.g. not the owner)
INSUFFICIENT_PRIVILEGE = "42501"


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and what it wraps (``orig``, causes, contexts)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not known for known in seen):
        seen.append(current)
        wrapped = getattr(current, "orig", None)
        current = (
            (wrapped if isinstance(wrapped, BaseException) else None)
            or current.__cause__
            or current.__context__
        )
    return seen


def _sqlstate(error: BaseException) -> str:
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return sqlstate if isinstance(sqlstate, str) else ""


def conflicted(error: BaseException) -> bool:
    """Whether the database rolled the transaction back for a conflict with another one
    (deadlock, serialization): the same work run again succeeds."""
    return any(_sqlstate(link).startswith(ROLLBACK_CLASS) for link in _chain(error))


def not_permitted(error: BaseException) -> bool:
    """Whether the database refused the statement to this role (``permission denied``,
    ``must be owner``): the same statement fails again until an operator grants the right."""
    return any(_sqlstate(link) == INSUFFICIENT_PRIVILEGE for link in _chain(error))


def refused_value(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says a value could not be stored or sent."""
    for current in _chain(error):
        if isinstance(current, DataError | OverflowError | UnicodeEncodeError):
            return True
        if _sqlstate(current).startswith(DATA_EXCEPTION_CLASS):
            return True
        # asyncpg refuses an argument before sending it with its DataError, a ValueError
        if isinstance(current, ValueError) and type(current).__module__.startswith("asyncpg"):
            return True
    return False
