"""provider_state.tasks_by_status: each instance's active tasks per status.

The forecast refresh counts them with the scan of the active tasks it makes anyway, once per
period for all replicas; /metrics reads them here instead of counting the tasks on every
scrape. NULL until a forecast of this version: the gauge is left out until then.

Revision ID: 8c3d6a2f9e14
Revises: 5b2e8f1c7a93
Create Date: 2026-12-03 21:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "8c3d6a2f9e14"
down_revision: str | None = "5b2e8f1c7a93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "provider_state",
        sa.Column("tasks_by_status", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("provider_state", "tasks_by_status")
