"""Operator roles and the audit log: api_keys.role, audit_log, and ix_tasks_created (an
operator's task list, newest first over every tenant's).

Revision ID: 6d1e4b7a2c91
Revises: 3f7a1c9d2e50
Create Date: 2026-12-04 06:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "6d1e4b7a2c91"
down_revision: str | None = "3f7a1c9d2e50"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_keys", sa.Column("role", sa.Text(), server_default=sa.text("'tenant'"), nullable=False)
    )
    op.create_check_constraint(
        op.f("ck_api_keys_role"), "api_keys", "role IN ('tenant', 'operator', 'operator_read')"
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint("result IN ('ok', 'denied')", name=op.f("ck_audit_log_result")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", [sa.text("at DESC"), sa.text("id DESC")])
    op.create_index(
        "ix_audit_log_tenant_at", "audit_log", ["tenant", sa.text("at DESC"), sa.text("id DESC")]
    )
    op.create_index("ix_tasks_created", "tasks", [sa.text("created_at DESC"), sa.text("id DESC")])


def downgrade() -> None:
    op.drop_index("ix_tasks_created", table_name="tasks")
    op.drop_table("audit_log")
    op.drop_constraint(op.f("ck_api_keys_role"), "api_keys", type_="check")
    op.drop_column("api_keys", "role")
