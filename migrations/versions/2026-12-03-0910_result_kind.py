"""Stored task results name their provider kind (`kind`), as the API's typed result does.

Results written before this carry no `kind`; it is inferred from their fields: `file_id`
is a MiniMax T2A result, `audio_url` or `model_id` a Jimmy SoundClone one. A result that
fits neither stays as it is (reading it logs and shows no result, never fails).

Revision ID: 8a4c0e5d2f19
Revises: 3f6d2b8e1c47
Create Date: 2026-12-03 09:10:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "8a4c0e5d2f19"
down_revision: str | None = "3f6d2b8e1c47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE tasks SET result = jsonb_build_object('kind', 'minimax_t2a') || result
        WHERE jsonb_typeof(result) = 'object' AND NOT result ? 'kind' AND result ? 'file_id'
        """
    )
    op.execute(
        """
        UPDATE tasks SET result = jsonb_build_object('kind', 'jimmy_soundclone') || result
        WHERE jsonb_typeof(result) = 'object' AND NOT result ? 'kind'
          AND (result ? 'audio_url' OR result ? 'model_id')
        """
    )


def downgrade() -> None:
    # The previous version's result model ignores fields it does not know (filename) but
    # would show `kind` in none of its own: take it off again.
    op.execute("UPDATE tasks SET result = result - 'kind' WHERE jsonb_typeof(result) = 'object'")
