"""Webhook delivery: per-tenant signing secrets, and a trigger that wakes the delivery loop.

The trigger notifies when a delivery becomes due now (inserted pending, or set back to
pending by a manual retry or a re-enabled endpoint), so a webhook leaves right after its
event commits instead of on the next tick.

Revision ID: 6566fbef426d
Revises: 98062ed9ebeb
Create Date: 2026-11-21 06:07:40.945436+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6566fbef426d"
down_revision: str | None = "98062ed9ebeb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_secrets",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant", name=op.f("pk_tenant_secrets")),
    )
    op.execute(
        """
        CREATE FUNCTION pollhook_notify_delivery() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'pending' AND NEW.next_attempt_at <= now() THEN
                PERFORM pg_notify('pollhook_deliveries', '');
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER deliveries_notify_due AFTER INSERT OR UPDATE OF status, next_attempt_at "
        "ON deliveries FOR EACH ROW EXECUTE FUNCTION pollhook_notify_delivery()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER deliveries_notify_due ON deliveries")
    op.execute("DROP FUNCTION pollhook_notify_delivery()")
    op.drop_table("tenant_secrets")
