"""Wake the engines from a trigger when a task is inserted.

A row trigger fires only for rows actually inserted (not for ON CONFLICT DO NOTHING
duplicates), and Postgres folds identical notifications of one transaction into one. It
saves registration a round trip of its own, and covers every way a task can be inserted.

Revision ID: 98062ed9ebeb
Revises: 24c49048ea70
Create Date: 2026-11-21 06:03:06.850364+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "98062ed9ebeb"
down_revision: str | None = "24c49048ea70"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
    op.execute(
        "CREATE TRIGGER tasks_notify_new AFTER INSERT ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION pollhook_notify_new_task()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tasks_notify_new ON tasks")
    op.execute("DROP FUNCTION pollhook_notify_new_task()")
