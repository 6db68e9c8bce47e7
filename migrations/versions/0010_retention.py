"""retention: finished jobs move out of ``jobs``, usage rolls up by day, one pruner at a time

``finished_jobs`` holds finished jobs past the results window without their result bodies;
``usage_daily`` the usage events past theirs, summed; ``ledger_leases`` lets one worker at a
time prune. Indexes on the completion and event times let the pruner take the oldest rows
first, a batch at a time (BRIN indexes, tried first, cannot order: every batch sorted every
finished row).
Design and measurements: docs/architecture.md, "a ledger that stays small".

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "finished_jobs",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("batch_id", sa.String(128)),
        sa.Column("kind", sa.String(16)),
        sa.Column("route", sa.String(128)),
        sa.Column("provider", sa.String(128)),
        sa.Column("deployment", sa.String(256)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nusd", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_finished_jobs_batch", "finished_jobs", ["batch_id", "tenant"])
    op.create_index("ix_finished_jobs_completed", "finished_jobs", ["completed_at"])
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("route", sa.String(128), primary_key=True),
        sa.Column("provider", sa.String(128), primary_key=True),
        sa.Column("deployment", sa.String(256), primary_key=True),
        sa.Column("batch_id", sa.String(128), primary_key=True),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nusd", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_daily_tenant", "usage_daily", ["tenant", "day"])
    op.create_table(
        "ledger_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_jobs_completed", "jobs", ["completed_at"])
    op.create_index("ix_usage_time", "usage_events", ["timestamp"])


def downgrade() -> None:
    op.drop_index("ix_usage_time", table_name="usage_events")
    op.drop_index("ix_jobs_completed", table_name="jobs")
    op.drop_table("ledger_leases")
    op.drop_index("ix_usage_daily_tenant", table_name="usage_daily")
    op.drop_table("usage_daily")
    op.drop_index("ix_finished_jobs_completed", table_name="finished_jobs")
    op.drop_index("ix_finished_jobs_batch", table_name="finished_jobs")
    op.drop_table("finished_jobs")
