from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Event, Task
from tests.helpers import DISCARD_URL, OTHER_KEY, assert_error, cursor_at, fields_of

MINIMAX_ID = 95157322514444
JIMMY_ID = "audio_16b635ba-5889-4fa5-bbcc-bf67a38c353a"


async def register(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    payload = {"provider": "minimax", "external_id": MINIMAX_ID, **body}
    return await client.post("/v1/tasks", json=payload)


class TestRegister:
    async def test_new_task_is_pending_with_schedule(self, client: httpx.AsyncClient) -> None:
        response = await register(
            client, metadata={"text_chars": 1200}, callback_url=f"{DISCARD_URL}/h"
        )
        assert response.status_code == 201
        task = response.json()
        assert task["status"] == "pending"
        assert task["provider"] == "minimax"
        assert task["external_id"] == str(MINIMAX_ID)
        assert task["metadata"] == {"text_chars": 1200}
        assert task["callback_url"] == f"{DISCARD_URL}/h"
        assert task["polls"] == 0
        assert task["sequence"] == 0
        assert task["result"] is None
        assert task["error"] is None
        assert task["completed_at"] is None
        assert task["next_poll_at"] > task["created_at"]
        assert task["deadline_at"] > task["next_poll_at"]
        assert set(task) == {
            "id",
            "provider",
            "external_id",
            "status",
            "result",
            "error",
            "metadata",
            "callback_url",
            "polls",
            "sequence",
            "created_at",
            "updated_at",
            "completed_at",
            "next_poll_at",
            "estimated_ready_at",
            "size_hint",
            "deadline_at",
            "last_poll_error",
            "archive",
        }
        assert task["last_poll_error"] is None

    async def test_same_registration_is_idempotent(self, client: httpx.AsyncClient) -> None:
        first = await register(client)
        second = await client.post(
            "/v1/tasks", json={"provider": "minimax", "external_id": str(MINIMAX_ID)}
        )
        assert (first.status_code, second.status_code) == (201, 200)
        assert first.json()["id"] == second.json()["id"]

    async def test_different_parameters_conflict(self, client: httpx.AsyncClient) -> None:
        await register(client, metadata={"a": 1})
        error = assert_error(await register(client, metadata={"a": 2}), 409, "conflict")
        assert error["details"]["fields"] == ["metadata"]

    async def test_concurrent_duplicates_make_one_row(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        responses = await asyncio.gather(*(register(client) for _ in range(8)))
        assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
        assert len({r.json()["id"] for r in responses}) == 1
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(Task)) == 1

    async def test_jimmy_opaque_id(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/tasks", json={"provider": "jimmy", "external_id": JIMMY_ID}
        )
        assert response.status_code == 201
        assert response.json()["external_id"] == JIMMY_ID

    async def test_client_deadline(self, client: httpx.AsyncClient) -> None:
        task = (await register(client, deadline_s=60)).json()
        from datetime import datetime

        created = datetime.fromisoformat(task["created_at"])
        deadline = datetime.fromisoformat(task["deadline_at"])
        assert (deadline - created).total_seconds() == 60

    async def test_tenants_are_isolated_for_the_same_id(self, client: httpx.AsyncClient) -> None:
        mine = await register(client)
        theirs = await register_as(client, OTHER_KEY)
        assert (mine.status_code, theirs.status_code) == (201, 201)
        assert mine.json()["id"] != theirs.json()["id"]


async def test_same_registration_with_another_size_hint_conflicts(
    client: httpx.AsyncClient,
) -> None:
    body = {"provider": "minimax", "external_id": 4242, "size_hint": 10}
    assert (await client.post("/v1/tasks", json=body)).status_code == 201
    assert (await client.post("/v1/tasks", json=body)).status_code == 200
    again = await client.post("/v1/tasks", json={**body, "size_hint": 11})
    assert again.status_code == 409
    assert again.json()["error"]["details"]["fields"] == ["size_hint"]
    for bad in (0, -1, "12", 1.5, 10**13):
        r = await client.post("/v1/tasks", json={**body, "external_id": 4244, "size_hint": bad})
        assert r.status_code == 422, bad


async def register_as(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    payload = {"provider": "minimax", "external_id": MINIMAX_ID, **body}
    return await client.post("/v1/tasks", json=payload, headers={"Authorization": f"Bearer {key}"})


class TestRegisterRejects:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"provider": "minimax", "external_id": ""}, "external_id"),
            ({"provider": "minimax", "external_id": "12ab"}, "external_id"),
            ({"provider": "minimax", "external_id": " 12"}, "external_id"),
            ({"provider": "minimax", "external_id": -5}, "external_id"),
            ({"provider": "minimax", "external_id": 0}, "external_id"),
            ({"provider": "minimax", "external_id": 2**63}, "external_id"),
            ({"provider": "minimax", "external_id": str(2**63)}, "external_id"),
            ({"provider": "minimax", "external_id": 1.5}, "external_id"),
            ({"provider": "minimax", "external_id": True}, "external_id"),
            ({"provider": "minimax", "external_id": None}, "external_id"),
            ({"provider": "minimax", "external_id": [1]}, "external_id"),
            ({"provider": "jimmy", "external_id": ""}, "external_id"),
            ({"provider": "jimmy", "external_id": "x" * 257}, "external_id"),
            ({"provider": "jimmy", "external_id": 12}, "external_id"),
            ({"provider": "jimmy", "external_id": "a\nb"}, "external_id"),
            ({"provider": "nope", "external_id": "1"}, "provider"),
            ({"provider": "", "external_id": "1"}, "provider"),
            ({"provider": 5, "external_id": "1"}, "provider"),
            ({"external_id": "1"}, "provider"),
            ({"provider": "minimax"}, "external_id"),
            (
                {"provider": "minimax", "external_id": 1, "callback_url": "ftp://x.example/"},
                "callback_url",
            ),
            (
                {"provider": "minimax", "external_id": 1, "callback_url": "javascript:alert(1)"},
                "callback_url",
            ),
            (
                {"provider": "minimax", "external_id": 1, "callback_url": "not a url"},
                "callback_url",
            ),
            ({"provider": "minimax", "external_id": 1, "callback_url": "https://"}, "callback_url"),
            (
                {"provider": "minimax", "external_id": 1, "callback_url": "http://10.0.0.7/hook"},
                "callback_url",
            ),
            (
                {
                    "provider": "minimax",
                    "external_id": 1,
                    "callback_url": "http://169.254.169.254/",
                },
                "callback_url",
            ),
            (
                {"provider": "minimax", "external_id": 1, "callback_url": "http://localhost:80/x"},
                "callback_url",
            ),
            ({"provider": "minimax", "external_id": 1, "metadata": "text"}, "metadata"),
            ({"provider": "minimax", "external_id": 1, "metadata": {"x": "y" * 17000}}, "metadata"),
            ({"provider": "minimax", "external_id": 1, "deadline_s": 0}, "deadline_s"),
            ({"provider": "minimax", "external_id": 1, "deadline_s": "60"}, "deadline_s"),
            ({"provider": "minimax", "external_id": 1, "deadline_s": 10**9}, "deadline_s"),
            ({"provider": "minimax", "external_id": 1, "surprise": True}, "surprise"),
        ],
    )
    async def test_invalid_body_names_the_field(
        self, client: httpx.AsyncClient, body: dict[str, Any], field: str
    ) -> None:
        error = assert_error(await client.post("/v1/tasks", json=body), 422, "validation_error")
        assert field in fields_of(error), error

    async def test_unknown_field_says_so(self, client: httpx.AsyncClient) -> None:
        error = assert_error(await register(client, extra_field=1), 422, "validation_error")
        assert error["details"] == [
            {"field": "extra_field", "location": "body", "message": "unknown field"}
        ]

    @pytest.mark.parametrize("raw", [b"{", b"{'a': 1}", b"[1,2", b"\xff\xfe", b"nul"])
    async def test_malformed_json(self, client: httpx.AsyncClient, raw: bytes) -> None:
        response = await client.post(
            "/v1/tasks", content=raw, headers={"content-type": "application/json"}
        )
        error = assert_error(response, 422, "invalid_json")
        assert fields_of(error) == ["body"]

    @pytest.mark.parametrize("raw", [b"[]", b"1", b'"x"', b"null"])
    async def test_json_that_is_not_an_object(self, client: httpx.AsyncClient, raw: bytes) -> None:
        response = await client.post(
            "/v1/tasks", content=raw, headers={"content-type": "application/json"}
        )
        assert_error(response, 422, "validation_error")

    async def test_wrong_content_type(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/tasks",
            content=b"provider=minimax",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert_error(response, 415, "unsupported_media_type")

    async def test_huge_body_with_length(self, client: httpx.AsyncClient) -> None:
        big = {"provider": "minimax", "external_id": 1, "metadata": {"x": "y" * 70_000}}
        assert_error(await client.post("/v1/tasks", json=big), 413, "payload_too_large")

    async def test_huge_chunked_body(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> Any:
            yield b'{"provider": "minimax", "external_id": 1, "metadata": {"x": "'
            for _ in range(100):
                yield b"y" * 1024
            yield b'"}}'

        response = await client.post(
            "/v1/tasks", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_error(response, 413, "payload_too_large")


class TestReadAndList:
    async def test_get(self, client: httpx.AsyncClient) -> None:
        created = (await register(client)).json()
        response = await client.get(f"/v1/tasks/{created['id']}")
        assert response.status_code == 200
        assert response.json() == created

    async def test_get_unknown_and_foreign(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get(f"/v1/tasks/{uuid.uuid4()}"), 404, "not_found")
        foreign = (await register_as(client, OTHER_KEY)).json()
        assert_error(await client.get(f"/v1/tasks/{foreign['id']}"), 404, "not_found")
        error = assert_error(await client.get("/v1/tasks/not-a-uuid"), 422, "validation_error")
        assert fields_of(error) == ["task_id"]

    async def test_pagination_walks_every_task_newest_first(
        self, client: httpx.AsyncClient
    ) -> None:
        ids = [(await register(client, external_id=i + 1)).json()["id"] for i in range(7)]
        await register_as(client, OTHER_KEY)
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            body = (await client.get("/v1/tasks", params=params)).json()
            seen += [t["id"] for t in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == list(reversed(ids))

    async def test_filters(self, client: httpx.AsyncClient) -> None:
        await register(client)
        await client.post("/v1/tasks", json={"provider": "jimmy", "external_id": JIMMY_ID})
        jimmy = (await client.get("/v1/tasks", params={"provider": "jimmy"})).json()["items"]
        assert [t["provider"] for t in jimmy] == ["jimmy"]
        pending = (await client.get("/v1/tasks", params={"status": "pending"})).json()["items"]
        assert len(pending) == 2
        assert (await client.get("/v1/tasks", params={"status": "succeeded"})).json()["items"] == []

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"status": "done"}, "status"),
            ({"provider": "nope"}, "provider"),
            ({"cursor": "garbage"}, "cursor"),
            ({"cursor": "W10"}, "cursor"),
            ({"cursor": "WyJ4IiwieSJd"}, "cursor"),
        ],
    )
    async def test_bad_query(
        self, client: httpx.AsyncClient, params: dict[str, Any], field: str
    ) -> None:
        error = assert_error(await client.get("/v1/tasks", params=params), 422, "validation_error")
        assert fields_of(error) == [field]

    @pytest.mark.parametrize(
        ("stamp", "status"),
        [
            ("0001-01-01T00:00:00+14:00", 422),
            ("9999-12-31T23:59:59-14:00", 422),
            ("0001-01-01T14:00:00+14:00", 200),
            ("9999-12-31T09:59:59-14:00", 200),
        ],
    )
    async def test_cursor_at_the_ends_of_time(
        self, client: httpx.AsyncClient, stamp: str, status: int
    ) -> None:
        """A cursor's timestamp that overflows in UTC was a 500 from the driver."""
        response = await client.get("/v1/tasks", params={"cursor": cursor_at(stamp)})
        if status == 422:
            assert fields_of(assert_error(response, 422, "validation_error")) == ["cursor"]
        else:
            assert response.status_code == 200, response.text

    async def test_limit_bounds_are_inclusive(self, client: httpx.AsyncClient) -> None:
        for limit in (1, 500):
            assert (await client.get("/v1/tasks", params={"limit": limit})).status_code == 200


