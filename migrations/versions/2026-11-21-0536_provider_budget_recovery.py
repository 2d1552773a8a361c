"""Provider state: AIMD recovery timestamp and the fingerprint of the upstream key.

Revision ID: 24c49048ea70
Revises: 2d3b82243bba
Create Date: 2026-11-21 05:36:42.038801+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "24c49048ea70"
down_revision: str | None = "2d3b82243bba"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "provider_state", sa.Column("rate_cut_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("provider_state", sa.Column("key_fingerprint", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("provider_state", "key_fingerprint")
    op.drop_column("provider_state", "rate_cut_at")
