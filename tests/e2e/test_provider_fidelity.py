"""What pollhook takes from a provider, checked end to end: real `pollhook worker`
processes poll the sandbox over real HTTP and keep their state in the suite's Postgres."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.providers.base import RESULT_NOT_READY_POLLS
from tests.e2e.conftest import Sandbox, Worker
from tests.e2e.test_engine_e2e import eventually, register


def jimmy_env(**fields: Any) -> dict[str, str]:
    return {f"POLLHOOK_PROVIDERS__JIMMY__{name.upper()}": str(v) for name, v in fields.items()}


async def task_row(engine: AsyncEngine, task_id: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT status, error, checkpoint, polls FROM tasks WHERE id = :id"),
                {"id": task_id},
            )
        ).one()


async def test_after_success_only_the_file_retrieve_is_retried_even_across_restarts(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    """MiniMax said Success, then its File Retrieve answered 2013 (the file not ready yet):
    the task does not fail, and no status query follows the terminal answer, not even
    from a worker started after the first one stopped."""
    upstream = sandbox.task(provider="minimax", duration_s=0, file_not_ready_retrieves=3)
    task_id = await register(client, "minimax", upstream["id"])

    first = start_worker(min_poll_interval_s=0.3, max_poll_interval_s=0.5)

    async def retrieved_once() -> bool:
        return int(sandbox.info("minimax", upstream["id"])["retrieves"]) >= 1

    await eventually(retrieved_once, within_s=20, what="the first File Retrieve")
    assert first.stop() == 0
    stopped = await task_row(engine, task_id)
    assert stopped.status == "pending"
    assert stopped.checkpoint["file_id"] == str(upstream["file_id"])

    start_worker(min_poll_interval_s=0.3, max_poll_interval_s=0.5)

    async def succeeded() -> bool:
        return str((await task_row(engine, task_id)).status) == "succeeded"

    await eventually(succeeded, within_s=30, what="the task to succeed")
    seen = sandbox.info("minimax", upstream["id"])
    assert seen["done_polls"] == 1  # the one status query that said Success
    assert seen["retrieves"] == 4  # 3 answered 2013, the 4th gave the file
    task = (await client.get(f"/v1/tasks/{task_id}")).json()
    assert task["result"]["kind"] == "minimax_t2a"
    assert task["result"]["file_id"] == str(upstream["file_id"])
    assert task["result"]["filename"] == f"{upstream['id']}.tar"
    assert (await task_row(engine, task_id)).checkpoint is None  # cleared once terminal


@pytest.mark.parametrize("model", ["clone", "audio"])
async def test_a_jimmy_task_completed_without_audio_fails_after_the_bound(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
    model: str,
) -> None:
    """`completed` without audioUrl is not success (a clone's modelId alone used to be
    enough); after RESULT_NOT_READY_POLLS such answers the task fails as incomplete_result
    instead of polling on until its deadline."""
    upstream = sandbox.task(provider="jimmy", duration_s=0, model=model, incomplete_queries=10**3)
    task_id = await register(client, "jimmy", upstream["id"], deadline_s=120)
    start_worker(extra_env=jimmy_env(min_poll_interval_s=0.05, max_poll_interval_s=0.1))

    async def failed() -> bool:
        return str((await task_row(engine, task_id)).status) == "failed"

    await eventually(failed, within_s=30, what="the task to fail")
    task = (await client.get(f"/v1/tasks/{task_id}")).json()
    assert task["result"] is None
    assert task["error"]["code"] == "incomplete_result"
    assert "completed without audioUrl" in task["error"]["message"]
    assert sandbox.info("jimmy", upstream["id"])["done_polls"] == RESULT_NOT_READY_POLLS


async def test_a_jimmy_result_that_comes_late_is_waited_for(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    upstream = sandbox.task(provider="jimmy", duration_s=0, model="clone", incomplete_queries=2)
    task_id = await register(client, "jimmy", upstream["id"])
    start_worker(extra_env=jimmy_env(min_poll_interval_s=0.05, max_poll_interval_s=0.1))

    async def succeeded() -> bool:
        return str((await task_row(engine, task_id)).status) == "succeeded"

    await eventually(succeeded, within_s=30, what="the task to succeed")
    result = (await client.get(f"/v1/tasks/{task_id}")).json()["result"]
    assert result["kind"] == "jimmy_soundclone"
    assert urlsplit(result["audio_url"]).path.endswith(".mp3")
    assert result["model_id"].startswith("model_")
    assert sandbox.info("jimmy", upstream["id"])["done_polls"] == 3


async def test_jimmy_queries_are_never_under_5_s_apart(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    """Jimmy's documented cadence, one query every 5-10 s, as the sandbox saw it: with the
    fixed schedule every planned gap is 5 s, the one jitter used to cut short half the time;
    the not-ready answer exercises error backoff too."""
    scripts: list[dict[str, Any]] = [
        {"duration_s": 16},
        {"duration_s": 16, "incomplete_queries": 1},
        {
            "duration_s": 11,
            "outcome": "failed",
            "error_message": "source audio shorter than 15 s",
            "message_in_msg": True,
        },
    ]
    upstream = [sandbox.task(provider="jimmy", **script) for script in scripts]
    ids = [await register(client, "jimmy", u["id"]) for u in upstream]
    start_worker(
        extra_env=jimmy_env(
            schedule="fixed", first_poll_delay_s=0, min_poll_interval_s=5, max_poll_interval_s=10
        )
    )

    async def all_done() -> bool:
        rows = [await task_row(engine, task_id) for task_id in ids]
        return all(row.status in ("succeeded", "failed") for row in rows)

    await eventually(all_done, within_s=90, what="every Jimmy task to end")
    gaps = []
    for u in upstream:
        queries = sandbox.info("jimmy", u["id"])["queries"]
        gaps += [later - earlier for earlier, later in itertools.pairwise(queries)]
    assert len(gaps) >= 8
    assert min(gaps) >= 5.0, sorted(gaps)
    failed = (await client.get(f"/v1/tasks/{ids[2]}")).json()
    assert failed["error"] == {"code": "failed", "message": "source audio shorter than 15 s"}


async def test_a_jimmy_id_that_would_leave_the_path_is_refused_and_never_sent(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    sandbox: Sandbox,
    start_worker: Callable[..., Worker],
) -> None:
    """`..` would have sent the keyed GET to /api/open-api/v1 and taken that answer for the
    task's. Registration refuses it; one stored before that fails unsent."""
    for bad in (".", "..", "a/b", "audio_\u202e", "x\u2028", "x\u0085"):
        refused = await client.post("/v1/tasks", json={"provider": "jimmy", "external_id": bad})
        assert refused.status_code == 422, bad
        details = refused.json()["error"]["details"]
        assert [d["field"] for d in details] == ["external_id"]
    async with engine.begin() as conn:
        stored = await conn.execute(
            text(
                "INSERT INTO tasks (id, tenant, provider, external_id, status, deadline_at, "
                "next_poll_at) SELECT gen_random_uuid(), 'acme', 'jimmy', x, 'pending', "
                "now() + interval '1 hour', now() FROM unnest(ARRAY['.', '..']) AS x "
                "RETURNING id"
            )
        )
        ids = [str(row.id) for row in stored]
    start_worker()

    async def failed() -> bool:
        rows = [await task_row(engine, task_id) for task_id in ids]
        return all(row.status == "failed" for row in rows)

    await eventually(failed, within_s=20, what="both tasks to fail")
    for task_id in ids:
        row = await task_row(engine, task_id)
        assert row.error["code"] == "invalid_external_id"
        assert row.polls == 0
    assert sum(s["requests"] for s in sandbox.stats("jimmy").values()) == 0