class TestCancel:
    async def test_cancel_writes_one_event(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        task = (await register(client)).json()
        response = await client.delete(f"/v1/tasks/{task['id']}")
        assert response.status_code == 200
        cancelled = response.json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["sequence"] == 1
        assert cancelled["next_poll_at"] is None
        assert cancelled["completed_at"] is not None
        again = await client.delete(f"/v1/tasks/{task['id']}")
        assert again.status_code == 200
        assert again.json()["sequence"] == 1
        async with engine.connect() as conn:
            events = (await conn.execute(select(Event.type, Event.sequence, Event.payload))).all()
        assert [(e.type, e.sequence) for e in events] == [("task.cancelled", 1)]
        assert events[0].payload["status"] == "cancelled"
        assert events[0].payload["id"] == task["id"]

    async def test_cancel_terminal_conflicts(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        task = (await register(client)).json()
        async with engine.begin() as conn:
            await conn.execute(
                update(Task).where(Task.id == uuid.UUID(task["id"])).values(status="succeeded")
            )
        error = assert_error(await client.delete(f"/v1/tasks/{task['id']}"), 409, "conflict")
        assert error["details"] == {"status": "succeeded"}

    async def test_cancel_foreign_is_404(self, client: httpx.AsyncClient) -> None:
        foreign = (await register_as(client, OTHER_KEY)).json()
        assert_error(await client.delete(f"/v1/tasks/{foreign['id']}"), 404, "not_found")
        other = await client.get(
            f"/v1/tasks/{foreign['id']}", headers={"Authorization": f"Bearer {OTHER_KEY}"}
        )
        assert other.json()["status"] == "pending"
