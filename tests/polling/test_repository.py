"""Claiming and fencing on a real Postgres."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings
from app.core.db import create_sessionmaker
from app.models import Event, Task, TaskStatus
from app.polling.outcomes import PollResult
from app.polling.repository import PollingRepository
from app.polling.service import PollingService
from app.providers.base import PollOutcome, TransientError
from app.providers.minimax_t2a import MinimaxT2AResult
from app.schedule.forecasts import Forecasts
from tests.helpers import ARCHIVE_OFF

MINIMAX = ProviderSettings(kind=ProviderKind.MINIMAX_T2A, **KIND_DEFAULTS[ProviderKind.MINIMAX_T2A])


async def _register(client: httpx.AsyncClient, n: int, provider: str = "minimax") -> list[str]:
    ids = []
    for i in range(n):
        r = await client.post("/v1/tasks", json={"provider": provider, "external_id": 1000 + i})
        ids.append(r.json()["id"])
    return ids


async def _make_due(engine: AsyncEngine, overdue_s: dict[str, float]) -> None:
    async with engine.begin() as conn:
        for task_id, seconds in overdue_s.items():
            await conn.execute(
                update(Task)
                .where(Task.id == uuid.UUID(task_id))
                .values(next_poll_at=text(f"now() - interval '{seconds} seconds'"))
            )


async def _claim(engine: AsyncEngine, limit: int, owner: str = "r1") -> list:  # type: ignore[type-arg]
    async with create_sessionmaker(engine).begin() as session:
        return await PollingRepository(session).claim_due(
            "minimax", limit=limit, owner=owner, lease_s=30
        )


async def test_longest_overdue_first_and_not_yet_due_skipped(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    ids = await _register(client, 4)
    await _make_due(engine, {ids[0]: 5, ids[1]: 50, ids[2]: 20})  # ids[3] not due
    claims = await _claim(engine, 10)
    assert [str(c.id) for c in claims] == [ids[1], ids[2], ids[0]]
    assert all(c.token == 1 for c in claims)
    # Claimed tasks are not due again until their lease runs out.
    assert await _claim(engine, 10) == []


async def test_concurrent_claimers_get_disjoint_tasks(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    ids = await _register(client, 40)
    await _make_due(engine, dict.fromkeys(ids, 1))
    batches = await asyncio.gather(*(_claim(engine, 7, owner=f"r{i}") for i in range(8)))
    claimed = [c.id for batch in batches for c in batch]
    assert len(claimed) == len(set(claimed)) == 40


async def test_fencing_rejects_a_stale_holder(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    [task_id] = await _register(client, 1)
    await _make_due(engine, {task_id: 1})
    [stale] = await _claim(engine, 1, owner="dead-replica")
    # Its lease runs out; another replica claims the task and finishes it.
    await _make_due(engine, {task_id: 1})
    [fresh] = await _claim(engine, 1, owner="live-replica")
    assert fresh.token == stale.token + 1
    sessions = create_sessionmaker(engine)
    done = PollResult(
        outcome=PollOutcome(
            status=TaskStatus.SUCCEEDED,
            upstream_status="Success",
            result=MinimaxT2AResult(
                kind="minimax_t2a",
                file_id="1",
                download_url="https://x.example/1.tar",
                download_url_expires_at=datetime(2026, 3, 1, 21, tzinfo=UTC),
            ),
        )
    )
    async with sessions.begin() as session:
        svc = PollingService(
            session,
            MINIMAX,
            auth_retry_s=300,
            rng=random.Random(1),
            forecasts=Forecasts(ttl_s=0),
            archive=ARCHIVE_OFF,
        )
        assert await svc.apply(stale, done) is None  # fenced off: no write
    async with sessions.begin() as session:
        svc = PollingService(
            session,
            MINIMAX,
            auth_retry_s=300,
            rng=random.Random(1),
            forecasts=Forecasts(ttl_s=0),
            archive=ARCHIVE_OFF,
        )
        applied = await svc.apply(fresh, done)
    assert applied is not None
    assert applied.status is TaskStatus.SUCCEEDED
    assert applied.changed
    async with sessions.begin() as session:  # the late stale write changes nothing either
        svc = PollingService(
            session,
            MINIMAX,
            auth_retry_s=300,
            rng=random.Random(1),
            forecasts=Forecasts(ttl_s=0),
            archive=ARCHIVE_OFF,
        )
        assert await svc.apply(stale, done) is None
    async with engine.connect() as conn:
        events = (await conn.execute(text("SELECT type, sequence FROM events"))).all()
        task = (
            await conn.execute(text("SELECT polls, sequence, lease_owner, next_poll_at FROM tasks"))
        ).one()
    assert [tuple(e) for e in events] == [("task.succeeded", 1)]
    assert (task.polls, task.sequence, task.lease_owner, task.next_poll_at) == (1, 1, None, None)


async def test_transient_errors_back_off_and_deadline_times_out(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    r = await client.post(
        "/v1/tasks", json={"provider": "minimax", "external_id": 5, "deadline_s": 60}
    )
    task_id = r.json()["id"]
    sessions = create_sessionmaker(engine)
    await _make_due(engine, {task_id: 1})
    [claim] = await _claim(engine, 1)
    async with sessions.begin() as session:
        svc = PollingService(
            session,
            MINIMAX,
            auth_retry_s=300,
            rng=random.Random(1),
            forecasts=Forecasts(ttl_s=0),
            archive=ARCHIVE_OFF,
        )
        applied = await svc.apply(claim, PollResult(error=TransientError("boom", code="http_503")))
    assert applied is not None
    assert applied.status is TaskStatus.PENDING
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT consecutive_errors, poll_error, next_poll_at - now() AS wait FROM tasks"
                )
            )
        ).one()
    assert row.consecutive_errors == 1
    assert {k: row.poll_error[k] for k in ("reason", "code", "message")} == {
        "reason": "transient_error",
        "code": "http_503",
        "message": "boom",
    }
    assert timedelta(seconds=2) < row.wait < timedelta(seconds=4)

    # Past the deadline, the next result (whatever it is) ends the task as timed_out.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE tasks SET deadline_at = now() - interval '1 second'"))
    await _make_due(engine, {task_id: 1})
    [claim] = await _claim(engine, 1)
    processing = PollResult(
        outcome=PollOutcome(status=TaskStatus.PROCESSING, upstream_status="Processing")
    )
    async with sessions.begin() as session:
        svc = PollingService(
            session,
            MINIMAX,
            auth_retry_s=300,
            rng=random.Random(1),
            forecasts=Forecasts(ttl_s=0),
            archive=ARCHIVE_OFF,
        )
        await svc.apply(claim, processing)
    async with engine.connect() as conn:
        events = (
            await conn.execute(text("SELECT type, sequence FROM events ORDER BY sequence"))
        ).all()
        task = (await conn.execute(text("SELECT status, error FROM tasks"))).one()
    assert [tuple(e) for e in events] == [("task.processing", 1), ("task.timed_out", 2)]
    assert task.status == "timed_out"
    assert task.error["code"] == "deadline_exceeded"


async def test_release_makes_tasks_due_again(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    ids = await _register(client, 3)
    await _make_due(engine, dict.fromkeys(ids, 1))
    claims = await _claim(engine, 3)
    async with create_sessionmaker(engine).begin() as session:
        assert await PollingRepository(session).release(claims) == 3
    again = await _claim(engine, 3)
    assert {c.id for c in again} == {c.id for c in claims}


async def _add_due(engine: AsyncEngine, tenant: str, overdue_s: list[float]) -> list[uuid.UUID]:
    """Active minimax tasks of `tenant`, due `overdue_s` seconds ago (negative: not yet)."""
    ids = [uuid.uuid4() for _ in overdue_s]
    async with engine.begin() as conn:
        for task_id, seconds in zip(ids, overdue_s, strict=True):
            await conn.execute(
                insert(Task).values(
                    id=task_id,
                    tenant=tenant,
                    provider="minimax",
                    external_id=str(task_id),
                    status="processing",
                    deadline_at=text("now() + interval '1 day'"),
                    next_poll_at=text(f"now() - interval '{seconds} seconds'"),
                )
            )
    return ids


async def test_a_claim_shares_the_batch_between_tenants(engine: AsyncEngine) -> None:
    # A's flood is older than anything of B's: longest-overdue first would give A the batch.
    flood = await _add_due(engine, "a", [1000.0 + i for i in range(200)])
    few = await _add_due(engine, "b", [5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    claims = await _claim(engine, 10)
    # Half each, every tenant's most overdue first, in turns across tenants.
    assert [c.id for c in claims] == [
        task for pair in zip(flood[::-1][:5], few[:5], strict=True) for task in pair
    ]
    assert all(c.token == 1 for c in claims)


async def test_a_tenant_due_less_than_its_share_leaves_the_rest_to_the_others(
    engine: AsyncEngine,
) -> None:
    flood = await _add_due(engine, "a", [1000.0 + i for i in range(200)])
    few = await _add_due(engine, "b", [2.0, 1.0])
    await _add_due(engine, "c", [-60.0] * 5)  # nothing due: no share
    claims = await _claim(engine, 10)
    assert [c.id for c in claims if c.id in few] == few
    assert [c.id for c in claims if c.id not in few] == flood[::-1][:8]


async def test_a_single_tenant_gets_the_whole_batch_in_overdue_order(
    engine: AsyncEngine,
) -> None:
    ids = await _add_due(engine, "a", [float(i) for i in range(1, 51)])
    claims = await _claim(engine, 20)
    assert [c.id for c in claims] == ids[::-1][:20]


async def test_more_tenants_than_the_batch_take_turns_by_their_oldest_due_task(
    engine: AsyncEngine,
) -> None:
    heads = {}
    for n in range(5):  # tenant t0's oldest task is the most overdue, then t1's, ...
        heads[f"t{n}"] = await _add_due(engine, f"t{n}", [100.0 - n, 10.0 - n])
    first = await _claim(engine, 3)
    assert [c.id for c in first] == [heads["t0"][0], heads["t1"][0], heads["t2"][0]]
    # Claimed tasks moved to their lease's end: the tenants left out come next.
    second = await _claim(engine, 3)
    assert [c.id for c in second] == [heads["t3"][0], heads["t4"][0], heads["t0"][1]]


async def test_concurrent_fair_claims_never_share_a_task(engine: AsyncEngine) -> None:
    flood = await _add_due(engine, "a", [100.0 + i for i in range(100)])
    few = await _add_due(engine, "b", [float(i) for i in range(1, 21)])
    claimed: list[uuid.UUID] = []
    while len(claimed) < 120:
        batches = await asyncio.gather(*(_claim(engine, 7, owner=f"r{i}") for i in range(2)))
        new = [c.id for batch in batches for c in batch]
        assert new, "due tasks left unclaimed"
        claimed += new
    assert len(claimed) == len(set(claimed)) == 120
    assert set(claimed) == set(flood) | set(few)


async def test_a_fair_claim_bumps_the_fencing_token(engine: AsyncEngine) -> None:
    [a] = await _add_due(engine, "a", [10.0])
    [b] = await _add_due(engine, "b", [5.0])
    first = await _claim(engine, 2, owner="dead-replica")
    await _make_due(engine, {str(a): 1, str(b): 1})  # both leases ran out
    second = await _claim(engine, 2, owner="live-replica")
    assert {c.id: c.token for c in first} == {a: 1, b: 1}
    assert {c.id: c.token for c in second} == {a: 2, b: 2}


async def test_events_unique_per_change(engine: AsyncEngine) -> None:
    """The (task_id, sequence) key makes a duplicate event for one change impossible."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    async with engine.begin() as conn:
        task_id = uuid.uuid4()
        await conn.execute(
            text(
                "INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at) "
                "VALUES (:id, 't', 'minimax', '1', 'succeeded', now())"
            ),
            {"id": task_id},
        )
        await conn.execute(
            insert(Event).values(
                id=uuid.uuid4(),
                task_id=task_id,
                tenant="t",
                type="task.succeeded",
                sequence=1,
                payload={},
            )
        )
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                insert(Event).values(
                    id=uuid.uuid4(),
                    task_id=task_id,
                    tenant="t",
                    type="task.succeeded",
                    sequence=1,
                    payload={},
                )
            )


