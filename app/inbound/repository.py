from __future__ import annotations

from sqlalchemy import delete, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import InboundCallback
from app.models.task import ACTIVE_SQL
from app.tasks.repository import NOTIFY_CHANNEL

# The instance's active tasks with that upstream id, every tenant's (ix_tasks_active_external),
# due as soon as min_poll_interval_s after their last poll allows; one that a poll holds
# now is marked to be polled again right after it (tasks.poll_again). The engine's loop
# for the instance is woken on commit.
_HINT = text(
    f"""
    WITH locked AS (
        -- In id order, as a poll's outcome write locks its batch (PollingRepository
        -- .lock_held): two tenants' tasks with one upstream id cannot deadlock with it.
        SELECT id FROM tasks
        WHERE provider = :provider AND external_id = :external_id AND {ACTIVE_SQL}
        ORDER BY id
        FOR UPDATE
    ), hinted AS (
        UPDATE tasks SET
            next_poll_at = CASE WHEN lease_owner IS NULL THEN LEAST(
                next_poll_at,
                GREATEST(
                    now(),
                    COALESCE(last_polled_at, created_at) + make_interval(secs => :floor_s)
                )
            ) ELSE next_poll_at END,
            poll_again = poll_again OR lease_owner IS NOT NULL
        FROM locked
        WHERE tasks.id = locked.id AND {ACTIVE_SQL}
        RETURNING tasks.id
    )
    SELECT count(*) AS hinted,
           CASE WHEN count(*) > 0 THEN pg_notify(:channel, :provider) END AS notified
    FROM hinted
    """
)


class InboundRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def remember(self, instance: str, message_key: str) -> bool:
        """Record a verified message; False when it was recorded before (a replay)."""
        inserted = await self.session.scalar(
            insert(InboundCallback)
            .values(instance=instance, message_key=message_key)
            .on_conflict_do_nothing()
            .returning(InboundCallback.instance)
        )
        return inserted is not None

    async def forget_older_than(self, seconds: float) -> int:
        result = await self.session.execute(
            delete(InboundCallback).where(
                InboundCallback.received_at
                < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds)
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def hint(self, provider: str, external_id: str, floor_s: float) -> int:
        """Make the instance's active tasks with this upstream id due now; how many."""
        row = (
            await self.session.execute(
                _HINT,
                {
                    "provider": provider,
                    "external_id": external_id,
                    "floor_s": floor_s,
                    "channel": NOTIFY_CHANNEL,
                },
            )
        ).one()
        return int(row.hinted)
