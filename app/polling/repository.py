from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.repository import arrays_of, fair_claim_statement, rows_of, rows_param
from app.models import POLL_LOG_SIZE, Task
from app.models.task import ACTIVE_STATUSES
from app.providers.base import WaitReason

# Shared between tenants (docs/architecture.md, "Fair shares"); ix_tasks_due_tenant serves
# the walk over tenants and each tenant's share, ix_tasks_due the rest of the batch.
_CLAIM = fair_claim_statement(
    table="tasks",
    due_column="next_poll_at",
    share_column="tenant",
    where="provider = :provider AND status IN ('pending', 'queued', 'processing')",
    returning="c.id, c.fencing_token, c.external_id, c.status, c.deadline_at, c.checkpoint, now()",
)


# (attribute, column) of every task column: `metadata_` is the column "metadata".
_TASK_ATTRS = [(attr.key, attr.columns[0].name) for attr in Task.__mapper__.column_attrs]
# What a poll's outcome may change (app/polling/outcomes.py decide, app/tasks/service.py
# transition), written as a whole for every row of a batch. The write ends the claim (it
# clears lease_owner), so the same answer delivered twice is written once.
_OUTCOME_COLUMNS = [
    "status",
    "sequence",
    "upstream_status",
    "result",
    "error",
    "polls",
    "unchanged_polls",
    "consecutive_errors",
    "poll_interval_s",
    "poll_error",
    "last_response",
    "checkpoint",
    "updated_at",
    "completed_at",
    "next_poll_at",
    "last_polled_at",
    "estimated_ready_at",
    "poll_again",
    "lease_owner",
    "lease_expires_at",
]
_OUTCOME_ATTRS = [
    (attr, column) for attr, column in _TASK_ATTRS if column in {"id", "fencing_token"}
] + [(attr, column) for attr, column in _TASK_ATTRS if column in _OUTCOME_COLUMNS]
# The write also appends each written poll to its task's log (task_polls), kept to the last
# POLL_LOG_SIZE: in the same statement, from the rows the fence let through, so a late or
# repeated answer is logged exactly when it is written.
_WRITE_OUTCOMES = text(
    f"""
    WITH written AS (
        UPDATE tasks t
        SET {", ".join(f"{column} = u.{column}" for column in _OUTCOME_COLUMNS)}
        FROM {rows_of(Task.__table__, ["id", "fencing_token", *_OUTCOME_COLUMNS], alias="u")}
        WHERE t.id = u.id AND t.fencing_token = u.fencing_token
        RETURNING t.id, t.last_polled_at, t.polls, t.status, t.upstream_status, t.poll_error
    )
    INSERT INTO task_polls AS p (task_id, entries)
    SELECT id, jsonb_build_array(jsonb_build_object(
        'at', last_polled_at, 'poll', polls, 'status', status,
        'upstream_status', upstream_status, 'error', poll_error
    ))
    FROM written
    ON CONFLICT (task_id) DO UPDATE SET entries = (
        CASE WHEN jsonb_array_length(p.entries) >= {POLL_LOG_SIZE} THEN p.entries - 0
             ELSE p.entries END
    ) || excluded.entries
    """
)


@dataclass(frozen=True)
class Claim:
    """A task this replica holds: it may write an outcome only while `token` still matches."""

    id: uuid.UUID
    token: int
    external_id: str
    status: str
    deadline_at: datetime
    claimed_at: datetime
    # The adapter's progress from earlier polls (PollContext.checkpoint).
    checkpoint: dict[str, Any] | None = None


@dataclass(frozen=True)
class Held:
    now: datetime
    # By (id, fencing token): the claim each row is held under.
    tasks: dict[tuple[uuid.UUID, int], Task]


class PollingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim_due(
        self, provider: str, *, limit: int, owner: str, lease_s: float
    ) -> list[Claim]:
        """Claim up to `limit` due tasks of one instance, shared between the tenants with
        tasks due: each tenant's most overdue first, in turns across tenants.

        The claim shape of `app/core/repository.py` (`fair_claim_statement`).
        """
        rows = await self.session.execute(
            _CLAIM,
            {"provider": provider, "limit": limit, "owner": owner, "lease_s": lease_s},
        )
        return [
            Claim(
                id=r.id,
                token=r.fencing_token,
                external_id=r.external_id,
                status=r.status,
                deadline_at=r.deadline_at,
                claimed_at=r.now,
                checkpoint=r.checkpoint,
            )
            for r in rows
        ]

    async def lock_held(self, claims: Sequence[Claim]) -> Held | None:
        """The tasks among `claims` whose claim still holds (the token matches and no
        result was written or the claim given back since), row-locked until the
        transaction ends so nothing changes them between the decision and its write, and
        the database clock; None when no claim holds. The tasks are detached from the
        session: `write_outcomes` writes them."""
        rows = (
            await self.session.execute(
                text(
                    f"""
                    SELECT t.*, now() AS db_now FROM tasks t
                    JOIN {arrays_of({"id": "uuid", "token": "bigint"}, alias="held")}
                        ON t.id = held.id AND t.fencing_token = held.token
                    WHERE t.lease_owner IS NOT NULL
                    ORDER BY t.id
                    FOR UPDATE OF t
                    """
                ),
                {"id": [c.id for c in claims], "token": [c.token for c in claims]},
            )
        ).mappings()
        now: datetime | None = None
        held: dict[tuple[uuid.UUID, int], Task] = {}
        for row in rows:
            now = row["db_now"]
            held[(row["id"], row["fencing_token"])] = Task(
                **{attr: row[column] for attr, column in _TASK_ATTRS}
            )
        return Held(now, held) if now is not None else None

    async def write_outcomes(self, tasks: Sequence[Task]) -> None:
        """Write what the polls changed on `tasks` (held by `lock_held`), one statement for
        the set, each row fenced by its token."""
        if tasks:
            rows = rows_param(
                {column: getattr(task, attr) for attr, column in _OUTCOME_ATTRS} for task in tasks
            )
            await self.session.execute(_WRITE_OUTCOMES, {"rows": rows})

    async def release(self, claims: list[Claim], *, next_poll_at: datetime | None = None) -> int:
        """Give claimed tasks back without an outcome (shutdown, missed budget slot)."""
        if not claims:
            return 0
        result = await self.session.execute(
            update(Task)
            .where(
                tuple_(Task.id, Task.fencing_token).in_([(c.id, c.token) for c in claims]),
                Task.status.in_(ACTIVE_STATUSES),
            )
            .values(
                lease_owner=None,
                lease_expires_at=None,
                next_poll_at=next_poll_at if next_poll_at is not None else func.now(),
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def save_checkpoint(self, claim: Claim, checkpoint: dict[str, Any] | None) -> None:
        """Keep an adapter's progress from a poll that ends without a result to apply
        (its slot was missed, the replica is stopping), if the claim still holds."""
        await self.session.execute(
            update(Task)
            .where(
                Task.id == claim.id,
                Task.fencing_token == claim.token,
                Task.status.in_(ACTIVE_STATUSES),
            )
            .values(checkpoint=checkpoint)
            .execution_options(synchronize_session=False)
        )

    async def resume_parked(self, providers: list[str]) -> int:
        """Make due now the tasks that wait out a credential error of these instances (after
        a restart with another key): they would otherwise sit out engine.auth_retry_s.
        Tasks another replica holds are left to it."""
        if not providers:
            return 0
        result = await self.session.execute(
            update(Task)
            .where(
                Task.provider.in_(providers),
                Task.status.in_(ACTIVE_STATUSES),
                Task.lease_owner.is_(None),
                Task.next_poll_at > func.now(),
                or_(
                    Task.poll_error["reason"].astext == WaitReason.AUTH_FAILED.value,
                    # Parked by the previous version, which wrote only this column.
                    Task.last_poll_error.startswith("CredentialError:"),
                ),
            )
            .values(next_poll_at=func.now())
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def seconds_until_due(self, provider: str) -> float | None:
        """How long until the instance's next task falls due (database clock); None if idle."""
        stmt = select(func.extract("epoch", func.min(Task.next_poll_at) - func.now())).where(
            Task.provider == provider, Task.status.in_(ACTIVE_STATUSES)
        )
        value = await self.session.scalar(stmt)
        return float(value) if value is not None else None