async def test_a_new_key_resumes_only_the_tasks_parked_by_a_credential_error(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    ids = []
    for external_id, provider in ((1, "minimax"), (2, "minimax"), (3, "minimax"), (4, "minimax")):
        body = {"provider": provider, "external_id": external_id}
        ids.append((await client.post("/v1/tasks", json=body)).json()["id"])
    jimmy = (await client.post("/v1/tasks", json={"provider": "jimmy", "external_id": "j"})).json()
    auth = '{"reason": "auth_failed", "code": "1004", "message": "x", "at": "2026-12-03T00:00:00Z"}'
    later = "now() + interval '1 hour'"
    async with engine.begin() as conn:
        for task_id, poll_error, legacy, owner in (
            (ids[0], auth, None, None),  # parked: resumed
            (ids[1], auth.replace("auth_failed", "transient_error"), None, None),  # backing off
            (ids[2], auth, None, "replica-b"),  # another replica holds it
            (ids[3], None, "CredentialError: 1004: login fail", None),  # the old version's
            (jimmy["id"], auth, None, None),  # another instance
        ):
            await conn.execute(
                text(
                    f"UPDATE tasks SET next_poll_at = {later}, poll_error = CAST(:e AS jsonb), "
                    "last_poll_error = :legacy, lease_owner = :owner WHERE id = :id"
                ),
                {"e": poll_error, "legacy": legacy, "owner": owner, "id": task_id},
            )
    async with create_sessionmaker(engine).begin() as session:
        assert await PollingRepository(session).resume_parked(["minimax"]) == 2
    async with engine.connect() as conn:
        due = await conn.execute(text("SELECT id::text FROM tasks WHERE next_poll_at <= now()"))
        assert {row[0] for row in due} == {ids[0], ids[3]}
