"""the audit trail: an insert-only record per stored terminal result, and captures apart

``audit_records`` (who submitted what, what ran where, what it cost, the guardrails'
decisions, digests of the prompt and output) and ``audit_captures`` (the captured prompt and
output of tenants with ``audit_capture = "redacted" | "full"``, with their own retention). A
trigger refuses any UPDATE of either table, on SQLite and on PostgreSQL: the code has no update
path, and a mistaken or malicious one fails loudly. Deletes are the pruner's (past
``HEADWAY_RETAIN_AUDIT_D`` / ``HEADWAY_RETAIN_AUDIT_CAPTURES_D``).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TABLES = ("audit_records", "audit_captures")
PG_FUNCTION = """
CREATE OR REPLACE FUNCTION headway_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: UPDATE refused', TG_TABLE_NAME;
END
$$
"""


def _key() -> list[sa.Column[object]]:
    """In time order within a tenant: inserts append, ``--since`` reads a range."""
    return [
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("completed_at", sa.Float(), primary_key=True),
        sa.Column("job_id", sa.String(128), primary_key=True),
    ]


def upgrade() -> None:
    op.create_table(
        "audit_records",
        *_key(),
        sa.Column("submitted_at", sa.Float()),
        sa.Column("batch_id", sa.String(128)),
        sa.Column("kind", sa.String(16)),
        sa.Column("route", sa.String(128)),
        sa.Column("template", sa.String(128)),
        sa.Column("template_version", sa.Integer()),
        sa.Column("provider", sa.String(128)),
        sa.Column("deployment", sa.String(256)),
        sa.Column("region", sa.String(64)),
        sa.Column("signed_by", sa.String(160)),
        sa.Column("guardrails", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nusd", sa.BigInteger(), nullable=False),
        sa.Column("request_sha256", sa.String(64)),
        sa.Column("result_sha256", sa.String(64)),
        sa.Column("capture", sa.String(16), nullable=False),
        sqlite_with_rowid=False,  # SQLite keeps rows in the key: one B-tree less per insert
    )
    op.create_index("ix_audit_records_job", "audit_records", ["tenant", "job_id"])
    op.create_table(
        "audit_captures",
        *_key(),
        sa.Column("prompt", sa.Text()),
        sa.Column("output", sa.Text()),
    )
    op.create_index("ix_audit_captures_completed", "audit_captures", ["completed_at"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION headway_refuse_update()"
            )
    else:
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END"
            )


def downgrade() -> None:
    for table in TABLES:
        op.execute(
            f"DROP TRIGGER IF EXISTS {table}_append_only"
            + (f" ON {table}" if op.get_context().dialect.name == "postgresql" else "")
        )
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS headway_refuse_update()")
    op.drop_index("ix_audit_captures_completed", table_name="audit_captures")
    op.drop_table("audit_captures")
    op.drop_index("ix_audit_records_job", table_name="audit_records")
    op.drop_table("audit_records")
