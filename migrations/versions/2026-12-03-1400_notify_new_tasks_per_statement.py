"""tasks_notify_new: one notification per statement and provider instance, not per row.

The row trigger of 0610 queued a notification for every inserted row. A batch registration
inserts up to 1,000 rows in one statement; its single statement trigger reads the rows it
inserted from a transition table and notifies each provider instance among them once. The
payload stays the provider name, which the engine's listener wakes that instance's loop
with. A statement that inserted nothing (every row already existed) notifies nobody.

Revision ID: 7d3f2b8e4a61
Revises: 5b9e1f3a7c20
Create Date: 2026-12-03 14:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "7d3f2b8e4a61"
down_revision: str | None = "5b9e1f3a7c20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION pollhook_notify_new_tasks() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pollhook_tasks', provider)
            FROM (SELECT DISTINCT provider FROM new_tasks) AS inserted;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute("DROP TRIGGER tasks_notify_new ON tasks")
    op.execute(
        "CREATE TRIGGER tasks_notify_new AFTER INSERT ON tasks "
        "REFERENCING NEW TABLE AS new_tasks "
        "FOR EACH STATEMENT EXECUTE FUNCTION pollhook_notify_new_tasks()"
    )
    op.execute("DROP FUNCTION pollhook_notify_new_task()")


def downgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION pollhook_notify_new_task() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pollhook_tasks', NEW.provider);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute("DROP TRIGGER tasks_notify_new ON tasks")
    op.execute(
        "CREATE TRIGGER tasks_notify_new AFTER INSERT ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION pollhook_notify_new_task()"
    )
    op.execute("DROP FUNCTION pollhook_notify_new_tasks()")
