"""spilled jobs and fair shares: a lane's backlog waits in the ledger, served fairly

Records of a tenant over its share of a full lane buffer are stored in ``spilled_jobs``
instead of pausing the lane; ``fair_shares`` keeps one virtual time per (lane, account) that
every worker serves by (issue 21, docs/architecture.md).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spilled_jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("lane", sa.String(length=8), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("batch_id", sa.String(length=128), nullable=True),
        sa.Column("record_topic", sa.String(length=249), nullable=False),
        sa.Column("record_partition", sa.Integer(), nullable=False),
        sa.Column("record_offset", sa.BigInteger(), nullable=False),
        sa.Column("record_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("record_key", sa.LargeBinary(), nullable=True),
        sa.Column("record_value", sa.LargeBinary(), nullable=False),
        sa.Column("record_headers", sa.LargeBinary(), nullable=False),
        sa.Column("spilled_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(length=256), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("spilled_jobs") as table:
        table.create_index(
            "uq_spilled_jobs_record",
            ["record_topic", "record_partition", "record_offset"],
            unique=True,
        )
        table.create_index(  # the waiting rows only: a take never walks past held rows
            "ix_spilled_jobs_waiting",
            ["lane", "account", "id"],
            sqlite_where=sa.text("lease_owner IS NULL"),
            postgresql_where=sa.text("lease_owner IS NULL"),
        )
        table.create_index("ix_spilled_jobs_batch", ["batch_id", "tenant"])
        table.create_index("ix_spilled_jobs_owner", ["lease_owner"])
    op.create_table(
        "fair_shares",
        sa.Column("lane", sa.String(length=8), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("vtime", sa.Float(), nullable=False),
        sa.Column("waiting", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("lane", "account"),
    )
    with op.batch_alter_table("fair_shares") as table:
        table.create_index("ix_fair_shares_order", ["lane", "vtime"])


def downgrade() -> None:
    with op.batch_alter_table("fair_shares") as table:
        table.drop_index("ix_fair_shares_order")
    op.drop_table("fair_shares")
    with op.batch_alter_table("spilled_jobs") as table:
        table.drop_index("ix_spilled_jobs_owner")
        table.drop_index("ix_spilled_jobs_batch")
        table.drop_index("ix_spilled_jobs_waiting")
        table.drop_index("uq_spilled_jobs_record")
    op.drop_table("spilled_jobs")
