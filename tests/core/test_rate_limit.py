"""The per-tenant API rate limit: the GCRA itself on an injected clock, then through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.rate_limit import TenantRateLimiter, retry_after_header
from app.main import create_app
from tests.helpers import ACME_KEY, OTHER_KEY, api_client, app_client, assert_error


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TestGcra:
    @pytest.mark.parametrize(
        ("rate", "burst", "script", "expected"),
        [
            # (seconds since start of each request) -> admitted (0) or the wait returned
            (1.0, 1, [0, 0, 0.5, 1.0, 1.0], [0, 1.0, 0.5, 0, 1.0]),
            (1.0, 3, [0, 0, 0, 0], [0, 0, 0, 1.0]),
            (2.0, 2, [0, 0, 0, 0.25, 0.5, 0.5], [0, 0, 0.5, 0.25, 0, 0.5]),
            # A refusal consumes nothing: the wait shrinks with time, it does not grow.
            (10.0, 1, [0, 0.01, 0.02, 0.05, 0.1], [0, 0.09, 0.08, 0.05, 0]),
            # A long pause earns the full burst back, never more.
            (1.0, 2, [0, 0, 100, 100, 100], [0, 0, 0, 0, 1.0]),
        ],
    )
    def test_table(
        self, rate: float, burst: int, script: list[float], expected: list[float]
    ) -> None:
        clock = FakeClock()
        start = clock.now
        limiter = TenantRateLimiter(rate, burst, clock=clock)
        waits = []
        for at in script:
            clock.now = start + at
            waits.append(limiter.acquire("t"))
        assert waits == pytest.approx(expected)

    @pytest.mark.parametrize(
        ("rate", "burst", "script", "expected"),
        [
            # (seconds since start, cost) of each request -> admitted (0) or the wait
            (1.0, 4, [(0, 3), (0, 1), (0, 1)], [0, 0, 1.0]),
            # A costly request needs room for all of it, and waits for it.
            (1.0, 4, [(0, 2), (0, 3), (1, 3), (1, 1)], [0, 1.0, 0, 1.0]),
            # A cost over the burst counts as the burst: it passes once the bucket is full.
            (1.0, 3, [(0, 1), (0, 50), (1, 50), (1, 1)], [0, 1.0, 0, 1.0]),
            # A refusal consumes nothing.
            (2.0, 2, [(0, 2), (0.25, 2), (1.0, 2)], [0, 0.75, 0]),
        ],
    )
    def test_costs_table(
        self,
        rate: float,
        burst: int,
        script: list[tuple[float, int]],
        expected: list[float],
    ) -> None:
        clock = FakeClock()
        start = clock.now
        limiter = TenantRateLimiter(rate, burst, clock=clock)
        waits = []
        for at, cost in script:
            clock.now = start + at
            waits.append(limiter.acquire("t", cost))
        assert waits == pytest.approx(expected)

    def test_keys_are_independent(self) -> None:
        limiter = TenantRateLimiter(1.0, 2, clock=FakeClock())
        assert [limiter.acquire("a") for _ in range(3)] == [0, 0, pytest.approx(1.0)]
        assert [limiter.acquire("b") for _ in range(2)] == [0, 0]

    def test_zero_rate_disables(self) -> None:
        limiter = TenantRateLimiter(0, 1, clock=FakeClock())
        assert not limiter.enabled
        assert all(limiter.acquire("t") == 0 for _ in range(10_000))
        assert len(limiter) == 0

    def test_idle_keys_are_evicted(self) -> None:
        clock = FakeClock()
        limiter = TenantRateLimiter(10.0, 5, clock=clock)
        for n in range(1000):
            limiter.acquire(f"tenant-{n}")
        assert len(limiter) == 1000
        clock.advance(0.11)  # every key's TAT (now + one interval) has passed
        limiter.acquire("fresh")
        assert len(limiter) == 1

    def test_memory_is_capped_even_when_every_key_is_live(self) -> None:
        limiter = TenantRateLimiter(1.0, 5, clock=FakeClock(), max_keys=100)
        for n in range(1000):
            limiter.acquire(f"tenant-{n}")
        assert len(limiter) == 100

    def test_eviction_forgets_nothing_that_matters(self) -> None:
        """An evicted key's TAT had passed, so it starts exactly where it would have."""
        clock = FakeClock()
        limiter = TenantRateLimiter(1.0, 2, clock=clock)
        limiter.acquire("a")
        limiter.acquire("a")
        assert limiter.acquire("a") == pytest.approx(1.0)
        clock.advance(2.5)
        limiter.acquire("b")  # evicts "a"
        assert len(limiter) == 1
        assert [limiter.acquire("a") for _ in range(3)] == [0, 0, pytest.approx(1.0)]

    @pytest.mark.parametrize(
        ("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (59.2, 60)]
    )
    def test_retry_after_is_whole_seconds_at_least_one(self, wait: float, header: int) -> None:
        assert retry_after_header(wait) == header

    def test_invalid_arguments(self) -> None:
        with pytest.raises(ValueError, match="burst"):
            TenantRateLimiter(1.0, 0)


ACME = {"Authorization": f"Bearer {ACME_KEY}"}
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


@pytest_asyncio.fixture
async def limited(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeClock]]:
    """The API with a limit of 1 request/s and a burst of 3, on a clock the test moves."""
    custom = settings.model_copy(update={"api_rate_limit_per_s": 1.0, "api_rate_limit_burst": 3})
    app = create_app(custom, engine=engine)
    clock = FakeClock()
    # The same limiter the composition root builds from those settings, on the fake clock.
    app.state.pollhook.rate_limiter = TenantRateLimiter(
        custom.api_rate_limit_per_s, custom.api_rate_limit_burst, clock=clock
    )
    async with app_client(app, key=None) as http:
        yield http, clock


