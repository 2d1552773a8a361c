"""A batch of poll results written together (PollingService.apply_all, OutcomeWriter) on a
real Postgres: each row fenced by its own token, events and deliveries from the same rows."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import KIND_DEFAULTS, ProviderKind, ProviderSettings
from app.core.db import create_sessionmaker
from app.models import POLL_LOG_SIZE, CompletionSample, Delivery, Event, Task, TaskStatus
from app.polling.loop import OutcomeWriter
from app.polling.outcomes import PollResult
from app.polling.repository import Claim, PollingRepository
from app.polling.service import Applied, PollingService
from app.providers.base import PollOutcome, TaskError, TransientError
from app.providers.minimax_t2a import MinimaxT2AResult
from app.schedule.forecasts import Forecasts
from tests.helpers import ARCHIVE_OFF, DISCARD_URL, OTHER_KEY

OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}

MINIMAX = ProviderSettings(kind=ProviderKind.MINIMAX_T2A, **KIND_DEFAULTS[ProviderKind.MINIMAX_T2A])
DONE = PollOutcome(
    status=TaskStatus.SUCCEEDED,
    upstream_status="Success",
    result=MinimaxT2AResult(
        kind="minimax_t2a",
        file_id="1",
        download_url="https://x.example/1.tar",
        download_url_expires_at=datetime(2026, 3, 1, 21, tzinfo=UTC),
    ),
)


async def _claim_all(
    engine: AsyncEngine, client: httpx.AsyncClient, n: int, *, first: int = 7000
) -> list[Claim]:
    for i in range(n):
        body = {"provider": "minimax", "external_id": first + i}
        if i == 0:
            body["callback_url"] = f"{DISCARD_URL}/callback"
        assert (await client.post("/v1/tasks", json=body)).status_code == 201
    async with engine.begin() as conn:
        await conn.execute(update(Task).values(next_poll_at=func.now()))
    async with create_sessionmaker(engine).begin() as session:
        claims = await PollingRepository(session).claim_due(
            "minimax", limit=n, owner="r1", lease_s=60
        )
    assert len(claims) == n
    return sorted(claims, key=lambda c: c.external_id)


def _service(session: object) -> PollingService:
    return PollingService(
        session,  # type: ignore[arg-type]
        MINIMAX,
        auth_retry_s=300,
        rng=random.Random(1),
        forecasts=Forecasts(ttl_s=0),
        archive=ARCHIVE_OFF,
    )


async def test_a_batch_writes_each_outcome_its_events_deliveries_and_samples(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    created = await client.post(
        "/v1/webhooks", json={"url": f"{DISCARD_URL}/hook", "events": ["task.processing"]}
    )
    assert created.status_code == 201
    done, processing, failing, erroring, fenced = await _claim_all(engine, client, 5)
    # A cancellation takes the last one over between its claim and the write.
    assert (await client.delete(f"/v1/tasks/{fenced.id}")).status_code in (200, 204)
    results = [
        (done, PollResult(outcome=DONE)),
        (processing, PollResult(outcome=PollOutcome(TaskStatus.PROCESSING, "Processing"))),
        (failing, PollResult(error=TaskError("voice rejected", code="1042"))),
        (erroring, PollResult(error=TransientError("boom", code="http_503"))),
        (fenced, PollResult(outcome=DONE)),
    ]
    async with create_sessionmaker(engine).begin() as session:
        applied = await _service(session).apply_all(results)

    assert [a and (a.task_id, a.status, a.changed) for a in applied] == [
        (str(done.id), TaskStatus.SUCCEEDED, True),
        (str(processing.id), TaskStatus.PROCESSING, True),
        (str(failing.id), TaskStatus.FAILED, True),
        (str(erroring.id), TaskStatus.PENDING, False),
        None,
    ]
    # The upstream ended two of them: how late that was noticed, at most (their first poll,
    # so since registration).
    gaps = [a.detection_gap_s if a else None for a in applied]
    assert [gap is not None and gap >= 0 for gap in gaps] == [True, False, True, False, False]
    async with engine.connect() as conn:
        tasks = {
            row.id: row
            for row in await conn.execute(
                select(
                    Task.id,
                    Task.status,
                    Task.sequence,
                    Task.polls,
                    Task.lease_owner,
                    Task.next_poll_at,
                    Task.consecutive_errors,
                    Task.poll_error,
                    Task.result,
                    Task.error,
                    Task.metadata_.label("meta"),
                )
            )
        }
        events = {
            (row.task_id, row.type, row.sequence): row.payload
            for row in await conn.execute(select(Event))
        }
        deliveries = sorted(
            (row.task_id, row.url)
            for row in await conn.execute(select(Delivery.task_id, Delivery.url))
        )
        samples = await conn.scalar(select(func.count()).select_from(CompletionSample))

    assert tasks[done.id].status == "succeeded"
    assert tasks[done.id].result["file_id"] == "1"
    assert tasks[done.id].meta == {}  # columns a poll does not touch are kept
    assert (tasks[done.id].sequence, tasks[done.id].polls, tasks[done.id].lease_owner) == (
        1,
        1,
        None,
    )
    assert tasks[done.id].next_poll_at is None
    assert tasks[processing.id].status == "processing"
    assert tasks[processing.id].next_poll_at is not None
    assert tasks[failing.id].error == {"code": "1042", "message": "voice rejected"}
    assert tasks[erroring.id].consecutive_errors == 1
    assert tasks[erroring.id].poll_error["code"] == "http_503"
    assert tasks[erroring.id].sequence == 0
    # The cancelled task's late answer is dropped: cancelled, not polled, one event.
    assert (tasks[fenced.id].status, tasks[fenced.id].polls) == ("cancelled", 0)

    assert set(events) == {
        (done.id, "task.succeeded", 1),
        (processing.id, "task.processing", 1),
        (failing.id, "task.failed", 1),
        (fenced.id, "task.cancelled", 1),
    }
    shown = (await client.get(f"/v1/tasks/{processing.id}")).json()
    assert events[(processing.id, "task.processing", 1)] == shown
    # The endpoint takes task.processing only; the first task's callback_url its terminal
    # event (the cancellation's callback too, written by the API).
    assert deliveries == sorted(
        [
            (processing.id, f"{DISCARD_URL}/hook"),
            (done.id, f"{DISCARD_URL}/callback"),
        ]
    )
    assert samples == 1


async def test_a_late_answer_is_never_written_twice(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    [claim] = await _claim_all(engine, client, 1)
    sessions = create_sessionmaker(engine)
    for expected in (TaskStatus.SUCCEEDED, None):
        async with sessions.begin() as session:
            [applied] = await _service(session).apply_all([(claim, PollResult(outcome=DONE))])
        assert (applied.status if applied else None) is expected
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Event)) == 1
        assert await conn.scalar(select(Task.polls)) == 1


async def test_in_one_batch_a_stale_claims_result_and_a_repeat_are_dropped(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """The older claim's result waited to be written while its lease ran out and the task
    was claimed again: both results reach the same batch, and only the holder's counts."""
    [stale] = await _claim_all(engine, client, 1)
    async with engine.begin() as conn:
        await conn.execute(update(Task).values(next_poll_at=func.now()))
    async with create_sessionmaker(engine).begin() as session:
        [fresh] = await PollingRepository(session).claim_due(
            "minimax", limit=1, owner="r2", lease_s=60
        )
    assert fresh.token == stale.token + 1
    processing = PollResult(outcome=PollOutcome(TaskStatus.PROCESSING, "Processing"))
    async with create_sessionmaker(engine).begin() as session:
        applied = await _service(session).apply_all(
            [(stale, PollResult(outcome=DONE)), (fresh, processing), (fresh, processing)]
        )
    assert applied == [None, Applied(str(fresh.id), TaskStatus.PROCESSING, True), None]
    async with engine.connect() as conn:
        assert (await conn.execute(select(Task.status, Task.polls, Task.sequence))).one() == (
            "processing",
            1,
            1,
        )
        assert await conn.scalar(select(func.count()).select_from(Event)) == 1


