"""Shared by the in-process engine tests: a scripted MiniMax behind httpx.MockTransport,
fast engine settings, and polling helpers (conditions, never fixed sleeps)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from tests.helpers import ACME_KEY, ADMIN_KEYS

FAST = {
    "first_poll_delay_s": 0,
    "min_poll_interval_s": 0.05,
    "max_poll_interval_s": 0.2,
    "request_timeout_s": 2,
}


class ScriptedMinimax:
    """A MiniMax that finishes each task after `polls_to_finish` queries."""

    def __init__(self, polls_to_finish: int = 2, final: str = "Success") -> None:
        self.polls_to_finish = polls_to_finish
        self.final = final
        self.queries: dict[str, int] = {}
        self.sent_at: list[float] = []
        self.auth: set[str] = set()
        self.mode: str = "ok"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent_at.append(time.monotonic())
        self.auth.add(request.headers.get("authorization", ""))
        if self.mode == "down":
            return httpx.Response(503, text="upstream down")
        if self.mode == "bad_key":
            return httpx.Response(
                200, json={"base_resp": {"status_code": 1004, "status_msg": "auth"}}
            )
        if request.url.path == "/v1/files/retrieve":
            file_id = request.url.params["file_id"]
            return httpx.Response(
                200,
                json={
                    "file": {
                        "file_id": int(file_id),
                        "download_url": f"https://cdn.example/{file_id}.tar",
                    },
                    "base_resp": {"status_code": 0, "status_msg": "success"},
                },
            )
        task_id = request.url.params["task_id"]
        n = self.queries[task_id] = self.queries.get(task_id, 0) + 1
        status = self.final if n >= self.polls_to_finish else "Processing"
        return httpx.Response(
            200,
            json={
                "task_id": int(task_id),
                "status": status,
                "file_id": int(task_id) + 1,
                "base_resp": {"status_code": 0, "status_msg": "success"},
            },
        )


def _settings(base: Settings, **minimax: Any) -> Settings:
    providers = {
        "minimax": {
            "kind": "minimax_t2a",
            "base_url": "https://mm.test",
            "api_key": "sk-test",
            "rate_limit_per_s": 0,
            **FAST,
            **minimax,
        },
        "jimmy": {"kind": "jimmy_soundclone", "base_url": "https://jm.test", **FAST},
    }
    return Settings(
        database_url=base.database_url,
        api_keys=base.api_keys,
        admin_keys=base.admin_keys,
        providers=providers,
        engine={"tick_s": 0.05, "lease_s": 5, "auth_retry_s": 0.3, "shutdown_grace_s": 1},
    )


def fast_settings(database_url: str) -> Settings:
    """The API under test and the engine share these fast settings."""
    base = Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}],
        admin_keys=ADMIN_KEYS,
    )
    return _settings(base)


async def statuses(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, count(*) FROM tasks GROUP BY status"))
        return {r[0]: int(r[1]) for r in rows}


async def register_many(client: httpx.AsyncClient, n: int) -> None:
    for i in range(n):
        r = await client.post(
            "/v1/tasks", json={"provider": "minimax", "external_id": 7000 + 2 * i}
        )
        assert r.status_code == 201
