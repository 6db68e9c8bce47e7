"""budget holds name their account: ``period`` holds ``<account>/<period>``

Tenants served by ``[tenants.default]`` share the ``default`` account's budget, so a hold's
period names the account it counts against (``default/day:2026-12-02``, up to 64 + 1 + 16
characters) and holds are summed by it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("budget_holds") as table:
        table.alter_column("period", existing_type=sa.String(length=16), type_=sa.String(length=96))
        table.create_index("ix_budget_holds_account_period", ["period"])


def downgrade() -> None:
    with op.batch_alter_table("budget_holds") as table:
        table.drop_index("ix_budget_holds_account_period")
        table.alter_column("period", existing_type=sa.String(length=96), type_=sa.String(length=16))
