"""alert webhooks: when each budget alert was delivered to its tenant's webhook

``budget_alerts.delivered_at`` (NULL: not yet, or the tenant has no webhook) lets the worker
holding the alerts lease deliver each alert once, after it is on the alerts topic.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("budget_alerts", sa.Column("delivered_at", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("budget_alerts") as batch:
        batch.drop_column("delivered_at")
