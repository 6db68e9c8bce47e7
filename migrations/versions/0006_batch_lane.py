"""batch lane: jobs handed to providers' Batch APIs, and the submissions

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_items",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("custom_id", sa.String(length=64), nullable=False),
        sa.Column("deployment_key", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("job_json", sa.Text(), nullable=False),
        sa.Column("who_json", sa.Text(), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("record_value", sa.Text(), nullable=False),
        sa.Column("record_headers", sa.Text(), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_batch", sa.String(length=128), nullable=True),
        sa.Column("lease_owner", sa.String(length=256), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "job_id"),
        sa.UniqueConstraint("custom_id"),
    )
    with op.batch_alter_table("batch_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_batch_items_status", ["status", "deployment_key", "created_at"], unique=False
        )
        batch_op.create_index("ix_batch_items_provider_batch", ["provider_batch"], unique=False)
    op.create_table(
        "provider_batches",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("deployment_key", sa.String(length=256), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lease_owner", sa.String(length=256), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("provider_batches", schema=None) as batch_op:
        batch_op.create_index("ix_provider_batches_status", ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("provider_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_provider_batches_status")
    op.drop_table("provider_batches")
    with op.batch_alter_table("batch_items", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_items_provider_batch")
        batch_op.drop_index("ix_batch_items_status")
    op.drop_table("batch_items")
