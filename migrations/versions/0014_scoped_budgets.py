"""budgets per scope: a team's and a batch's budgets beside a tenant's

- ``budgets.tenant`` names any budget's account (``acme``, ``team:research``,
  ``batch:acme/<batch id>``: up to 200 characters); a batch's cap is stored on its row
  (``limit_nusd``, where it came from: ``limit_source`` = ``job`` | ``operator``, and when an
  operator set it: ``limit_set_at``).
- ``budget_holds`` holds a job's reservation once per budget it needs room in: ``period``
  (``<account>/<period>``, up to 224 characters) joins the primary key. Rebuilt portably (a
  new table, the rows copied, the old one dropped), like ``usage_daily`` in 0011.
- ``budget_alerts.scope_key`` names a batch as ``<tenant>/<batch id>`` (up to 200).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

HOLD_COLUMNS = ("tenant", "job_id", "period", "amount_nusd", "owner", "expires_at")
HOLD_INDEXES = ("ix_budget_holds_period", "ix_budget_holds_account_period", "ix_budget_holds_owner")


def _holds(name: str, *, scoped: bool) -> None:
    op.create_table(
        name,
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("period", sa.String(224 if scoped else 96), primary_key=scoped),
        sa.Column("amount_nusd", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )


def _swap_holds(*, scoped: bool) -> None:
    _holds("budget_holds_new", scoped=scoped)
    columns = ", ".join(HOLD_COLUMNS)
    if scoped:
        op.execute(f"INSERT INTO budget_holds_new ({columns}) SELECT {columns} FROM budget_holds")
    else:  # downgrade: a job's tenant hold only (its first, by account)
        op.execute(
            f"INSERT INTO budget_holds_new ({columns}) SELECT {columns} FROM budget_holds h "
            "WHERE h.period = (SELECT MIN(o.period) FROM budget_holds o "
            "WHERE o.tenant = h.tenant AND o.job_id = h.job_id)"
        )
    for index in (
        "ix_budget_holds_period",
        "ix_budget_holds_account_period",
        "ix_budget_holds_owner",
    ):
        op.drop_index(index, table_name="budget_holds")
    op.drop_table("budget_holds")
    op.rename_table("budget_holds_new", "budget_holds")
    op.create_index("ix_budget_holds_period", "budget_holds", ["tenant", "period"])
    op.create_index("ix_budget_holds_account_period", "budget_holds", ["period"])
    op.create_index("ix_budget_holds_owner", "budget_holds", ["owner"])


def upgrade() -> None:
    with op.batch_alter_table("budgets") as table:
        table.alter_column("tenant", existing_type=sa.String(64), type_=sa.String(200))
        table.add_column(sa.Column("limit_nusd", sa.BigInteger()))
        table.add_column(sa.Column("limit_source", sa.String(16)))
        table.add_column(sa.Column("limit_set_at", sa.Float()))
    with op.batch_alter_table("budget_alerts") as table:
        table.alter_column("scope_key", existing_type=sa.String(128), type_=sa.String(200))
    _swap_holds(scoped=True)


def downgrade() -> None:
    _swap_holds(scoped=False)
    op.execute("DELETE FROM budget_alerts WHERE length(scope_key) > 128")
    with op.batch_alter_table("budget_alerts") as table:
        table.alter_column("scope_key", existing_type=sa.String(200), type_=sa.String(128))
    op.execute("DELETE FROM budgets WHERE length(tenant) > 64")
    with op.batch_alter_table("budgets") as table:
        table.drop_column("limit_set_at")
        table.drop_column("limit_source")
        table.drop_column("limit_nusd")
        table.alter_column("tenant", existing_type=sa.String(200), type_=sa.String(64))
