"""POST /v1/providers/{name}/pause and /resume: an operator stops an instance's polls in every
replica and starts them again; tenants and read-only keys change nothing; both are audited."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.budget.capacity import poll_lease_s
from app.core.config import Settings
from tests.helpers import OPS_KEY, READER_KEY, assert_error, eventually
from tests.worker_support import ScriptedMinimax, _settings, register_many, statuses

pytestmark = pytest.mark.fast_engine

OPS = {"Authorization": f"Bearer {OPS_KEY}"}
READER = {"Authorization": f"Bearer {READER_KEY}"}


async def _paused_until(engine: AsyncEngine, name: str) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(
            text("SELECT paused_until FROM provider_state WHERE name = :name"), {"name": name}
        )


async def _audit(client: httpx.AsyncClient) -> list[tuple[str, str, str, str | None]]:
    items = (await client.get("/v1/audit", headers=OPS)).json()["items"]
    return [(e["actor"], e["action"], e["target"], e["tenant"]) for e in reversed(items)]


async def test_pause_stops_polling_and_resume_restarts_it(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, run_engine: Any
) -> None:
    upstream = ScriptedMinimax(polls_to_finish=1)
    await run_engine(_settings(settings), httpx.MockTransport(upstream))

    paused = await client.post("/v1/providers/minimax/pause", json={"for_s": 600}, headers=OPS)
    assert paused.status_code == 200, paused.text
    assert paused.json()["name"] == "minimax"
    assert paused.json()["paused_until"] is not None
    await register_many(client, 5)
    # Several of the loop's looks at the shared state (it sleeps at most 5 s while paused,
    # and 0.05 s between claims otherwise): nothing is sent.
    await asyncio.sleep(1.0)
    assert upstream.queries == {}
    assert await statuses(engine) == {"pending": 5}

    resumed = await client.post("/v1/providers/minimax/resume", headers=OPS)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused_until"] is None

    async def all_done() -> bool:
        return (await statuses(engine)) == {"succeeded": 5}

    await eventually(all_done)
    assert await _audit(client) == [
        ("operator:ops", "provider.pause", "provider:minimax", None),
        ("operator:ops", "provider.resume", "provider:minimax", None),
    ]
    [entry] = [
        e
        for e in (await client.get("/v1/audit", headers=OPS)).json()["items"]
        if e["action"] == "provider.pause"
    ]
    assert entry["details"]["for_s"] == 600


async def test_a_pause_defaults_to_an_hour_and_keeps_a_longer_one(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    first = await client.post("/v1/providers/jimmy/pause", headers=OPS)
    assert first.status_code == 200, first.text
    async with engine.connect() as conn:
        left_s = await conn.scalar(
            text(
                "SELECT EXTRACT(EPOCH FROM paused_until - clock_timestamp()) FROM provider_state"
                " WHERE name = 'jimmy'"
            )
        )
    # An hour from the request (a loaded machine may take a while to read it back).
    assert 3500 < float(left_s) <= 3600, left_s
    until = await _paused_until(engine, "jimmy")
    shorter = await client.post("/v1/providers/jimmy/pause", json={"for_s": 5}, headers=OPS)
    assert shorter.status_code == 200
    assert await _paused_until(engine, "jimmy") == until, shorter.json()


@pytest.mark.parametrize("leases", [100, 0.5])
async def test_resume_brings_slots_booked_into_the_pause_back(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, leases: float
) -> None:
    """A claim made just before the pause reserved its slots after it: left there, the next
    claims would queue behind them for the rest of the pause. Far from the pause's end (100
    leases), no replica can send on them and they move; within a lease of it (half of one),
    a replica may still, so they stay and polling resumes there."""
    held_s = poll_lease_s(settings.engine, settings.providers["minimax"])
    pause_s = leases * held_s
    await client.post("/v1/providers/minimax/pause", json={"for_s": pause_s}, headers=OPS)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE provider_state SET next_slot_at = paused_until + interval '2 seconds'"
                " WHERE name = 'minimax'"
            )
        )
    await client.post("/v1/providers/minimax/resume", headers=OPS)
    async with engine.connect() as conn:
        booked_s = await conn.scalar(
            text(
                "SELECT EXTRACT(EPOCH FROM next_slot_at - clock_timestamp()) FROM provider_state"
                " WHERE name = 'minimax'"
            )
        )
    expected_s = 2 if leases > 1 else pause_s + 2
    assert expected_s - 1 < float(booked_s) <= expected_s


@pytest.mark.parametrize("key", [None, READER_KEY], ids=["tenant", "read-only operator"])
@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_tenants_and_read_only_keys_change_nothing(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    key: str | None,
    action: str,
) -> None:
    await client.post("/v1/providers/minimax/pause", json={"for_s": 60}, headers=OPS)
    before = await _paused_until(engine, "minimax")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await client.post(f"/v1/providers/minimax/{action}", headers=headers)
    assert_error(response, 403, "forbidden")
    assert await _paused_until(engine, "minimax") == before
    log = (await client.get("/v1/audit", headers=OPS)).json()["items"]
    mine = [(e["action"], e["result"]) for e in log if e["actor"] != "operator:ops"]
    # The read-only key's refusal is recorded; a tenant's key is no operator's.
    assert mine == ([(f"provider.{action}", "denied")] if key else [])


async def test_an_unknown_instance_is_a_404(client: httpx.AsyncClient) -> None:
    for action in ("pause", "resume"):
        response = await client.post(f"/v1/providers/nowhere/{action}", headers=OPS)
        assert_error(response, 404, "not_found")
    assert await _audit(client) == []


@pytest.mark.parametrize("for_s", [0, -1, 7 * 86400 + 1])
async def test_a_pause_is_bounded(client: httpx.AsyncClient, for_s: float) -> None:
    response = await client.post("/v1/providers/minimax/pause", json={"for_s": for_s}, headers=OPS)
    assert_error(response, 422, "validation_error")
