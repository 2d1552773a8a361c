"""Delivery over real HTTP to a loopback receiver, on real Postgres."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook

from app.core.db import create_sessionmaker
from app.webhooks.events import WebhookEvent
from app.webhooks.repository import WebhookRepository
from tests import helpers
from tests.helpers import NO_LINKS
from tests.webhooks.receiver import Answer, Receiver

# The suite's condition poller, with the 10 s these deliveries to loopback need at most.
eventually = functools.partial(helpers.eventually, within_s=10.0)


async def endpoint(client: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def finished_task(client: httpx.AsyncClient, external_id: int, **body: Any) -> dict[str, Any]:
    """A task that reaches a terminal status (cancelled) and so emits a terminal event."""
    task = (
        await client.post(
            "/v1/tasks", json={"provider": "minimax", "external_id": external_id, **body}
        )
    ).json()
    cancelled: dict[str, Any] = (await client.delete(f"/v1/tasks/{task['id']}")).json()
    return cancelled


def verify(secret: str, received: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


async def deliveries_of(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get(f"/v1/tasks/{task_id}/deliveries")).json()[
        "items"
    ]
    return items


async def test_signed_delivery_to_endpoint_and_callback(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    hook = await endpoint(client, receiver.url("/hook"))
    await endpoint(client, receiver.url("/only-processing"), events=["task.processing"])
    deliveries()
    task = await finished_task(client, 11, callback_url=receiver.url("/cb"))

    async def both_arrived() -> bool:
        return bool(receiver.at("/hook") and receiver.at("/cb"))

    await eventually(both_arrived)
    [at_hook] = receiver.at("/hook")
    payload = verify(hook["secret"], at_hook)
    assert payload["type"] == "task.cancelled"
    assert payload["data"]["id"] == task["id"]
    assert payload["data"]["status"] == "cancelled"
    assert payload["data"]["sequence"] == 1
    assert set(payload) == {"type", "timestamp", "data"}
    tenant_secret = (await client.get("/v1/signing-secret")).json()["secret"]
    [at_cb] = receiver.at("/cb")
    assert verify(tenant_secret, at_cb)["data"]["id"] == task["id"]
    # One event: the same webhook-id on both deliveries, and it is the event's id.
    assert at_hook.headers["webhook-id"] == at_cb.headers["webhook-id"]
    assert receiver.at("/only-processing") == []  # not subscribed to task.cancelled

    async def recorded() -> bool:
        items = await deliveries_of(client, task["id"])
        return len(items) == 2 and all(d["status"] == "succeeded" for d in items)

    await eventually(recorded)
    items = await deliveries_of(client, task["id"])
    assert {d["event_id"] for d in items} == {at_hook.headers["webhook-id"]}
    assert all(d["attempts"] == 1 and d["attempt_log"][0]["status_code"] == 200 for d in items)
    assert items[0]["attempt_log"][0]["response_body"] == "ok"


async def test_retries_keep_the_webhook_id(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    from app.core.metrics import REGISTRY

    def counted(outcome: str) -> float:
        return REGISTRY.get_sample_value("pollhook_deliveries_total", {"outcome": outcome}) or 0.0

    def latencies() -> float:
        return REGISTRY.get_sample_value("pollhook_delivery_latency_seconds_count") or 0.0

    retries_before, delivered_before = counted("retry"), counted("delivered")
    latencies_before = latencies()
    hook = await endpoint(client, receiver.url("/flaky"))
    receiver.on(
        "/flaky",
        Answer(500, b"boom"),
        Answer(503, b"later", headers={"retry-after": "0"}),
        Answer(302, b"", headers={"location": receiver.url("/elsewhere")}),
        Answer(200),
    )
    deliveries()
    task = await finished_task(client, 12)

    async def delivered() -> bool:
        items = await deliveries_of(client, task["id"])
        return bool(items) and items[0]["status"] == "succeeded"

    await eventually(delivered)
    attempts = receiver.at("/flaky")
    assert len(attempts) == 4
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    assert len({a.body for a in attempts}) == 1  # the same body; only the timestamp changes
    for attempt in attempts:
        verify(hook["secret"], attempt)
    assert receiver.at("/elsewhere") == []  # redirects are not followed
    [item] = await deliveries_of(client, task["id"])
    assert [a["status_code"] for a in item["attempt_log"]] == [500, 503, 302, 200]
    assert counted("retry") - retries_before == 3
    assert counted("delivered") - delivered_before == 1
    # One latency, from the event to the 2xx, the retries included; none for the others.
    assert latencies() - latencies_before == 1
    assert item["attempt_log"][0]["response_body"] == "boom"


async def test_gives_up_after_the_schedule_and_retry_by_api(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    await endpoint(client, receiver.url("/down"))
    receiver.on("/down", Answer(500))
    deliveries()
    task = await finished_task(client, 13)

    async def failed() -> bool:
        items = await deliveries_of(client, task["id"])
        return bool(items) and items[0]["status"] == "failed"

    await eventually(failed)
    [item] = await deliveries_of(client, task["id"])
    assert item["attempts"] == 4  # the compressed schedule's length
    receiver.on("/down", Answer(204, b""))
    retried = await client.post(f"/v1/deliveries/{item['id']}/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] == "pending"

    async def delivered() -> bool:
        items = await deliveries_of(client, task["id"])
        return bool(items[0]["status"] == "succeeded")

    await eventually(delivered)
    assert len(receiver.at("/down")) == 5


async def test_429_with_retry_after_waits_at_least_the_floor(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    await endpoint(client, receiver.url("/busy"))
    # Retry-After says "now" and the schedule says 0.2 s; after a 429 the floor wins.
    receiver.on("/busy", Answer(429, headers={"retry-after": "0"}), Answer(200))
    deliveries()
    task = await finished_task(client, 14)

    async def delivered() -> bool:
        items = await deliveries_of(client, task["id"])
        return bool(items) and items[0]["status"] == "succeeded"

    await eventually(delivered)
    [item] = await deliveries_of(client, task["id"])
    first, second = (datetime.fromisoformat(a["attempted_at"]) for a in item["attempt_log"])
    assert [a["status_code"] for a in item["attempt_log"]] == [429, 200]
    assert (second - first).total_seconds() >= 0.3  # overload_floor_s in these settings


async def test_410_disables_and_reenabling_redelivers(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    hook = await endpoint(client, receiver.url("/gone"))
    receiver.on("/gone", Answer(410, b"gone"))
    deliveries()
    task = await finished_task(client, 15)

    async def disabled() -> bool:
        got = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
        return got["enabled"] is False

    await eventually(disabled)
    got = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
    assert "410" in got["disabled_reason"]
    assert len(receiver.at("/gone")) == 1  # no retries after 410
    # Events while disabled are not queued for it.
    await finished_task(client, 16)
    receiver.on("/gone", Answer(200))
    patched = await client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True})
    assert patched.json()["enabled"] is True

    async def redelivered() -> bool:
        return len(receiver.at("/gone")) == 2

    await eventually(redelivered)
    second = receiver.at("/gone")[1]
    assert verify(hook["secret"], second)["data"]["id"] == task["id"]
    await asyncio.sleep(0.3)
    assert len(receiver.at("/gone")) == 2


async def test_hanging_and_dripping_consumers_time_out(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    await endpoint(client, receiver.url("/hang"))
    await endpoint(client, receiver.url("/drip"))
    receiver.on("/hang", Answer(200, delay_s=5))
    receiver.on("/drip", Answer(200, body=b"x" * 100, drip_s=0.05))
    deliveries()
    task = await finished_task(client, 17)
    started = time.monotonic()

    async def both_attempted() -> bool:
        items = await deliveries_of(client, task["id"])
        return len(items) == 2 and all(d["attempt_log"] for d in items)

    await eventually(both_attempted)
    assert time.monotonic() - started < 4  # the 1 s timeout bounds each attempt
    for item in await deliveries_of(client, task["id"]):
        first = item["attempt_log"][0]
        assert first["status_code"] is None
        assert "no answer within 1 s" in first["error"]
        assert first["duration_ms"] < 1600


async def test_a_crash_after_commit_or_claim_still_delivers_with_the_same_id(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any, engine: AsyncEngine
) -> None:
    hook = await endpoint(client, receiver.url("/late"))
    # The event commits while no delivery loop runs (the process died right after).
    task = await finished_task(client, 18)
    # Another replica claims the delivery and dies before sending.
    async with create_sessionmaker(engine).begin() as session:
        [claim] = await WebhookRepository(session).claim_due(
            limit=10, owner="dead-replica", lease_s=0.5, per_key=16, held={}
        )
    deliveries()

    async def arrived() -> bool:
        return len(receiver.at("/late")) == 1

    await eventually(arrived)
    [received] = receiver.at("/late")
    assert received.headers["webhook-id"] == str(claim.event_id)
    assert verify(hook["secret"], received)["data"]["id"] == task["id"]


async def test_two_replicas_never_send_one_attempt_twice(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any, engine: AsyncEngine
) -> None:
    await endpoint(client, receiver.url("/many"))
    receiver.on("/many", Answer(200, delay_s=0.02))
    for i in range(40):
        await finished_task(client, 100 + i)
    deliveries("replica-a")
    deliveries("replica-b")

    async def all_done() -> bool:
        async with engine.connect() as conn:
            pending = await conn.scalar(
                text("SELECT count(*) FROM deliveries WHERE status <> 'succeeded'")
            )
        return bool(pending == 0)

    await eventually(all_done, within_s=20)
    ids = [r.headers["webhook-id"] for r in receiver.at("/many")]
    assert len(ids) == 40
    assert len(set(ids)) == 40


async def test_connect_time_guard_refuses_what_registration_allowed(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any, settings: Any
) -> None:
    """The address is checked again when dialled: an allowance removed (or a DNS answer
    changed) since registration means no connection at all."""
    await endpoint(client, receiver.url("/guarded"))
    deliveries(webhook_allow_networks=[])
    task = await finished_task(client, 19)

    async def attempted() -> bool:
        items = await deliveries_of(client, task["id"])
        return bool(items and items[0]["attempt_log"])

    await eventually(attempted)
    [item] = await deliveries_of(client, task["id"])
    assert "refused" in item["attempt_log"][0]["error"]
    assert "loopback" in item["attempt_log"][0]["error"]
    assert receiver.at("/guarded") == []


async def test_payload_is_the_full_task_object(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    hook = await endpoint(client, receiver.url("/full"))
    deliveries()
    task = await finished_task(client, 20, metadata={"order": 42})

    async def arrived() -> bool:
        return bool(receiver.at("/full"))

    await eventually(arrived)
    payload = verify(hook["secret"], receiver.at("/full")[0])
    assert payload["data"] == task
    assert json.loads(receiver.at("/full")[0].body)["timestamp"]
    # The body is exactly what the OpenAPI document's `webhooks` describe.
    event = WebhookEvent.model_validate_json(receiver.at("/full")[0].body)
    assert event.model_dump(mode="json")["data"] == task


async def test_a_consumer_that_is_down(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    closed = Receiver()  # a port nobody listens on
    await endpoint(client, closed.url("/nobody"))
    deliveries()
    task = await finished_task(client, 21)

    async def failed() -> bool:
        items = await deliveries_of(client, task["id"])
        return bool(items) and items[0]["status"] == "failed"

    await eventually(failed)
    [item] = await deliveries_of(client, task["id"])
    assert item["attempts"] == 4
    assert all(a["status_code"] is None for a in item["attempt_log"])
    assert all("ConnectError" in a["error"] for a in item["attempt_log"])


async def test_endpoints_failing_for_days_are_disabled(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Any
) -> None:
    from app.webhooks.delivery import DeliveryWorker

    recent = await endpoint(client, "http://127.0.0.1:9/recent")
    old = await endpoint(client, "http://127.0.0.1:9/old")
    failing_since = text(
        "UPDATE webhook_endpoints SET failing_since = now() - make_interval(days => :days) "
        "WHERE id = :id"
    )
    async with engine.begin() as conn:
        await conn.execute(failing_since, {"id": old["id"], "days": 6})
        await conn.execute(failing_since, {"id": recent["id"], "days": 4})
    await DeliveryWorker(settings, engine, "housekeeper", NO_LINKS).housekeeping()
    old_now = (await client.get(f"/v1/webhooks/{old['id']}")).json()
    recent_now = (await client.get(f"/v1/webhooks/{recent['id']}")).json()
    assert old_now["enabled"] is False
    assert "failing" in old_now["disabled_reason"]
    assert recent_now["enabled"] is True


async def test_other_tenants_cannot_see_or_retry_deliveries(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    from tests.helpers import OTHER_KEY

    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    await endpoint(client, receiver.url("/mine"))
    task = await finished_task(client, 22)
    [item] = await deliveries_of(client, task["id"])
    assert (
        await client.get(f"/v1/tasks/{task['id']}/deliveries", headers=other)
    ).status_code == 404
    retried = await client.post(f"/v1/deliveries/{item['id']}/retry", headers=other)
    assert retried.status_code == 404
    assert retried.json()["error"]["code"] == "not_found"


async def test_only_the_claims_commit_without_waiting_for_the_disk(
    engine: AsyncEngine, settings: Any
) -> None:
    from app.webhooks.delivery import DeliveryWorker

    worker = DeliveryWorker(settings, engine, "claimer", NO_LINKS)
    show = text("SHOW synchronous_commit")
    try:
        async with worker.loop.claims.session() as session:
            claims = await session.scalar(show)
        async with worker.loop.recorder.connection.session() as session:
            records = await session.scalar(show)
    finally:
        await worker.stop()
    assert (claims, records) == ("off", "on")


OPS = {"Authorization": f"Bearer {helpers.OPS_KEY}"}
READER = {"Authorization": f"Bearer {helpers.READER_KEY}"}
OTHER = {"Authorization": f"Bearer {helpers.OTHER_KEY}"}


async def _listed(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **query: Any
) -> list[dict[str, Any]]:
    response = await client.get("/v1/deliveries", params=query, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _failed_deliveries(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any, path: str, count: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An endpoint at `path` that answers 500, and `count` tasks whose deliveries to it
    have given up."""
    hook = await endpoint(client, receiver.url(path))
    receiver.on(path, Answer(500, b"down for maintenance"))
    deliveries()
    tasks = [await finished_task(client, 100 + n) for n in range(count)]

    async def all_failed() -> bool:
        items = await _listed(client, status="failed", endpoint_id=hook["id"])
        return len(items) == count

    await eventually(all_failed)
    return hook, tasks


