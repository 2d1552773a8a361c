"""provider_state.run_late_s: how late the run of slots that ends at next_slot_at may send.

A replica may send later than the slack after its slots when it books that lateness with
them; the next replica to reserve starts its slots that much after the run's end, so a late
run cannot bunch with the next replica's (docs/architecture.md, "Why the rate budget cannot
be exceeded"). 0 for a row written by the previous version: its replicas book no lateness.

Revision ID: 5b2e8f1c7a93
Revises: 1e7a4c9b2d60
Create Date: 2026-12-03 15:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b2e8f1c7a93"
down_revision: str | None = "1e7a4c9b2d60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "provider_state",
        sa.Column("run_late_s", sa.Float(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("provider_state", "run_late_s")
