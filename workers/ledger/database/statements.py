"""The ledger's hot statements as driver SQL: claim, finish, usage and audit inserts, per
dialect.

Every job passes through these four statements, in batches of up to ``ledger_batch_max``.
Through SQLAlchemy's compiled-statement path they cost ~80 µs of CPU per job (parameter
processing per row, insertmanyvalues); handed to the driver as plain SQL with positional
parameters, ~15 µs (``docs/performance.md``). Column names come from the models, so the SQL
cannot drift from the schema; everything else in the ledger stays SQLAlchemy Core.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from workers.ledger.database.models import AuditRow, JobRow, RowStatus, UsageRow
from workers.ledger.database.transactions import Connection

CLAIM_COLUMNS = (
    "tenant",
    "job_id",
    "status",
    "batch_id",
    "kind",
    "route",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cost_nusd",
    "lease_owner",
    "lease_expires_at",
    "claims",
    "created_at",
    "updated_at",
)
FINISH_COLUMNS = (
    "status",
    "batch_id",
    "kind",
    "route",
    "provider",
    "deployment",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cost_nusd",
    "result_json",
    "lease_owner",
    "lease_expires_at",
    "updated_at",
    "completed_at",
)
USAGE_COLUMNS = (
    "event_id",
    "tenant",
    "job_id",
    "batch_id",
    "route",
    "provider",
    "deployment",
    "input_tokens",
    "output_tokens",
    "cost_nusd",
    "cached",
    "timestamp",
    "payload",
    "tags",
)

AUDIT_COLUMNS = (
    "tenant",
    "completed_at",
    "job_id",
    "submitted_at",
    "batch_id",
    "kind",
    "route",
    "template",
    "template_version",
    "provider",
    "deployment",
    "region",
    "signed_by",
    "guardrails",
    "status",
    "error_code",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cost_nusd",
    "request_sha256",
    "result_sha256",
    "capture",
)

# the most bound parameters one statement may carry: PostgreSQL's wire limit is 32,767 and
# SQLite's default limit is 32,766 (999 before SQLite 3.32)
MAX_PARAMETERS = {"postgresql": 32_767, "sqlite": 32_766}


def _check(table_columns: Sequence[str], wanted: Sequence[str]) -> None:
    unknown = set(wanted) - set(table_columns)
    if unknown:
        raise RuntimeError(f"ledger statements name unknown columns: {sorted(unknown)}")


_check([c.name for c in JobRow.__table__.columns], CLAIM_COLUMNS + FINISH_COLUMNS)
_check([c.name for c in UsageRow.__table__.columns], USAGE_COLUMNS)
_check([c.name for c in AuditRow.__table__.columns], AUDIT_COLUMNS)


class Statements:
    """Driver SQL for one dialect (``sqlite`` with ``?``, ``postgresql`` with ``$n``)."""

    def __init__(self, dialect: str) -> None:
        if dialect not in MAX_PARAMETERS:
            raise ValueError(f"no ledger statements for the {dialect!r} dialect")
        self.dialect = dialect
        self.claim_rows_max = min(1000, MAX_PARAMETERS[dialect] // len(CLAIM_COLUMNS))
        self.finish = self._finish()
        self.usage_insert = self._insert(UsageRow.__tablename__, USAGE_COLUMNS)
        self.audit_insert = self._insert(AuditRow.__tablename__, AUDIT_COLUMNS)
        self._claim_inserts: dict[int, str] = {}

    def placeholders(self, count: int, start: int = 1) -> list[str]:
        if self.dialect == "sqlite":
            return ["?"] * count
        return [f"${n}" for n in range(start, start + count)]

    def claim_insert(self, rows: int) -> str:
        """Insert ``rows`` running rows; existing keys are left alone; returns inserted keys."""
        sql = self._claim_inserts.get(rows)
        if sql is None:
            sql = self._claim_inserts[rows] = self._claim_insert(rows)
        return sql

    def _claim_insert(self, rows: int) -> str:
        if not 0 < rows <= self.claim_rows_max:
            raise ValueError(f"claim batch of {rows} rows (1..{self.claim_rows_max})")
        width = len(CLAIM_COLUMNS)
        marks = self.placeholders(rows * width)
        values = ",".join(
            "(" + ",".join(marks[i * width : (i + 1) * width]) + ")" for i in range(rows)
        )
        return (
            f"INSERT INTO {JobRow.__tablename__} ({','.join(CLAIM_COLUMNS)}) VALUES {values} "
            "ON CONFLICT DO NOTHING RETURNING tenant, job_id"
        )

    def _finish(self) -> str:
        """Store a terminal result on a running row; parameters: FINISH_COLUMNS, tenant, job_id."""
        marks = self.placeholders(len(FINISH_COLUMNS) + 2)
        sets = ", ".join(
            f"{name} = {mark}" for name, mark in zip(FINISH_COLUMNS, marks[:-2], strict=True)
        )
        tenant, job_id = marks[-2:]
        return (
            f"UPDATE {JobRow.__tablename__} SET {sets} "
            f"WHERE tenant = {tenant} AND job_id = {job_id} "
            f"AND status = '{RowStatus.RUNNING.value}'"
        )

    def _insert(self, table: str, columns: Sequence[str]) -> str:
        marks = self.placeholders(len(columns))
        return (
            f"INSERT INTO {table} ({','.join(columns)}) "
            f"VALUES ({','.join(marks)}) ON CONFLICT DO NOTHING"
        )


@functools.cache
def statements(dialect: str) -> Statements:
    return Statements(dialect)


def dialect_insert(conn: Connection) -> Any:
    """The connection's own ``insert`` (PostgreSQL's or SQLite's): the one with
    ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
