"""What a success starts and what each try of its archive does, on a real Postgres: the
job and the held terminal event in the success's transaction; a finished copy sends the
held event, or announces itself with `task.archived` once the event went out; a failed
one is retried, or given up and the event sent; a try whose claim was lost changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.archive.copier import CopyError
from app.archive.retries import Reason
from app.archive.service import TryResult
from app.core.config import Settings
from app.models import ArchiveJob, Delivery, Event, Task
from tests.archive.jobs import FILE, URL_DIES, record, succeed


async def state(engine: AsyncEngine) -> tuple[dict[str, Any], list[Any], list[str], int]:
    """The task's archive, its deliveries (next_attempt_at - now), event types, sequence."""
    async with engine.connect() as conn:
        task = (await conn.execute(select(Task.archive, Task.sequence))).one()
        now = await conn.scalar(select(func.now()))
        assert now is not None
        deliveries = [
            (r.next_attempt_at - now).total_seconds()
            for r in await conn.execute(select(Delivery.next_attempt_at))
        ]
        types = [r.type for r in await conn.execute(select(Event.type).order_by(Event.sequence))]
    return task.archive, deliveries, types, task.sequence


async def test_a_success_starts_a_job_and_holds_its_terminal_event(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    job = await succeed(client, engine, wait_s=60)

    assert job.sources == [{"kind": "bundle", "url": "https://x.example/1.tar"}]
    assert job.deadline_at == URL_DIES  # the URL's own expiry
    assert job.event_id is not None
    assert job.hold_until is not None
    archive, deliveries, types, _ = await state(engine)
    assert archive["status"] == "pending"
    assert types == ["task.succeeded"]
    (held,) = deliveries
    assert 55 < held <= 60  # the callback waits for the archive


async def test_done_within_the_hold_sends_the_held_event_now(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    job = await succeed(client, engine, wait_s=60)

    await record(engine, settings, job, TryResult([FILE], None))

    archive, deliveries, types, sequence = await state(engine)
    assert archive["status"] == "archived"
    assert archive["files"] == [{k: v for k, v in FILE.items() if k != "source"}]
    assert archive["archived_at"] is not None
    assert deliveries[0] <= 0  # due now: it goes out with the files
    assert types == ["task.succeeded"]  # no task.archived: the event waited
    assert sequence == 1
    async with engine.connect() as conn:
        row = (await conn.execute(select(ArchiveJob.status, ArchiveJob.purge_at))).one()
    assert row.status == "done"
    assert row.purge_at > datetime.now(UTC) + timedelta(days=29)


async def test_done_after_the_event_went_out_announces_task_archived(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    job = await succeed(client, engine, wait_s=0)  # nothing held

    await record(engine, settings, job, TryResult([FILE], None))

    archive, deliveries, types, sequence = await state(engine)
    assert archive["status"] == "archived"
    assert types == ["task.succeeded", "task.archived"]
    assert sequence == 2  # above the succeeded event's: consumers keep it
    assert len(deliveries) == 2  # the callback gets both
    async with engine.connect() as conn:
        payload = await conn.scalar(select(Event.payload).where(Event.type == "task.archived"))
    assert payload is not None
    assert payload["sequence"] == 2
    assert payload["archive"]["status"] == "archived"


async def test_a_failed_try_is_retried_and_shown_while_the_event_waits(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    job = await succeed(client, engine, wait_s=60)

    await record(engine, settings, job, TryResult([], CopyError(Reason.HTTP_ERROR, "HTTP 503")))

    archive, deliveries, _, _ = await state(engine)
    assert archive["status"] == "pending"
    assert archive["attempts"] == 1
    assert archive["error"]["reason"] == "http_error"
    assert deliveries[0] > 50  # still held
    async with engine.connect() as conn:
        row = (await conn.execute(select(ArchiveJob.status, ArchiveJob.next_attempt_at))).one()
    assert row.status == "pending"
    assert row.next_attempt_at is not None


async def test_a_given_up_copy_sends_the_held_event_and_says_why(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    job = await succeed(client, engine, wait_s=60)

    await record(
        engine,
        settings,
        job,
        TryResult([], CopyError(Reason.REFUSED, "refused: 10.0.0.1 is a private address")),
    )

    archive, deliveries, types, _ = await state(engine)
    assert archive["status"] == "failed"
    assert archive["error"]["reason"] == "refused"
    assert deliveries[0] <= 0
    assert types == ["task.succeeded"]


async def test_a_try_whose_claim_was_lost_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    job = await succeed(client, engine, wait_s=60)
    async with engine.begin() as conn:  # another replica took the job over
        await conn.execute(update(ArchiveJob).values(fencing_token=ArchiveJob.fencing_token + 1))

    await record(engine, settings, job, TryResult([FILE], None))

    archive, deliveries, _, _ = await state(engine)
    assert archive["status"] == "pending"
    assert deliveries[0] > 50


async def test_done_after_a_delivery_loop_took_the_held_event_announces_task_archived(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    """The hold ran out and a delivery loop claimed the event (it went out showing the
    archive pending) just before the copy finished: the files are announced, not lost."""
    job = await succeed(client, engine, wait_s=60)
    async with engine.begin() as conn:
        await conn.execute(update(Delivery).values(lease_owner="d1", attempts=0))

    await record(engine, settings, job, TryResult([FILE], None))

    archive, _, types, sequence = await state(engine)
    assert archive["status"] == "archived"
    assert types == ["task.succeeded", "task.archived"]
    assert sequence == 2
