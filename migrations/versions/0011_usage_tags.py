"""usage tags: a usage event keeps the job metadata keys its tenant's ``usage_tags`` name

``usage_events.tags`` holds them as canonical JSON (sorted keys; NULL when none);
``usage_daily`` sums per tag set too, so ``headway usage --by tag:KEY`` reads the same before
and after the retention window: it keeps the tag set (``tags``, of any size) and, in its
primary key, the set's SHA-256 (``tags_key``, ``''`` for none — its rows so far). It is rebuilt
portably: a new table, the rows copied, the old one dropped.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SUMS = ("events", "input_tokens", "output_tokens", "cost_nusd")
KEY = ("day", "tenant", "route", "provider", "deployment", "batch_id")


def _daily(name: str, *, tags: bool) -> None:
    columns = [
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("route", sa.String(128), primary_key=True),
        sa.Column("provider", sa.String(128), primary_key=True),
        sa.Column("deployment", sa.String(256), primary_key=True),
        sa.Column("batch_id", sa.String(128), primary_key=True),
    ]
    if tags:
        columns.append(sa.Column("tags_key", sa.String(64), primary_key=True))
    columns += [sa.Column(column, sa.BigInteger(), nullable=False) for column in SUMS]
    if tags:
        columns.append(sa.Column("tags", sa.Text()))
    op.create_table(name, *columns)


def _swap(*, tags: bool) -> None:
    """Rebuild ``usage_daily`` with (or without) ``tags``, keeping its sums."""
    _daily("usage_daily_new", tags=tags)
    kept = ", ".join((*KEY, *SUMS))
    if tags:
        op.execute(
            f"INSERT INTO usage_daily_new ({kept}, tags_key) SELECT {kept}, '' FROM usage_daily"
        )
    else:  # downgrade: tag sets fold into one row per key
        sums = ", ".join(f"SUM({column})" for column in SUMS)
        key = ", ".join(KEY)
        op.execute(
            f"INSERT INTO usage_daily_new ({kept}) SELECT {key}, {sums} FROM usage_daily "
            f"GROUP BY {key}"
        )
    op.drop_index("ix_usage_daily_tenant", table_name="usage_daily")
    op.drop_table("usage_daily")
    op.rename_table("usage_daily_new", "usage_daily")
    op.create_index("ix_usage_daily_tenant", "usage_daily", ["tenant", "day"])


def upgrade() -> None:
    op.add_column("usage_events", sa.Column("tags", sa.Text()))
    _swap(tags=True)


def downgrade() -> None:
    _swap(tags=False)
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("tags")
