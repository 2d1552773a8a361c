"""One provider instance's poll loop (app/polling/loop.py): the instance's health when its
news cannot be shared, the outcome label every poll is counted under, and how far a new
tenant's task queues behind another's backlog while the budget binds. Each test drives a
real PollLoop on the test database, its upstream (or adapter) scripted."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.budget.repository import BudgetRepository
from app.core.config import ProviderKind, Settings
from app.core.db import create_engine, create_sessionmaker
from app.core.metrics import REGISTRY
from app.models import Task
from app.polling import loop as loop_module
from app.polling.claiming import ClaimPlan, plan_claim
from app.polling.loop import PollLoop
from app.providers import base
from app.providers.registry import adapter_for
from app.schedule.forecasts import Forecasts
from tests.helpers import ARCHIVE_OFF, eventually
from tests.netproxy import proxy_to, through

pytestmark = pytest.mark.fast_engine

EXTERNAL_IDS = itertools.count(7001, 2)


def poll_loop(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    transport: httpx.MockTransport | None = None,
    adapter: base.ProviderAdapter | None = None,
    rate_limit_per_s: float = 0.0,
) -> PollLoop:
    minimax = settings.providers["minimax"].model_copy(
        update={"rate_limit_per_s": rate_limit_per_s}
    )
    return PollLoop(
        "minimax",
        minimax,
        settings.engine,
        sessions,
        httpx.AsyncClient(transport=transport),
        owner="test",
        adapter=adapter or adapter_for(minimax.kind),
        forecasts=Forecasts(ttl_s=60),
        archive=ARCHIVE_OFF,
    )


async def poll_a_new_task(loop: PollLoop, client: httpx.AsyncClient) -> None:
    """Register a task (due at once) and run the loop's iterations until it has polled it:
    the first iterations may only wait out a pause the instance is under."""
    created = await client.post(
        "/v1/tasks", json={"provider": "minimax", "external_id": next(EXTERNAL_IDS)}
    )
    assert created.status_code == 201, created.text

    async def started() -> bool:
        await loop.iteration()
        return bool(loop.in_flight)

    await eventually(started, within_s=10)
    await asyncio.gather(*loop.in_flight.values())


async def test_health_news_survives_a_database_that_is_down(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, database_url: str
) -> None:
    """A rate-limit or credential answer arriving while Postgres is unreachable still pauses
    this replica, and the failed shared write is logged, not raised out of the poll (which
    would leave its claim to sit out the lease)."""
    proxy = proxy_to(database_url)
    await proxy.start()
    proxied = create_engine(through(database_url, proxy).render_as_string(hide_password=False))
    answers: Iterator[dict[str, Any] | None] = iter(
        [
            {"base_resp": {"status_code": 1002, "status_msg": "rate limit"}},
            {"base_resp": {"status_code": 1004, "status_msg": "invalid api key"}},
            None,  # a good answer
        ]
    )

    async def upstream(request: httpx.Request) -> httpx.Response:
        # Postgres goes away while the request is out: the answer arrives with it down.
        await proxy.cut()
        body = next(answers) or {
            "task_id": int(request.url.params["task_id"]),
            "status": "Processing",
            "base_resp": {"status_code": 0, "status_msg": "success"},
        }
        return httpx.Response(200, json=body)

    async with create_sessionmaker(engine).begin() as session:
        await BudgetRepository(session).ensure_rows(settings.providers)
    loop = poll_loop(
        settings, create_sessionmaker(proxied), transport=httpx.MockTransport(upstream)
    )
    try:
        await poll_a_new_task(loop, client)
        assert loop.gate.paused_until > time.monotonic()
        assert loop.gate.health.value == "degraded"

        await proxy.start()
        await poll_a_new_task(loop, client)
        assert loop.gate.health.value == "auth_failed"

        # Another replica has shared the credential error (this one's write failed), so the
        # loop reads auth_failed back; a good answer then finds the database down again.
        async with create_sessionmaker(engine).begin() as session:
            await BudgetRepository(session).record_auth_failed("minimax", retry_s=0, message="x")
        await proxy.start()
        await poll_a_new_task(loop, client)
        # The write fails, so the shared state stays as it was.
        assert loop.gate.health.value == "auth_failed"
    finally:
        await loop.client.aclose()
        await proxied.dispose()
        if proxy.server is not None:
            await proxy.cut()


class Raises:
    """An adapter whose every poll ends in one error: what the loop counts is under test."""

    kind = ProviderKind.MINIMAX_T2A
    requests_per_success = 1

    def __init__(self, error: base.ProviderError) -> None:
        self.error = error

    def normalize_id(self, raw: object) -> str:
        return str(raw)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    callbacks = base.CallbackSigning.NONE

    def callback_id(self, body: dict[str, Any], query: Mapping[str, str]) -> str | None:
        return None

    async def poll(self, upstream: base.Upstream, context: base.PollContext) -> base.PollOutcome:
        raise self.error

    def result_files(
        self, result: base.ProviderResult, received_at: datetime
    ) -> list[base.ResultFile]:
        raise AssertionError("a task this adapter polls never succeeds")


@pytest.mark.parametrize(
    ("error", "label"),
    [
        ("RateLimited", "rate_limited"),
        ("CredentialError", "credential_error"),
        ("TaskError", "task_error"),
        ("RequestRefused", "task_error"),  # a TaskError subclass: counted as one
        ("TransientError", "transient_error"),
    ],
)
async def test_poll_outcome_labels_follow_the_error_class(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, error: str, label: str
) -> None:
    def counted() -> float:
        labels = {"provider": "minimax", "outcome": label}
        return REGISTRY.get_sample_value("pollhook_polls_total", labels) or 0.0

    before = counted()
    adapter = Raises(getattr(base, error)("why", code="x"))
    loop = poll_loop(settings, create_sessionmaker(engine), adapter=adapter)
    try:
        await poll_a_new_task(loop, client)
    finally:
        await loop.client.aclose()
    assert counted() - before == 1


async def test_a_new_tenants_task_is_sent_ahead_of_another_tenants_backlog(
    engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While tenant A's backlog keeps the budget busy, a task tenant B registers is sent
    after at most the slots booked when it fell due and one more claim: behind a lead and
    a batch of A's polls (app/polling/claiming.py), not behind A's backlog or a whole claim
    horizon of it (40 slots at 20/s)."""
    rate = 20.0
    backlog = 400
    sent: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        task_id = request.url.params["task_id"]
        sent.append(task_id)
        return httpx.Response(
            200,
            json={
                "task_id": int(task_id),
                "status": "Processing",
                "base_resp": {"status_code": 0, "status_msg": "success"},
            },
        )

    plans: list[ClaimPlan] = []

    def recorded(**kwargs: Any) -> ClaimPlan:
        plan = plan_claim(**kwargs)
        plans.append(plan)
        return plan

    async def add_due(tenant: str, external_ids: list[int]) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                insert(Task).values(
                    [
                        {
                            "tenant": tenant,
                            "provider": "minimax",
                            "external_id": str(external_id),
                            "status": "processing",
                            "deadline_at": text("now() + interval '1 day'"),
                            # A's backlog is long overdue, longer than anything of B's.
                            "next_poll_at": text(
                                "now() - interval '1 hour'" if tenant == "a" else "now()"
                            ),
                        }
                        for external_id in external_ids
                    ]
                )
            )

    a_ids = list(range(100_000, 100_000 + backlog))
    await add_due("a", a_ids)
    monkeypatch.setattr(loop_module, "plan_claim", recorded)
    loop = poll_loop(
        settings,
        create_sessionmaker(engine),
        transport=httpx.MockTransport(upstream),
        rate_limit_per_s=rate,
    )
    running = asyncio.create_task(loop.run())
    try:

        async def a_is_being_polled() -> bool:
            return len(sent) >= 10

        await eventually(a_is_being_polled)
        sent_before = len(sent)
        await add_due("b", [999_999])

        async def b_was_sent() -> bool:
            return "999999" in sent

        await eventually(b_was_sent)
    finally:
        await loop.drain(grace_s=0)
        await running
        await loop.client.aclose()

    a_ahead_of_b = sent.index("999999") - sent_before
    # The budget was booked ahead all along: the loop waited for its lead between claims.
    assert any(plan.batch == 0 and plan.lead_s > 0 for plan in plans)
    # Ahead of B: the slots booked when it was registered (a lead and a top-up at most,
    # the last slot rounded up), a claim already under way, and A's turn in B's own batch.
    spacing = 1.025 / rate
    topped_up = max(plan.lead_s for plan in plans) + settings.engine.claim_batch_s
    batch = max(plan.batch for plan in plans)
    assert a_ahead_of_b <= topped_up / spacing + 1 + batch + 1
    # ... and nowhere near A's backlog, most of which was still waiting.
    assert sent.index("999999") < backlog / 2
