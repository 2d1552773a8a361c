"""Batched delivery on real Postgres: attempts recorded in bulk and fenced, the limit per
endpoint, and what the loop writes for every kind of outcome."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import AllowedNetwork, Settings
from app.core.db import create_sessionmaker
from app.webhooks.delivery import Outcome
from app.webhooks.repository import AttemptRecord, ClaimedDelivery, WebhookRepository
from app.webhooks.retries import AttemptResult, Decision, Verdict
from tests import helpers
from tests.webhooks.receiver import Answer, Receiver
from tests.webhooks.test_delivery import deliveries_of, endpoint, finished_task, verify

eventually = functools.partial(helpers.eventually, within_s=15.0)


async def claim(
    engine: AsyncEngine, owner: str, *, lease_s: float = 30.0, per_key: int = 100
) -> list[ClaimedDelivery]:
    async with create_sessionmaker(engine).begin() as session:
        return await WebhookRepository(session).claim_due(
            limit=100, owner=owner, lease_s=lease_s, per_key=per_key, held={}
        )


async def record(engine: AsyncEngine, records: list[AttemptRecord]) -> set[uuid.UUID]:
    async with create_sessionmaker(engine).begin() as session:
        held = await WebhookRepository(session).record_attempts(records)
    return {delivery_id for delivery_id, _ in held}


def finished(claimed: ClaimedDelivery, result: AttemptResult, decision: Decision) -> AttemptRecord:
    return Outcome.of(claimed, result, decision, duration_ms=7, body="b", counted=True).record


async def attempt_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT delivery_id, attempt, status_code, error FROM delivery_attempts")
        )
        return list(rows)


async def test_one_write_records_mixed_outcomes_and_endpoint_health(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    ok = await endpoint(client, f"{helpers.DISCARD_URL}/ok")
    broken = await endpoint(client, f"{helpers.DISCARD_URL}/broken")
    gone = await endpoint(client, f"{helpers.DISCARD_URL}/gone")
    slow = await endpoint(client, f"{helpers.DISCARD_URL}/slow")
    guarded = await endpoint(client, f"{helpers.DISCARD_URL}/guarded")
    async with engine.begin() as conn:  # a failure streak that a 2xx must end
        await conn.execute(
            text("UPDATE webhook_endpoints SET failing_since = now() WHERE id = :id"),
            {"id": ok["id"]},
        )
    await finished_task(client, 301)
    claims = {str(c.endpoint_id): c for c in await claim(engine, "replica-a")}
    assert len(claims) == 5
    outcomes = {
        ok["id"]: (AttemptResult(200), Decision(Verdict.DELIVERED)),
        broken["id"]: (AttemptResult(503), Decision(Verdict.RETRY, 5.0)),
        gone["id"]: (AttemptResult(410), Decision(Verdict.ENDPOINT_GONE)),
        slow["id"]: (
            AttemptResult(None, error="no answer within 1 s", timed_out=True),
            Decision(Verdict.RETRY, 60.0),
        ),
        guarded["id"]: (
            AttemptResult(None, error="refused: webhook target '127.0.0.1' is a blocked address"),
            Decision(Verdict.RETRY, 5.0),
        ),
    }
    held = await record(
        engine, [finished(claims[key], *outcome) for key, outcome in outcomes.items()]
    )
    assert held == {c.id for c in claims.values()}

    async with engine.connect() as conn:
        state = {
            str(r.endpoint_id): r
            for r in await conn.execute(
                text(
                    "SELECT d.endpoint_id, d.status, d.attempts, d.last_status_code, "
                    "d.last_error, d.lease_owner, d.next_attempt_at > now() AS later, "
                    "w.enabled, w.disabled_reason, w.failing_since IS NOT NULL AS failing "
                    "FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id"
                )
            )
        }
    assert [state[ok["id"]].status, state[ok["id"]].failing] == ["succeeded", False]
    assert [state[broken["id"]].status, state[broken["id"]].last_error] == ["pending", "HTTP 503"]
    assert state[broken["id"]].later
    assert state[broken["id"]].failing
    assert state[gone["id"]].status == "failed"
    assert state[gone["id"]].enabled is False
    assert "410" in state[gone["id"]].disabled_reason
    assert state[slow["id"]].last_error == "no answer within 1 s"
    assert state[guarded["id"]].last_error.startswith("refused")
    assert all(s.attempts == 1 and s.lease_owner is None for s in state.values())
    assert [s.enabled for k, s in state.items() if k != gone["id"]] == [True] * 4
    rows = await attempt_rows(engine)
    assert sorted(r.status_code or 0 for r in rows) == [0, 0, 200, 410, 503]
    assert {r.attempt for r in rows} == {1}


async def test_a_late_answer_after_a_takeover_is_dropped_and_nothing_is_written_twice(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await endpoint(client, f"{helpers.DISCARD_URL}/late")
    await finished_task(client, 302)
    # Replica A claims and stalls past its lease; replica B takes the delivery over.
    [stale] = await claim(engine, "replica-a", lease_s=0)
    [fresh] = await claim(engine, "replica-b")
    assert fresh.id == stale.id
    assert fresh.token > stale.token
    delivered = (AttemptResult(200), Decision(Verdict.DELIVERED))

    assert await record(engine, [finished(stale, *delivered)]) == set()
    assert await attempt_rows(engine) == []
    assert await record(engine, [finished(fresh, *delivered)]) == {fresh.id}
    # The same answer written again (a retried flush) matches nothing: the write moved the
    # token on.
    assert await record(engine, [finished(fresh, *delivered)]) == set()
    rows = await attempt_rows(engine)
    assert [(r.delivery_id, r.attempt, r.status_code) for r in rows] == [(fresh.id, 1, 200)]
    assert await claim(engine, "replica-c") == []  # succeeded: nothing due


async def test_a_stale_and_a_fresh_record_of_one_delivery_in_one_batch(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """The stale record waited to be written while its lease ran out and the delivery was
    claimed again: both reach one batch, and only the holder's is written, once."""
    await endpoint(client, f"{helpers.DISCARD_URL}/both")
    await finished_task(client, 303)
    [stale] = await claim(engine, "replica-a", lease_s=0)
    [fresh] = await claim(engine, "replica-a")
    delivered = (AttemptResult(200), Decision(Verdict.DELIVERED))
    async with create_sessionmaker(engine).begin() as session:
        held = await WebhookRepository(session).record_attempts(
            [finished(stale, *delivered), finished(fresh, *delivered)]
        )
    assert held == {(fresh.id, fresh.token)}
    rows = await attempt_rows(engine)
    assert [(r.delivery_id, r.attempt) for r in rows] == [(fresh.id, 1)]