async def test_deliveries_are_listed_by_state_endpoint_task_and_time(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    hook, tasks = await _failed_deliveries(client, receiver, deliveries, "/down", 3)
    # Another tenant's endpoint that answers.
    fine = (
        await client.post("/v1/webhooks", json={"url": receiver.url("/fine")}, headers=OTHER)
    ).json()
    task = (
        await client.post(
            "/v1/tasks", json={"provider": "minimax", "external_id": 200}, headers=OTHER
        )
    ).json()
    await client.delete(f"/v1/tasks/{task['id']}", headers=OTHER)

    async def delivered() -> bool:
        return len(await _listed(client, status="delivered", headers=OTHER)) == 1

    await eventually(delivered)
    troubled = await _listed(client)  # failing and failed, the default
    assert [d["task_id"] for d in troubled] == [t["id"] for t in reversed(tasks)]  # newest first
    assert {(d["status"], d["attempts"], d["last_status_code"]) for d in troubled} == {
        ("failed", 4, 500)
    }
    assert troubled[0]["tenant"] == "acme"
    assert troubled[0]["attempt_log"][-1]["response_body"] == "down for maintenance"
    assert await _listed(client, status="failing") == []
    assert await _listed(client, status="delivered") == []
    assert len(await _listed(client, status="all")) == 3
    [ok] = await _listed(client, status="all", endpoint_id=fine["id"], headers=OTHER)
    assert (ok["status"], ok["task_id"], ok["tenant"]) == ("succeeded", task["id"], "other")
    assert await _listed(client, status="all", endpoint_id=fine["id"]) == []
    [one] = await _listed(client, task_id=tasks[1]["id"])
    assert one["endpoint_id"] == hook["id"]
    middle = troubled[1]["created_at"]
    assert [d["id"] for d in await _listed(client, created_before=middle)] == [troubled[2]["id"]]
    assert [d["id"] for d in await _listed(client, created_after=middle)] == [
        d["id"] for d in troubled[:2]
    ]
    # Keyset pages: the same rows, a page at a time.
    first = (await client.get("/v1/deliveries", params={"limit": 2})).json()
    rest = (
        await client.get("/v1/deliveries", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [d["id"] for d in first["items"] + rest["items"]] == [d["id"] for d in troubled]
    assert rest["next_cursor"] is None
    bad = await client.get("/v1/deliveries", params={"status": "lost"})
    assert bad.status_code == 422
    backwards = await client.get(
        "/v1/deliveries", params={"created_after": middle, "created_before": middle}
    )
    assert backwards.status_code == 422

    # Another tenant sees none of it, whatever it asks for; an operator sees all, or one
    # tenant's.
    assert (await client.get("/v1/deliveries", params={"tenant": "acme"}, headers=OTHER)).json()[
        "items"
    ] == []
    as_ops = (await client.get("/v1/deliveries", headers=OPS)).json()["items"]
    assert [d["id"] for d in as_ops] == [d["id"] for d in troubled]
    assert len(await _listed(client, status="all", headers=OPS)) == 4
    only_other = await _listed(client, status="all", tenant="other", headers=OPS)
    assert [d["id"] for d in only_other] == [ok["id"]]

    summary = (await client.get("/v1/deliveries/summary")).json()
    assert summary == {
        "items": [
            {
                "endpoint_id": hook["id"],
                "tenant": "acme",
                "url": hook["url"],
                "failing": 0,
                "failed": 3,
            }
        ],
        "complete": True,
    }
    assert (await client.get("/v1/deliveries/summary", headers=OTHER)).json()["items"] == []
    assert (await client.get("/v1/deliveries/summary", headers=OPS)).json() == summary


async def test_bulk_retry_counts_then_retries_what_was_confirmed(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    hook, _ = await _failed_deliveries(client, receiver, deliveries, "/down", 3)
    receiver.on("/down", Answer(200))
    where = {"status": "failed", "endpoint_id": hook["id"]}

    counted = await client.post("/v1/deliveries/retry", json=where)
    assert counted.status_code == 200, counted.text
    assert counted.json()["matched"] == 3
    assert (counted.json()["retried"], counted.json()["limit"]) == (0, 10_000)
    assert len(receiver.at("/down")) == 12  # the count sent nothing
    # Fewer confirmed than match now: refused, nothing queued.
    refused = await client.post("/v1/deliveries/retry", json={**where, "expected": 2})
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {"matched": 3, "expected": 2}
    assert len(await _listed(client, status="failed")) == 3
    # Read-only operators are refused, and the refusal is recorded.
    denied = await client.post(
        "/v1/deliveries/retry", json={**where, "expected": 3}, headers=READER
    )
    assert denied.status_code == 403
    # Only failing or failed deliveries can be retried.
    delivered_too = await client.post("/v1/deliveries/retry", json={"status": "all"})
    assert delivered_too.status_code == 422

    done = await client.post(
        "/v1/deliveries/retry",
        json={**where, "expected": 3, "created_before": counted.json()["as_of"]},
    )
    assert done.status_code == 200, done.text
    assert (done.json()["matched"], done.json()["retried"]) == (3, 3)

    async def redelivered() -> bool:
        return len(await _listed(client, status="delivered")) == 3

    await eventually(redelivered)
    assert len(receiver.at("/down")) == 15
    for received in receiver.at("/down")[-3:]:
        assert verify(hook["secret"], received)["type"] == "task.cancelled"

    log = (await client.get("/v1/audit", headers=OPS)).json()["items"]
    entries = [(e["action"], e["actor"], e["result"]) for e in log[:2]]
    assert entries == [
        ("delivery.bulk_retry", "tenant:acme", "ok"),
        ("delivery.bulk_retry", "operator:reader", "denied"),
    ]
    assert log[0]["tenant"] == "acme"
    assert log[0]["target"].startswith("deliveries?created_before=")
    assert log[0]["target"].endswith(f"&endpoint_id={hook['id']}&status=failed")
    assert log[0]["details"]["matched"] == 3
    assert log[0]["details"]["retried"] == 3
    assert log[0]["details"]["filter"]["endpoint_id"] == hook["id"]


async def test_bulk_retry_stays_in_the_callers_tenant(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    await _failed_deliveries(client, receiver, deliveries, "/down", 2)
    theirs = await client.post(
        "/v1/deliveries/retry", json={"tenant": "acme", "expected": 10}, headers=OTHER
    )
    assert (theirs.json()["matched"], theirs.json()["retried"]) == (0, 0)
    assert len(await _listed(client, status="failed")) == 2
    # An operator reaches every tenant's.
    ops = await client.post("/v1/deliveries/retry", json={"expected": 2}, headers=OPS)
    assert (ops.json()["matched"], ops.json()["retried"]) == (2, 2)
    log = (await client.get("/v1/audit", headers=OPS)).json()["items"]
    assert (log[0]["actor"], log[0]["tenant"]) == ("operator:ops", None)


async def test_a_test_event_goes_out_signed_and_shows_in_recent_attempts(
    client: httpx.AsyncClient, receiver: Receiver, deliveries: Any
) -> None:
    from app.webhooks.events import EndpointTestEvent

    hook = await endpoint(client, receiver.url("/test-me"))
    receiver.on("/test-me", Answer(500, b"not yet"), Answer(200, b"thanks"))
    deliveries()
    sent = await client.post(f"/v1/webhooks/{hook['id']}/test")
    assert sent.status_code == 200, sent.text
    assert (sent.json()["event_type"], sent.json()["task_id"]) == ("webhook.test", None)

    async def answered() -> bool:
        return len(receiver.at("/test-me")) == 2

    await eventually(answered)
    first, second = receiver.at("/test-me")
    event = EndpointTestEvent.model_validate(verify(hook["secret"], second))
    assert (str(event.data.endpoint_id), event.data.requested_by) == (hook["id"], "tenant:acme")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == sent.json()["event_id"]

    async def recorded() -> bool:
        items = (await client.get(f"/v1/webhooks/{hook['id']}/attempts")).json()["items"]
        return len(items) == 2

    await eventually(recorded)
    attempts = (await client.get(f"/v1/webhooks/{hook['id']}/attempts")).json()["items"]
    assert [(a["attempt"], a["status_code"], a["response_body"]) for a in attempts] == [
        (2, 200, "thanks"),
        (1, 500, "not yet"),
    ]
    assert {a["event_type"] for a in attempts} == {"webhook.test"}
    assert {a["delivery_id"] for a in attempts} == {sent.json()["id"]}
    assert (
        await client.get(f"/v1/webhooks/{hook['id']}/attempts", headers=OTHER)
    ).status_code == 404
    one = (await client.get(f"/v1/webhooks/{hook['id']}/attempts", params={"limit": 1})).json()
    assert [a["attempt"] for a in one["items"]] == [2]

    log = (await client.get("/v1/audit", headers=OPS)).json()["items"]
    assert (log[0]["action"], log[0]["target"]) == ("webhook.test", f"webhook:{hook['id']}")
    assert log[0]["details"] == {"delivery_id": sent.json()["id"]}

    # A disabled endpoint is not tested: the delivery loop would only close the delivery.
    await client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False})
    assert (await client.post(f"/v1/webhooks/{hook['id']}/test")).status_code == 409
    assert (await client.post(f"/v1/webhooks/{hook['id']}/test", headers=READER)).status_code == 403
