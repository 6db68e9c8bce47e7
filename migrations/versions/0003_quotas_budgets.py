"""quotas and budgets: shared token buckets, in-flight grants, budget spend and holds

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_buckets",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=16), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "resource"),
    )
    op.create_table(
        "quota_grants",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "resource", "owner"),
    )
    op.create_table(
        "budgets",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("spent_nusd", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "period"),
    )
    op.create_table(
        "budget_holds",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("amount_nusd", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "job_id"),
    )
    with op.batch_alter_table("budget_holds", schema=None) as batch_op:
        batch_op.create_index("ix_budget_holds_period", ["tenant", "period"], unique=False)
        batch_op.create_index("ix_budget_holds_owner", ["owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("budget_holds", schema=None) as batch_op:
        batch_op.drop_index("ix_budget_holds_owner")
        batch_op.drop_index("ix_budget_holds_period")
    op.drop_table("budget_holds")
    op.drop_table("budgets")
    op.drop_table("quota_grants")
    op.drop_table("quota_buckets")