async def test_callbacks_to_one_origin_share_a_limit_key(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    hook = await endpoint(client, f"{helpers.DISCARD_URL}/hook")
    for n in range(3):
        await finished_task(client, 310 + n, callback_url=f"{helpers.DISCARD_URL}/cb/{n}?x=1")
    claims = await claim(engine, "replica-a", per_key=2)
    keys = sorted(c.limit_key for c in claims)
    # Two of the three callbacks (the limit), and two of the endpoint's three deliveries.
    assert keys == sorted([helpers.DISCARD_URL] * 2 + [hook["id"]] * 2)
    # What this replica holds counts: one more room for the endpoint, none for the origin.
    async with create_sessionmaker(engine).begin() as session:
        more = await WebhookRepository(session).claim_due(
            limit=100,
            owner="replica-a",
            lease_s=30,
            per_key=3,
            held={hook["id"]: 2, helpers.DISCARD_URL: 3},
        )
    assert [c.limit_key for c in more] == [hook["id"]]


@pytest.mark.parametrize(
    ("result", "decision", "status", "error"),
    [
        (AttemptResult(200), Decision(Verdict.DELIVERED), "succeeded", None),
        (AttemptResult(500), Decision(Verdict.RETRY, 5.0), "pending", "HTTP 500"),
        (AttemptResult(410), Decision(Verdict.ENDPOINT_GONE), "failed", "HTTP 410"),
        (AttemptResult(302), Decision(Verdict.GIVE_UP), "failed", "HTTP 302"),
        (AttemptResult(None, error="refused: x"), Decision(Verdict.RETRY, 1.0), "pending", None),
        (AttemptResult(None, error="t", timed_out=True), Decision(Verdict.GIVE_UP), "failed", "t"),
    ],
)
def test_an_outcome_is_written_as(
    result: AttemptResult, decision: Decision, status: str, error: str | None
) -> None:
    claimed = ClaimedDelivery(
        id=uuid.uuid4(),
        token=3,
        tenant="acme",
        url="http://127.0.0.1:9/x",
        endpoint_id=None,
        attempts=0,
        event_id=uuid.uuid4(),
        event_type="task.succeeded",
        event_created_at=datetime.now(UTC),
        payload={},
        secrets=["whsec_x"],
        endpoint_enabled=True,
        limit_key="http://127.0.0.1:9",
    )
    written = Outcome.of(claimed, result, decision, duration_ms=5, body=None, counted=True).record
    assert written.status == status
    assert written.error == (error if error is not None else result.error)
    assert written.next_attempt_in_s == decision.delay_s
    assert (written.delivery_id, written.token, written.verdict) == (
        claimed.id,
        3,
        decision.verdict.value,
    )


async def test_the_loop_records_every_kind_of_outcome(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    hooks = {
        path: await endpoint(client, receiver.url(path))
        for path in ("/ok", "/broken", "/gone", "/hang")
    }
    blocked = await endpoint(client, f"{helpers.DISCARD_URL}/blocked")
    receiver.on("/broken", Answer(500, b"boom"))
    receiver.on("/gone", Answer(410))
    receiver.on("/hang", Answer(200, delay_s=5))
    # Only the receiver's port is open: the discard port is refused when dialled.
    deliveries(webhook_allow_networks=[AllowedNetwork.parse(f"127.0.0.1:{receiver.port}")])
    task = await finished_task(client, 303)

    async def all_attempted() -> bool:
        items = await deliveries_of(client, task["id"])
        return len(items) == 5 and all(d["attempt_log"] for d in items)

    await eventually(all_attempted)
    by_url = {d["url"]: d for d in await deliveries_of(client, task["id"])}
    first = {url: d["attempt_log"][0] for url, d in by_url.items()}
    assert by_url[receiver.url("/ok")]["status"] == "succeeded"
    assert first[receiver.url("/broken")]["status_code"] == 500
    assert first[receiver.url("/gone")]["status_code"] == 410
    assert by_url[receiver.url("/gone")]["status"] == "failed"
    assert "no answer within 1 s" in first[receiver.url("/hang")]["error"]
    assert "refused" in first[blocked["url"]]["error"]
    assert receiver.at("/blocked") == []
    gone_now = (await client.get(f"/v1/webhooks/{hooks['/gone']['id']}")).json()
    assert gone_now["enabled"] is False
    for path, hook in hooks.items():
        for received in receiver.at(path):
            assert verify(hook["secret"], received)["data"]["id"] == task["id"]


async def test_one_endpoint_gets_at_most_its_limit_and_does_not_hold_up_the_others(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any, settings: Settings
) -> None:
    slow = await endpoint(client, receiver.url("/slow"))
    fast = await endpoint(client, receiver.url("/fast"))
    receiver.on("/slow", Answer(200, delay_s=0.4))
    tasks = [await finished_task(client, 320 + n) for n in range(12)]
    deliveries(webhooks=settings.webhooks.model_copy(update={"per_endpoint_in_flight": 2}))

    async def fast_all_arrived() -> bool:
        return len(receiver.at("/fast")) == len(tasks)

    await eventually(fast_all_arrived)
    # The slow endpoint's backlog, older in the queue, did not hold the fast one back.
    assert len(receiver.at("/slow")) < len(tasks)

    async def slow_all_arrived() -> bool:
        return len(receiver.at("/slow")) == len(tasks)

    await eventually(slow_all_arrived)
    assert receiver.peak["/slow"] <= 2
    for path, hook in (("/slow", slow), ("/fast", fast)):
        ids = [r.headers["webhook-id"] for r in receiver.at(path)]
        assert len(set(ids)) == len(tasks)
        for received in receiver.at(path):
            verify(hook["secret"], received)
