"""tasks.checkpoint: an adapter's progress within a multi-request poll.

Once MiniMax said Success, the next poll resumes at the File Retrieve instead of asking
for the status again; the checkpoint holds what it needs (the file_id) across restarts and
replicas. Nullable, no default: existing tasks simply have none.

Revision ID: 3f6d2b8e1c47
Revises: 7c1e2a9d4b3f
Create Date: 2026-12-03 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "3f6d2b8e1c47"
down_revision: str | None = "7c1e2a9d4b3f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column("checkpoint", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("tasks", "checkpoint")
