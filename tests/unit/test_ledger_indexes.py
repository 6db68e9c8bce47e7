"""The ledger's indexes: a lookup by key can only be planned on the primary key.

PostgreSQL plans statements on a table it has not analysed yet as if the table were tiny, and
keeps the plan in the connection: an index leading with a column of a key lookup is a plan the
planner may pick and then scan in full for every statement (migration 0009)."""

from __future__ import annotations

from sqlalchemy import Table

from workers.ledger.database.models import JobRow


def leading_columns(table: Table) -> dict[str, str]:
    return {index.name or "": next(iter(index.columns)).name for index in table.indexes}


def test_no_index_of_jobs_but_the_primary_key_leads_with_what_a_key_lookup_names() -> None:
    table = JobRow.__table__
    assert isinstance(table, Table)
    named_by_lookups = {"tenant", "job_id", "status"}  # claim, finish, release: by key, status
    assert [c.name for c in table.primary_key.columns] == ["tenant", "job_id"]
    leading = leading_columns(table)
    assert {name: col for name, col in leading.items() if col in named_by_lookups} == {}
