"""ix_tasks_due_tenant: the poll loop's claim shares a batch between tenants.

The claim walks the tenants that have active tasks on a provider instance (a loose index
scan: one descent per tenant, reading each tenant's oldest `next_poll_at`) and then takes
each due tenant's most overdue tasks; both need the active tasks of an instance ordered by
(tenant, next_poll_at). Partial, like ix_tasks_due, so terminal tasks cost nothing here.
ix_tasks_due stays: the rest of a batch is filled in overdue order across tenants, and the
loop's "next due" look-up reads its first entry.

Revision ID: 1e7a4c9b2d60
Revises: 7d3f2b8e4a61
Create Date: 2026-12-03 14:10:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1e7a4c9b2d60"
down_revision: str | None = "7d3f2b8e4a61"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_tasks_due_tenant",
        "tasks",
        ["provider", "tenant", "next_poll_at"],
        postgresql_where=sa.text("status IN ('pending', 'queued', 'processing')"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_due_tenant", table_name="tasks")
