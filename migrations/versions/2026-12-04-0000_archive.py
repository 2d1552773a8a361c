"""The archive: tasks.archive (what consumers see) and archive_jobs (the copies to make).

Revision ID: 3f7a1c9d2e50
Revises: 8c3d6a2f9e14
Create Date: 2026-12-04 00:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "3f7a1c9d2e50"
down_revision: str | None = "8c3d6a2f9e14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = postgresql.JSONB(astext_type=sa.Text())
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("tasks", sa.Column("archive", _JSON, nullable=True))
    op.create_table(
        "archive_jobs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("sources", _JSON, nullable=False),
        sa.Column("files", _JSON, server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("detected_at", _TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("deadline_at", _TS, nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=True),
        sa.Column("hold_until", _TS, nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=True),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", _TS, nullable=True),
        sa.Column("fencing_token", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", _JSON, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("purge_at", _TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'failed', 'purged')", name=op.f("ck_archive_jobs_status")
        ),
        sa.ForeignKeyConstraint(
            ["id"], ["tasks.id"], name=op.f("fk_archive_jobs_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_jobs")),
    )
    op.create_index(
        "ix_archive_jobs_due",
        "archive_jobs",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_archive_jobs_purge",
        "archive_jobs",
        ["purge_at"],
        postgresql_where=sa.text("purge_at IS NOT NULL"),
    )

    # A new job wakes the archive loops at once (app/archive/worker.py listens), once per
    # statement: a batch of successes is one notification.
    op.execute(
        """
        CREATE FUNCTION archive_jobs_notify() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('pollhook_archive', '');
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER archive_jobs_notify AFTER INSERT ON archive_jobs "
        "FOR EACH STATEMENT EXECUTE FUNCTION archive_jobs_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER archive_jobs_notify ON archive_jobs")
    op.execute("DROP FUNCTION archive_jobs_notify()")
    op.drop_index("ix_archive_jobs_purge", table_name="archive_jobs")
    op.drop_index("ix_archive_jobs_due", table_name="archive_jobs")
    op.drop_table("archive_jobs")
    op.drop_column("tasks", "archive")
