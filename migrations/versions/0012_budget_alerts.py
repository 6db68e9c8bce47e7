"""budget alerts: one row per alert — what makes it exactly once across workers

A row is keyed by what it alerts (``scope``, ``scope_key``, ``period``, ``kind``,
``threshold``): however many workers notice a threshold crossed, one insert wins. It is born
unpublished (``published_at`` NULL) and published to ``<prefix>.alerts`` by one worker at a
time, then marked. Design: docs/architecture.md, "Alerts exactly once".

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_alerts",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("scope_key", sa.String(128), primary_key=True),
        sa.Column("period", sa.String(16), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("threshold", sa.String(16), primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("published_at", sa.Float()),
    )
    op.create_index("ix_budget_alerts_unpublished", "budget_alerts", ["published_at"])


def downgrade() -> None:
    op.drop_index("ix_budget_alerts_unpublished", table_name="budget_alerts")
    op.drop_table("budget_alerts")
