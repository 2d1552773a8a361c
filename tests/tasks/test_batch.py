"""POST /v1/tasks/batch on a real Postgres: per-item outcomes in order, the errors the single
route would give, idempotency within and across batches, concurrency, the size limits, the
rate limit's weight, tenant isolation, and the engine woken by a batch."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.main import create_app
from app.models import Task
from app.tasks.endpoints import BATCH_TASKS_PER_REQUEST
from app.tasks.schemas import MAX_BATCH_TASKS
from tests.helpers import (
    ACME_KEY,
    DISCARD_URL,
    OTHER_KEY,
    app_client,
    assert_error,
    eventually,
    fields_of,
)
from tests.worker_support import ScriptedMinimax, statuses

JIMMY_ID = "audio_16b635ba-5889-4fa5-bbcc-bf67a38c353a"


def minimax(external_id: int | str, **fields: Any) -> dict[str, Any]:
    return {"provider": "minimax", "external_id": external_id, **fields}


async def batch(
    client: httpx.AsyncClient, tasks: list[dict[str, Any]], key: str = ACME_KEY
) -> list[dict[str, Any]]:
    response = await client.post(
        "/v1/tasks/batch", json={"tasks": tasks}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert len(results) == len(tasks)
    return results


async def count_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(Task)) or 0)


# Bodies the schema accepts but registration refuses: the batch reports each as the item's
# error, exactly as POST /v1/tasks answers it (the field in the last column).
REFUSED_ITEMS = [
    (minimax(""), "external_id"),
    (minimax("12ab"), "external_id"),
    (minimax(" 12"), "external_id"),
    (minimax(-5), "external_id"),
    (minimax(0), "external_id"),
    (minimax(2**63), "external_id"),
    (minimax(str(2**63)), "external_id"),
    ({"provider": "jimmy", "external_id": ""}, "external_id"),
    ({"provider": "jimmy", "external_id": "x" * 257}, "external_id"),
    ({"provider": "jimmy", "external_id": 12}, "external_id"),
    ({"provider": "jimmy", "external_id": "a\nb"}, "external_id"),
    ({"provider": "nope", "external_id": "1"}, "provider"),
    (minimax(1, callback_url="http://10.0.0.7/hook"), "callback_url"),
    (minimax(1, callback_url="http://169.254.169.254/"), "callback_url"),
    (minimax(1, callback_url="http://localhost:80/x"), "callback_url"),
    (minimax(1, metadata={"x": "y" * 17000}), "metadata"),
]


class TestItemErrors:
    @pytest.mark.parametrize(("body", "field"), REFUSED_ITEMS)
    async def test_an_item_gets_the_error_the_single_route_answers(
        self, client: httpx.AsyncClient, engine: AsyncEngine, body: dict[str, Any], field: str
    ) -> None:
        single = assert_error(await client.post("/v1/tasks", json=body), 422, "validation_error")
        assert fields_of(single) == [field]

        results = await batch(client, [minimax(7), body, minimax(8)])

        assert [r["status"] for r in results] == ["created", "error", "created"]
        assert results[1]["task"] is None
        assert results[1]["error"] == {**single, "details": single.get("details")}
        assert await count_rows(engine) == 2

    async def test_every_item_refused_writes_nothing(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        results = await batch(client, [body for body, _ in REFUSED_ITEMS])
        assert {r["status"] for r in results} == {"error"}
        assert [fields_of(r["error"]) for r in results] == [[f] for _, f in REFUSED_ITEMS]
        assert await count_rows(engine) == 0

    async def test_many_distinct_refused_callback_hosts_each_get_their_error(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        """Every distinct callback host is checked (side by side, with no database
        connection held meanwhile), and each item gets its own answer."""
        refused = [minimax(100 + n, callback_url=f"http://10.0.{n}.7/hook") for n in range(40)]
        results = await batch(client, [minimax(99), *refused, minimax(98)])
        assert [r["status"] for r in results] == ["created"] + ["error"] * 40 + ["created"]
        assert {tuple(fields_of(r["error"])) for r in results[1:-1]} == {("callback_url",)}
        assert await count_rows(engine) == 2

    async def test_other_parameters_than_the_registered_ones_conflict(
        self, client: httpx.AsyncClient
    ) -> None:
        first = (await client.post("/v1/tasks", json=minimax(5, deadline_s=60))).json()
        single = assert_error(
            await client.post("/v1/tasks", json=minimax(5, deadline_s=61)), 409, "conflict"
        )

        results = await batch(client, [minimax(5, deadline_s=61), minimax(5, deadline_s=60)])

        assert results[0] == {"status": "error", "task": None, "error": single}
        assert single["details"] == {"task_id": first["id"], "fields": ["deadline_s"]}
        assert results[1]["status"] == "existing"
        assert results[1]["task"] == first


class TestBatch:
    async def test_created_existing_and_errors_in_order(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        before = (await client.post("/v1/tasks", json=minimax(2, metadata={"a": 1}))).json()
        tasks = [
            minimax(1, metadata={"n": 1}, callback_url=f"{DISCARD_URL}/h", size_hint=100),
            minimax(2, metadata={"a": 1}),
            {"provider": "nope", "external_id": "3"},
            {"provider": "jimmy", "external_id": JIMMY_ID, "deadline_s": 120},
        ]

        results = await batch(client, tasks)

        assert [r["status"] for r in results] == ["created", "existing", "error", "created"]
        assert results[1]["task"] == before
        created = results[0]["task"]
        assert created == (await client.get(f"/v1/tasks/{created['id']}")).json()
        assert created["external_id"] == "1"
        assert created["metadata"] == {"n": 1}
        assert created["callback_url"] == f"{DISCARD_URL}/h"
        assert created["size_hint"] == 100
        assert created["status"] == "pending"
        assert created["next_poll_at"] > created["created_at"]
        jimmy = results[3]["task"]
        assert jimmy["external_id"] == JIMMY_ID
        assert _seconds_between(jimmy["created_at"], jimmy["deadline_at"]) == 120
        assert results[2]["error"]["code"] == "validation_error"
        assert await count_rows(engine) == 3

    async def test_a_batch_registers_as_single_registrations_do(
        self, client: httpx.AsyncClient
    ) -> None:
        """The same schedule and the same answer, field by field, as POST /v1/tasks."""
        single = (await client.post("/v1/tasks", json=minimax(1, metadata={"k": "v"}))).json()
        item = (await batch(client, [minimax(2, metadata={"k": "v"})]))[0]["task"]
        for name in (
            "id",
            "external_id",
            "created_at",
            "updated_at",
            "next_poll_at",
            "deadline_at",
        ):
            single.pop(name)
            item.pop(name)
        assert item == single

    async def test_a_repeated_batch_is_all_existing(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        tasks = [minimax(i) for i in range(1, 51)]
        first = await batch(client, tasks)
        again = await batch(client, tasks)
        assert {r["status"] for r in first} == {"created"}
        assert {r["status"] for r in again} == {"existing"}
        assert [r["task"] for r in again] == [r["task"] for r in first]
        assert await count_rows(engine) == 50

    async def test_duplicates_within_a_batch_make_one_row(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        # 9 and "9" are one MiniMax id; the third item differs in its parameters.
        results = await batch(client, [minimax(9), minimax("9"), minimax(9, size_hint=5)])
        assert [r["status"] for r in results] == ["created", "existing", "error"]
        assert results[0]["task"] == results[1]["task"]
        assert results[2]["error"]["code"] == "conflict"
        assert results[2]["error"]["details"]["fields"] == ["size_hint"]
        assert await count_rows(engine) == 1

    async def test_overlapping_batches_at_once_make_one_row_each(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        """Every id is created by exactly one batch, whatever the interleaving (and the
        batches, writing in the same order, never deadlock)."""
        ids = list(range(1, 301))
        orders = [ids, ids[::-1], ids[100:] + ids[:100], ids[::2] + ids[1::2]]
        answers = await asyncio.gather(*(batch(client, [minimax(i) for i in o]) for o in orders))

        by_id: dict[str, set[str]] = {}
        for order, results in zip(orders, answers, strict=True):
            for external_id, result in zip(order, results, strict=True):
                assert result["status"] in ("created", "existing"), result
                assert result["task"]["external_id"] == str(external_id)
                by_id.setdefault(result["task"]["id"], set()).add(result["status"])
        created = [r for results in answers for r in results if r["status"] == "created"]
        assert len(created) == len(ids)
        assert len(by_id) == len(ids)
        assert await count_rows(engine) == len(ids)

    async def test_a_batch_alongside_single_registrations_of_its_ids(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        ids = list(range(1, 41))
        singles = [client.post("/v1/tasks", json=minimax(i)) for i in ids]
        answers = await asyncio.gather(batch(client, [minimax(i) for i in ids]), *singles)
        batched, responses = answers[0], answers[1:]
        assert isinstance(batched, list)
        created = sum(r["status"] == "created" for r in batched) + sum(
            r.status_code == 201 for r in responses if isinstance(r, httpx.Response)
        )
        assert created == len(ids)
        assert await count_rows(engine) == len(ids)

    async def test_tenants_are_isolated(self, client: httpx.AsyncClient) -> None:
        mine = await batch(client, [minimax(1), minimax(2)])
        theirs = await batch(client, [minimax(2), minimax(1), minimax(3)], key=OTHER_KEY)
        assert [r["status"] for r in theirs] == ["created"] * 3
        assert not {r["task"]["id"] for r in mine} & {r["task"]["id"] for r in theirs}
        listed = (await client.get("/v1/tasks")).json()["items"]
        assert sorted(t["external_id"] for t in listed) == ["1", "2"]


class TestLimits:
    async def test_the_largest_batch_passes(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        tasks = [minimax(i) for i in range(1, MAX_BATCH_TASKS + 1)]
        results = await batch(client, tasks)
        assert {r["status"] for r in results} == {"created"}
        assert await count_rows(engine) == MAX_BATCH_TASKS

    async def test_a_batch_body_has_a_limit_of_its_own(
        self, settings: Settings, engine: AsyncEngine
    ) -> None:
        """Far over the 64 KiB of any other body, and still bounded (413)."""
        tasks = [minimax(i, metadata={"text": "x" * 200}) for i in range(1, MAX_BATCH_TASKS + 1)]
        body = json.dumps({"tasks": tasks}).encode()
        assert settings.max_body_bytes < len(body) < settings.max_batch_body_bytes
        headers = {"Content-Type": "application/json"}
        async with app_client(create_app(settings, engine=engine)) as http:
            passed = await http.post("/v1/tasks/batch", content=body, headers=headers)
            assert passed.status_code == 200, passed.text
        smaller = settings.model_copy(update={"max_batch_body_bytes": len(body) - 1})
        async with app_client(create_app(smaller, engine=engine)) as http:
            refused = await http.post("/v1/tasks/batch", content=body, headers=headers)
            assert_error(refused, 413, "payload_too_large")
        assert await count_rows(engine) == MAX_BATCH_TASKS

    @pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
    async def test_other_methods_on_the_batch_route_are_405(
        self, client: httpx.AsyncClient, method: str
    ) -> None:
        """Not a task id `batch` (422): the batch route, which takes POST only."""
        response = await client.request(method, "/v1/tasks/batch")
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["Allow"] == "POST"

    @pytest.mark.parametrize("size", [0, MAX_BATCH_TASKS + 1])
    async def test_an_empty_or_oversized_batch_is_refused_whole(
        self, client: httpx.AsyncClient, engine: AsyncEngine, size: int
    ) -> None:
        tasks = [minimax(i) for i in range(1, size + 1)]
        response = await client.post("/v1/tasks/batch", json={"tasks": tasks})
        error = assert_error(response, 422, "validation_error")
        assert fields_of(error) == ["tasks"]
        assert str(MAX_BATCH_TASKS) in error["details"][0]["message"] or size == 0
        assert await count_rows(engine) == 0

    @pytest.mark.parametrize(
        ("tasks", "field"),
        [
            ([minimax(1), minimax(2, deadline_s=0)], "tasks.1.deadline_s"),
            ([minimax(1, surprise=True)], "tasks.0.surprise"),
            ([minimax(1), {"external_id": 2}], "tasks.1.provider"),
            ([minimax(1, callback_url="ftp://x.example/")], "tasks.0.callback_url"),
        ],
    )
    async def test_an_item_off_the_schema_refuses_the_batch_naming_it(
        self, client: httpx.AsyncClient, engine: AsyncEngine, tasks: list[Any], field: str
    ) -> None:
        response = await client.post("/v1/tasks/batch", json={"tasks": tasks})
        error = assert_error(response, 422, "validation_error")
        assert field in fields_of(error), error
        assert await count_rows(engine) == 0

    async def test_a_batch_counts_against_the_rate_limit_by_its_size(
        self, settings: Settings, engine: AsyncEngine
    ) -> None:
        """A burst of 2 * BATCH_TASKS_PER_REQUEST requests admits one batch of that many
        tasks times two, then refuses the next with Retry-After; a single request of
        another tenant still passes."""
        limited = settings.model_copy(
            update={"api_rate_limit_per_s": 0.01, "api_rate_limit_burst": 4}
        )
        size = 2 * BATCH_TASKS_PER_REQUEST
        async with app_client(create_app(limited, engine=engine)) as http:
            first = await http.post(
                "/v1/tasks/batch", json={"tasks": [minimax(i) for i in range(1, size + 1)]}
            )
            assert first.status_code == 200, first.text
            second = await http.post(
                "/v1/tasks/batch", json={"tasks": [minimax(i) for i in range(1, size + 1)]}
            )
            assert second.status_code == 200, second.text
            refused = await http.post("/v1/tasks/batch", json={"tasks": [minimax(99)]})
            assert_error(refused, 429, "rate_limited")
            assert int(refused.headers["Retry-After"]) >= 1
            other = await http.post(
                "/v1/tasks",
                json=minimax(99),
                headers={"Authorization": f"Bearer {OTHER_KEY}"},
            )
            assert other.status_code == 201
        assert await count_rows(engine) == size + 1


async def test_a_registration_is_one_statement_in_no_transaction(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Created, existing and a batch: one statement each, on an autocommit connection (no
    BEGIN or COMMIT round trips around it)."""
    sent: list[tuple[str, bool]] = []

    def record(conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        sent.append((statement.split()[0], bool(dbapi.autocommit)))

    async with app_client(create_app(settings, engine=engine)) as http:
        # The first registration of a process also loads the learned forecast.
        assert (await http.post("/v1/tasks", json=minimax(1))).status_code == 201
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            assert (await http.post("/v1/tasks", json=minimax(2))).status_code == 201
            assert (await http.post("/v1/tasks", json=minimax(2))).status_code == 200
            assert len(await batch(http, [minimax(i) for i in range(2, 12)])) == 10
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert sent == [("WITH", True)] * 3


@pytest.mark.fast_engine
async def test_a_batch_wakes_the_engine_without_a_tick(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    """With ticks a minute apart, only the trigger's NOTIFY gets a fresh batch polled."""
    slow_ticks = settings.model_copy(
        update={"engine": settings.engine.model_copy(update={"tick_s": 60.0})}
    )
    upstream = ScriptedMinimax(polls_to_finish=1)
    await run_engine(slow_ticks, httpx.MockTransport(upstream))
    await asyncio.sleep(0.3)  # the loop has found nothing due and gone to sleep
    results = await batch(client, [minimax(7000 + 2 * i) for i in range(20)])
    assert {r["status"] for r in results} == {"created"}

    async def done() -> bool:
        return (await statuses(engine)) == {"succeeded": 20}

    await eventually(done, within_s=10)
    assert len(upstream.queries) == 20


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