class TestApiRateLimit:
    async def test_burst_then_429_then_recovery(
        self, limited: tuple[httpx.AsyncClient, FakeClock]
    ) -> None:
        http, clock = limited
        for _ in range(3):
            assert (await http.get("/v1/tasks", headers=ACME)).status_code == 200
        refused = await http.post(
            "/v1/tasks", json={"provider": "minimax", "external_id": 5}, headers=ACME
        )
        error = assert_error(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "1"
        assert error["details"] == {"retry_after_s": 1}
        assert (await http.get("/v1/tasks", headers=ACME)).status_code == 429

        # Another tenant has its own budget; health and metrics are never limited; an
        # unknown key is still told it is unknown.
        for _ in range(3):
            assert (await http.get("/v1/providers", headers=OTHER)).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await http.get(path)).status_code == 200
        assert_error(await http.get("/v1/tasks"), 401, "unauthorized")
        assert_error(
            await http.get("/v1/tasks", headers={"Authorization": "Bearer nope-nope"}),
            401,
            "unauthorized",
        )

        clock.advance(0.9)
        assert (await http.get("/v1/tasks", headers=ACME)).status_code == 429
        clock.advance(float(refused.headers["retry-after"]) - 0.9)
        assert (await http.get("/v1/tasks", headers=ACME)).status_code == 200
        assert (await http.get("/v1/tasks", headers=ACME)).status_code == 429

    async def test_refused_writes_change_nothing(
        self, limited: tuple[httpx.AsyncClient, FakeClock]
    ) -> None:
        http, clock = limited
        codes = [
            (
                await http.post(
                    "/v1/tasks", json={"provider": "minimax", "external_id": 100 + n}, headers=ACME
                )
            ).status_code
            for n in range(5)
        ]
        assert codes == [201, 201, 201, 429, 429]
        clock.advance(1)
        listed = (await http.get("/v1/tasks", headers=ACME)).json()["items"]
        assert sorted(t["external_id"] for t in listed) == ["100", "101", "102"]

    async def test_zero_disables(self, settings: Settings, engine: AsyncEngine) -> None:
        custom = settings.model_copy(update={"api_rate_limit_per_s": 0, "api_rate_limit_burst": 1})
        async with api_client(custom, engine) as http:
            for _ in range(50):
                assert (await http.get("/v1/signing-secret")).status_code == 200

    def test_settings_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("POLLHOOK_API_RATE_LIMIT_PER_S", "2.5")
        monkeypatch.setenv("POLLHOOK_API_RATE_LIMIT_BURST", "7")
        loaded = Settings()
        assert (loaded.api_rate_limit_per_s, loaded.api_rate_limit_burst) == (2.5, 7)
        monkeypatch.delenv("POLLHOOK_API_RATE_LIMIT_PER_S")
        monkeypatch.delenv("POLLHOOK_API_RATE_LIMIT_BURST")
        assert (Settings().api_rate_limit_per_s, Settings().api_rate_limit_burst) == (100.0, 200)
