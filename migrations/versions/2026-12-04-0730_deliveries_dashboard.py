"""The deliveries dashboard: lists of deliveries newest first (every tenant's, one tenant's,
the troubled ones), an endpoint's latest attempts, and test events without a task
(events.task_id and deliveries.task_id nullable).

Expand only: the previous release never writes a null task_id, and its claim joins tasks,
so it leaves a test delivery for a replica of this release to send.

Revision ID: 8b2f5d0c7e14
Revises: 9b3c5d7e1f20
Create Date: 2026-12-04 07:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8b2f5d0c7e14"
down_revision: str | None = "9b3c5d7e1f20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TROUBLED = "status = 'failed' OR (status = 'pending' AND attempts > 0)"


def upgrade() -> None:
    op.alter_column("events", "task_id", existing_type=sa.UUID(), nullable=True)
    op.alter_column("deliveries", "task_id", existing_type=sa.UUID(), nullable=True)
    op.create_index("ix_deliveries_created", "deliveries", ["created_at", "id"])
    op.create_index("ix_deliveries_tenant_created", "deliveries", ["tenant", "created_at", "id"])
    op.create_index(
        "ix_deliveries_troubled",
        "deliveries",
        ["created_at", "id"],
        postgresql_where=sa.text(TROUBLED),
    )
    op.create_index("ix_deliveries_endpoint_updated", "deliveries", ["endpoint_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_endpoint_updated", table_name="deliveries")
    op.drop_index("ix_deliveries_troubled", table_name="deliveries")
    op.drop_index("ix_deliveries_tenant_created", table_name="deliveries")
    op.drop_index("ix_deliveries_created", table_name="deliveries")
    # Test events and their deliveries have no task to keep them: they go first.
    op.execute("DELETE FROM events WHERE task_id IS NULL")
    op.alter_column("deliveries", "task_id", existing_type=sa.UUID(), nullable=False)
    op.alter_column("events", "task_id", existing_type=sa.UUID(), nullable=False)
