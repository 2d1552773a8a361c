"""Adaptive schedule: the budget raises the hit chance instead of stretching intervals.

poll_stretch is no longer written or read by this version, but stays for now: replicas of
the previous version still select it during a rolling upgrade. A later migration drops it.

Revision ID: 7c1e2a9d4b3f
Revises: 0da51f4b86aa
Create Date: 2026-11-21 11:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c1e2a9d4b3f"
down_revision: str | None = "0da51f4b86aa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("provider_state", sa.Column("poll_hit_chance", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("provider_state", "poll_hit_chance")
