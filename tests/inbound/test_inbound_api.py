"""POST /v1/inbound/{instance} on the real app and Postgres: a verified callback makes the
task it names due now and nothing else; forged, replayed, unknown-task and malformed ones
change nothing and are counted. Signatures are made with PyPI `standardwebhooks`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from standardwebhooks.webhooks import Webhook

from app.core.config import Settings
from app.core.metrics import REGISTRY
from app.models import InboundCallback, Task
from tests.helpers import ACME_KEY, ADMIN_KEYS, DISCARD, OPS_KEY, OTHER_KEY, READER_KEY

TOKEN = "inbound-test-token-0123456789abcdef"
SIGNING = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PREDICTION = "rrr4z55ocneqzikepnug6xezpe"
TRANSCRIPT = "5551722-f677-48a6-9287-39c0aafd9ac1"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}, {"tenant": "other", "key": OTHER_KEY}],
        admin_keys=ADMIN_KEYS,
        webhook_allow_networks=[DISCARD],
        public_url="http://127.0.0.1:8000",
        providers={
            "replicate": {"callback_secret": SIGNING},
            "assemblyai": {"callback_secret": TOKEN},
        },
        log_format="json",
    )


async def register(
    client: httpx.AsyncClient, provider: str, external_id: str, key: str = ACME_KEY
) -> str:
    response = await client.post(
        "/v1/tasks",
        json={"provider": provider, "external_id": external_id},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def row(engine: AsyncEngine, task_id: str) -> Task:
    async with AsyncSession(engine) as session:
        found = await session.scalar(select(Task).where(Task.id == task_id))
        assert found is not None
        return found


def counted(instance: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "pollhook_inbound_callbacks_total", {"provider": instance, "result": result}
    )
    return value or 0.0


def signed(
    body: dict[str, Any], *, msg: str = "msg_1", at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    when = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    signature = Webhook(SIGNING).sign(msg, when, raw.decode())
    headers = {
        "webhook-id": msg,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return raw, headers


async def test_a_signed_callback_makes_its_task_due_now_and_nothing_else(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id = await register(client, "replicate", PREDICTION)
    before = await row(engine, task_id)
    body, headers = signed({"id": PREDICTION, "status": "succeeded", "output": ["http://x/a.wav"]})
    response = await client.post("/v1/inbound/replicate", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"result": "hinted", "tasks": 1}
    after = await row(engine, task_id)
    assert after.next_poll_at is not None
    assert before.next_poll_at is not None
    assert after.next_poll_at < before.next_poll_at
    # A hint, not the truth: the task's state is what a poll will say.
    assert (after.status, after.result, after.sequence) == (before.status, None, before.sequence)

    again = await client.post("/v1/inbound/replicate", content=body, headers=headers)
    assert again.json() == {"result": "replayed", "tasks": 0}


async def test_forged_signatures_change_nothing_and_are_counted(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id = await register(client, "replicate", PREDICTION)
    before = await row(engine, task_id)
    forged_before = counted("replicate", "forged")
    body, headers = signed({"id": PREDICTION, "status": "succeeded"})
    for forged in (
        {**headers, "webhook-signature": "v1,AAAA"},
        {k: v for k, v in headers.items() if k != "webhook-signature"},
        signed({"id": PREDICTION}, at=time.time() - 3600)[1],  # stale, replayed an hour later
    ):
        response = await client.post("/v1/inbound/replicate", content=body, headers=forged)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"
    tampered = body.replace(b"succeeded", b"failed")
    assert (
        await client.post("/v1/inbound/replicate", content=tampered, headers=headers)
    ).status_code == 401
    assert counted("replicate", "forged") == forged_before + 4
    assert (await row(engine, task_id)).next_poll_at == before.next_poll_at
    async with AsyncSession(engine) as session:
        assert (await session.scalars(select(InboundCallback))).all() == []


async def test_a_token_callback_hints_every_tenants_task_with_that_id(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    mine = await register(client, "assemblyai", TRANSCRIPT)
    theirs = await register(client, "assemblyai", TRANSCRIPT, key=OTHER_KEY)
    body = {"transcript_id": TRANSCRIPT, "status": "completed"}
    wrong = await client.post("/v1/inbound/assemblyai?token=nope", json=body)
    assert wrong.status_code == 401
    response = await client.post(f"/v1/inbound/assemblyai?token={TOKEN}", json=body)
    assert response.json() == {"result": "hinted", "tasks": 2}
    by_header = await client.post(
        "/v1/inbound/assemblyai",
        json={**body, "status": "error"},
        headers={"X-Pollhook-Token": TOKEN},
    )
    assert by_header.json() == {"result": "hinted", "tasks": 2}
    for task_id in (mine, theirs):
        assert (await row(engine, task_id)).status == "pending"


async def test_an_unknown_or_ended_task_is_counted_and_changes_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    unknown_before = counted("assemblyai", "unknown_task")
    response = await client.post(
        f"/v1/inbound/assemblyai?token={TOKEN}", json={"transcript_id": "no-such-transcript"}
    )
    assert response.json() == {"result": "unknown_task", "tasks": 0}
    cancelled = await register(client, "assemblyai", TRANSCRIPT)
    assert (await client.delete(f"/v1/tasks/{cancelled}")).status_code == 200
    ended = await client.post(
        f"/v1/inbound/assemblyai?token={TOKEN}", json={"transcript_id": TRANSCRIPT}
    )
    assert ended.json() == {"result": "unknown_task", "tasks": 0}
    # A body that names no task this provider could have (not its field, not an id).
    for body in ({"id": TRANSCRIPT}, {"transcript_id": "../../etc"}, {"transcript_id": 7}):
        named = await client.post(f"/v1/inbound/assemblyai?token={TOKEN}", json=body)
        assert named.json()["result"] == "unknown_task"
    assert counted("assemblyai", "unknown_task") == unknown_before + 5


async def test_a_callback_during_a_poll_asks_for_another_right_after(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    task_id = await register(client, "assemblyai", TRANSCRIPT)
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(
            update(Task).where(Task.id == task_id).values(lease_owner="replica-1")
        )
    before = await row(engine, task_id)
    response = await client.post(
        f"/v1/inbound/assemblyai?token={TOKEN}", json={"transcript_id": TRANSCRIPT}
    )
    assert response.json() == {"result": "hinted", "tasks": 1}
    after = await row(engine, task_id)
    # The poll in flight writes next_poll_at; it plans the next one at the floor instead.
    assert after.poll_again
    assert after.next_poll_at == before.next_poll_at


@pytest.mark.parametrize(
    ("instance", "status"), [("minimax", 404), ("jimmy", 404), ("nowhere", 404)]
)
async def test_an_instance_that_takes_no_callbacks_refuses_them(
    client: httpx.AsyncClient, instance: str, status: int
) -> None:
    response = await client.post(f"/v1/inbound/{instance}?token={TOKEN}", json={"task_id": 1})
    assert response.status_code == status
    assert response.json()["error"]["code"] == "not_found"


async def test_malformed_bodies_and_minimax_challenges(client: httpx.AsyncClient) -> None:
    for content in (b"", b"not json", b"[1, 2]", b'"text"', b"{" * 100_000):
        response = await client.post(f"/v1/inbound/assemblyai?token={TOKEN}", content=content)
        assert response.status_code in (413, 422), response.text
    echo = await client.post(f"/v1/inbound/assemblyai?token={TOKEN}", json={"challenge": "c-42"})
    assert echo.json() == {"challenge": "c-42"}


async def test_operators_see_the_url_to_hand_the_provider(client: httpx.AsyncClient) -> None:
    shown: dict[str, dict[str, Any]] = {}
    for key in (OPS_KEY, READER_KEY, ACME_KEY):
        response = await client.get("/v1/providers", headers={"Authorization": f"Bearer {key}"})
        shown[key] = {item["name"]: item for item in response.json()["items"]}
    ops = shown[OPS_KEY]
    assert ops["assemblyai"]["callback_url"] == (
        f"http://127.0.0.1:8000/v1/inbound/assemblyai?token={TOKEN}"
    )
    assert ops["replicate"]["callback_url"] == "http://127.0.0.1:8000/v1/inbound/replicate"
    assert ops["minimax"]["callback_url"] is None
    for key in (READER_KEY, ACME_KEY):
        assert all(item["callback_url"] is None for item in shown[key].values())
    assert shown[ACME_KEY]["assemblyai"]["callbacks"] is True
    assert shown[ACME_KEY]["minimax"]["callbacks"] is False
