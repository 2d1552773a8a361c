"""tasks.poll_error: why a task is waiting, as the API shows it.

`{reason, code, message, at}` of the last poll that failed (cleared by the next answer and
when the task ends), so `GET /v1/tasks/{id}` can say that a task waits on, say, a missing
provider key. It replaces the text column last_poll_error, which this version no longer
writes; that column stays for one release so that replicas of the previous version keep
working through a rolling upgrade, and a later migration drops it.

Revision ID: 5b9e1f3a7c20
Revises: 8a4c0e5d2f19
Create Date: 2026-12-03 09:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5b9e1f3a7c20"
down_revision: str | None = "8a4c0e5d2f19"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column("poll_error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("tasks", "poll_error")