async def test_each_written_poll_is_logged_and_the_log_keeps_the_last_ones(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    [claim] = await _claim_all(engine, client, 1)
    sessions = create_sessionmaker(engine)
    answers = [
        PollResult(error=TransientError("boom", code="http_503")),
        *[PollResult(outcome=PollOutcome(TaskStatus.PROCESSING, "Processing"))] * POLL_LOG_SIZE,
        PollResult(outcome=DONE),
    ]
    for answer in answers:
        async with sessions.begin() as session:
            [held] = await PollingRepository(session).claim_due(
                "minimax", limit=1, owner="r1", lease_s=60
            ) or [claim]
            [applied] = await _service(session).apply_all([(held, answer)])
            # A stale claim's answer (the one before) is neither written nor logged.
            await _service(session).apply_all([(claim, answer)])
            claim = held
        async with engine.begin() as conn:
            await conn.execute(update(Task).values(next_poll_at=func.now()))
        assert applied is not None

    response = await client.get(f"/v1/tasks/{claim.id}/polls")
    assert response.status_code == 200, response.text
    log = response.json()["items"]
    assert len(log) == POLL_LOG_SIZE
    assert [entry["poll"] for entry in log] == list(range(3, len(answers) + 1))
    assert (log[-1]["status"], log[-1]["upstream_status"], log[-1]["error"]) == (
        "succeeded",
        "Success",
        None,
    )
    assert log[0]["status"] == "processing"
    stamps = [entry["at"] for entry in log]
    assert stamps == sorted(stamps)

    # The first poll's error was logged with it, before it fell off the end.
    [other] = await _claim_all(engine, client, 1, first=9000)
    async with sessions.begin() as session:
        await _service(session).apply_all([(other, answers[0])])
    [entry] = (await client.get(f"/v1/tasks/{other.id}/polls")).json()["items"]
    assert (entry["poll"], entry["status"], entry["error"]["code"]) == (1, "pending", "http_503")
    # Another tenant cannot read it.
    assert (await client.get(f"/v1/tasks/{other.id}/polls", headers=OTHER)).status_code == 404


async def test_concurrent_batches_of_other_claims_do_not_block_each_other(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    claims = await _claim_all(engine, client, 20)
    sessions = create_sessionmaker(engine)

    async def write(part: list[Claim]) -> list[Applied | None]:
        async with sessions.begin() as session:
            return await _service(session).apply_all(
                [(c, PollResult(outcome=DONE)) for c in reversed(part)]
            )

    first, second = await asyncio.gather(write(claims[::2]), write(claims[1::2]))
    assert all(a is not None and a.changed for a in first + second)
    async with engine.connect() as conn:
        assert (
            await conn.scalar(
                text("SELECT count(*) FROM tasks WHERE status = 'succeeded' AND sequence = 1")
            )
            == 20
        )


def _claim(n: int) -> Claim:
    return Claim(uuid.uuid4(), 1, str(n), "pending", datetime.now(UTC), datetime.now(UTC))


async def test_results_arriving_during_a_write_go_together_into_the_next() -> None:
    writes: list[list[str]] = []
    release = asyncio.Event()

    async def write(batch: list[tuple[Claim, PollResult]]) -> list[Applied | None]:
        writes.append([c.external_id for c, _ in batch])
        if len(writes) == 1:
            await release.wait()
        return [Applied(str(c.id), TaskStatus.PENDING, False) for c, _ in batch]

    writer = OutcomeWriter(write)
    claims = [_claim(n) for n in range(4)]
    first = asyncio.create_task(writer.apply(claims[0], PollResult()))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(writer.apply(c, PollResult())) for c in claims[1:]]
    await asyncio.sleep(0)
    release.set()
    applied = await asyncio.gather(first, *rest)
    assert writes == [["0"], ["1", "2", "3"]]
    # Each poll gets its own result back.
    assert [a.task_id if a else None for a in applied] == [str(c.id) for c in claims]


async def test_a_refused_batch_is_written_one_result_at_a_time() -> None:
    bad = _claim(13)

    async def write(batch: list[tuple[Claim, PollResult]]) -> list[Applied | None]:
        await asyncio.sleep(0)
        if any(c is bad for c, _ in batch):
            raise RuntimeError("refused")
        return [Applied(str(c.id), TaskStatus.PENDING, False) for c, _ in batch]

    writer = OutcomeWriter(write)
    good = [_claim(n) for n in range(3)]
    outcomes = await asyncio.gather(
        *(writer.apply(c, PollResult()) for c in [good[0], bad, *good[1:]]),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes] == ["Applied", "RuntimeError", "Applied", "Applied"]
    assert [o.task_id for o in outcomes if isinstance(o, Applied)] == [str(c.id) for c in good]


@pytest.mark.parametrize("cancel_after", [0, 1])
async def test_a_cancelled_poll_leaves_its_result_to_the_write_under_way(cancel_after: int) -> None:
    written: list[str] = []

    async def write(batch: list[tuple[Claim, PollResult]]) -> list[Applied | None]:
        await asyncio.sleep(0.01)
        written.extend(c.external_id for c, _ in batch)
        return [None for _ in batch]

    writer = OutcomeWriter(write)
    poll = asyncio.create_task(writer.apply(_claim(5), PollResult()))
    for _ in range(cancel_after):
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    await asyncio.sleep(0.05)
    assert written == ["5"]


async def test_a_batch_the_database_cannot_take_now_fails_at_once() -> None:
    """The database is away: the batch fails as a whole, not one timeout per result."""
    calls: list[int] = []

    async def write(batch: list[tuple[Claim, PollResult]]) -> list[Applied | None]:
        calls.append(len(batch))
        await asyncio.sleep(0)
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database away"))

    writer = OutcomeWriter(write)
    outcomes = await asyncio.gather(
        *(writer.apply(_claim(n), PollResult()) for n in range(3)), return_exceptions=True
    )
    assert calls == [3]
    assert all(isinstance(o, OperationalError) for o in outcomes)


async def test_close_waits_for_the_write_under_way() -> None:
    written: list[str] = []

    async def write(batch: list[tuple[Claim, PollResult]]) -> list[Applied | None]:
        await asyncio.sleep(0.05)
        written.extend(c.external_id for c, _ in batch)
        return [None for _ in batch]

    writer = OutcomeWriter(write)
    poll = asyncio.create_task(writer.apply(_claim(9), PollResult()))
    await asyncio.sleep(0)
    poll.cancel()  # a stopping loop cancels its polls
    await writer.close()
    assert written == ["9"]
