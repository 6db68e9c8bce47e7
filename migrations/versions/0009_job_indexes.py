"""jobs: indexes a fresh table's planner cannot choose for a lookup by key

PostgreSQL plans statements on a table it has not analysed yet as if the table were tiny, and
a worker's connection keeps those plans: with ``(status, lease_owner)`` and ``(tenant,
batch_id)`` on ``jobs``, the statement that finishes a job by its key (``tenant``, ``job_id``,
``status``) was planned on either index — scanning every running (and every dead) entry, or
every job of the tenant — and grew slower with every job of a fresh ledger's first backfill
(measured in docs/architecture.md: 0.05 → 9 ms a statement, 3× the database's CPU). With the
lease index led by ``lease_owner`` and the batch index by ``batch_id``, no index but the
primary key matches a lookup by key, whatever the statistics say.

The indexes are built in the migration's transaction (the table is locked for writes while
they are): on a very large ledger, create ``ix_jobs_lease`` and ``ix_jobs_batch`` with
``CREATE INDEX CONCURRENTLY`` first; this migration then skips what exists.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_lease", "jobs", ["lease_owner", "status"], if_not_exists=True)
    op.create_index("ix_jobs_batch", "jobs", ["batch_id", "tenant"], if_not_exists=True)
    op.drop_index("ix_jobs_status_lease", table_name="jobs")
    op.drop_index("ix_jobs_tenant_batch", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_tenant_batch", "jobs", ["tenant", "batch_id"])
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_owner"])
    op.drop_index("ix_jobs_batch", table_name="jobs")
    op.drop_index("ix_jobs_lease", table_name="jobs")
