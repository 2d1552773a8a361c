"""One provider instance's poll loop (app/polling/loop.py): the instance's health when its
news cannot be shared, and the outcome label every poll is counted under."""

from __future__ import annotations

import time

import httpx
import pytest

from app.core.config import Settings

pytestmark = pytest.mark.fast_engine


async def test_health_news_survives_a_database_that_is_down(settings: Settings) -> None:
    """A rate-limit or credential answer arriving while Postgres is unreachable still pauses
    this replica, and the failed shared write is logged, not raised out of the poll (which
    would leave its claim to sit out the lease)."""
    from app.core.db import create_engine, create_sessionmaker
    from app.polling.loop import PollLoop
    from app.providers.base import CredentialError, RateLimited
    from app.providers.registry import adapter_for
    from app.schedule.forecasts import Forecasts

    dead = create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none")  # nothing listens
    loop = PollLoop(
        "minimax",
        settings.providers["minimax"],
        settings.engine,
        create_sessionmaker(dead),
        httpx.AsyncClient(),
        owner="test",
        adapter=adapter_for(settings.providers["minimax"].kind),
        forecasts=Forecasts(ttl_s=60),
    )
    try:
        await loop._on_rate_limited(RateLimited("slow down", retry_after_s=2, code="1002"))
        assert loop.gate.paused_until > time.monotonic()
        assert loop.gate.health.value == "degraded"
        await loop._on_credential_error(CredentialError("bad key", code="1004"))
        assert loop.gate.health.value == "auth_failed"
        await loop._mark_healthy()  # the write fails, so the shared state stays as it was
        assert loop.gate.health.value == "auth_failed"
    finally:
        await loop.client.aclose()
        await dead.dispose()


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
def test_poll_outcome_labels_follow_the_error_class(error: str, label: str) -> None:
    from app.models import TaskStatus
    from app.polling.loop import _outcome
    from app.polling.outcomes import PollResult
    from app.polling.service import Applied
    from app.providers import base

    result = PollResult(error=getattr(base, error)("why", code="x"))
    assert _outcome(result, Applied("t", TaskStatus.FAILED, True)) == label
