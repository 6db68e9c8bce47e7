"""response cache: answers to deterministic requests, per tenant or shared

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "response_cache",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=128), nullable=False),
        sa.Column("deployment", sa.String(length=256), nullable=False),
        sa.Column("output_json", sa.Text(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )
    with op.batch_alter_table("response_cache", schema=None) as batch_op:
        batch_op.create_index("ix_response_cache_expires", ["expires_at"], unique=False)
        batch_op.create_index("ix_response_cache_created", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("response_cache", schema=None) as batch_op:
        batch_op.drop_index("ix_response_cache_created")
        batch_op.drop_index("ix_response_cache_expires")
    op.drop_table("response_cache")
