"""The overview (/ui) and the providers page (/ui/providers) over HTTP: what each role is
shown, and pausing and resuming an instance from a form: CSRF, the read-only key refused by
the server, both changes in the audit log."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_sessionmaker
from app.overview.repository import ActivityRepository, Counts
from tests.helpers import ACME_KEY, OPS_KEY, READER_KEY
from tests.ui import sign_in

OPS = {"Authorization": f"Bearer {OPS_KEY}"}


async def _paused(engine: AsyncEngine, name: str) -> bool:
    async with engine.connect() as conn:
        until = await conn.scalar(
            text("SELECT paused_until > now() FROM provider_state WHERE name = :name"),
            {"name": name},
        )
    return bool(until)


async def test_an_operator_sees_the_figures_charts_and_instances(
    ui: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    async with create_sessionmaker(engine).begin() as session:
        await ActivityRepository(session).add(
            "replica-1", [("minimax", Counts(polls=120, detection_gap=[3, 1]))]
        )
    await sign_in(ui, OPS_KEY, "/ui")
    page = await ui.get("/ui")
    assert page.status_code == 200
    assert 'aria-current="page">Overview' in page.text
    assert 'data-tile="polls">2.00<' in page.text
    assert 'data-chart="polls_per_s"' in page.text
    assert 'data-charts="{' in page.text  # the charts' data, escaped into the attribute
    assert re.search(r'<tr data-instance="minimax">', page.text)
    assert 'src="/ui/static/charts.js"' in page.text
    live = await ui.get("/ui/overview/live")
    assert live.status_code == 200
    assert live.text.lstrip().startswith('<section id="live"')
    assert "<html" not in live.text


async def test_a_tenant_sees_its_own_tasks_not_the_deployment(
    ui: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    created = await client.post("/v1/tasks", json={"provider": "jimmy", "external_id": "t-1"})
    assert created.status_code == 201
    await sign_in(ui, ACME_KEY, "/ui")
    page = await ui.get("/ui")
    assert page.status_code == 200
    assert "for operators" in page.text
    assert "data-charts" not in page.text
    assert "pending: 1" in page.text
    assert "api.minimax.io" not in page.text  # an instance's address is for operators
    providers = await ui.get("/ui/providers")
    assert providers.status_code == 200
    assert "/pause" not in providers.text
    assert "Your tracked tasks" in providers.text


async def test_an_operator_pauses_and_resumes_from_the_page(
    ui: httpx.AsyncClient, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    csrf = await sign_in(ui, OPS_KEY, "/ui/providers")
    page = await ui.get("/ui/providers")
    assert 'action="/ui/providers/minimax/pause"' in page.text
    assert "disabled" not in page.text

    paused = await ui.post("/ui/providers/minimax/pause", data={"csrf": csrf, "for_s": "900"})
    assert (paused.status_code, paused.headers["location"]) == (303, "/ui/providers")
    assert await _paused(engine, "minimax")
    page = await ui.get("/ui/providers")
    assert 'action="/ui/providers/minimax/resume"' in page.text
    resumed = await ui.post("/ui/providers/minimax/resume", data={"csrf": csrf})
    assert resumed.status_code == 303
    assert not await _paused(engine, "minimax")

    log = (await client.get("/v1/audit", headers=OPS)).json()["items"]
    assert [(e["actor"], e["action"], e["target"], e["result"]) for e in reversed(log)] == [
        ("operator:ops", "provider.pause", "provider:minimax", "ok"),
        ("operator:ops", "provider.resume", "provider:minimax", "ok"),
    ]
    assert log[-1]["details"]["for_s"] == 900


@pytest.mark.parametrize(
    ("data", "status"),
    [({"for_s": "900"}, 403), ({"for_s": "0"}, 422), ({"for_s": "soon"}, 422)],
    ids=["no-csrf", "zero", "not-a-number"],
)
async def test_a_pause_form_needs_its_token_and_a_length(
    ui: httpx.AsyncClient, engine: AsyncEngine, data: dict[str, str], status: int
) -> None:
    csrf = await sign_in(ui, OPS_KEY, "/ui/providers")
    if status != 403:
        data = {**data, "csrf": csrf}
    response = await ui.post("/ui/providers/minimax/pause", data=data)
    assert response.status_code == status
    assert not await _paused(engine, "minimax")


async def test_a_read_only_operator_sees_disabled_buttons_and_is_refused(
    ui: httpx.AsyncClient, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    csrf = await sign_in(ui, READER_KEY, "/ui/providers")
    page = await ui.get("/ui/providers")
    assert "Your key is read-only" in page.text
    assert re.search(r'<button type="submit" disabled[^>]*>Pause minimax', page.text)
    refused = await ui.post("/ui/providers/minimax/pause", data={"csrf": csrf, "for_s": "900"})
    assert refused.status_code == 403
    assert not await _paused(engine, "minimax")
    log = (await client.get("/v1/audit", headers=OPS)).json()["items"]
    assert [(e["actor"], e["action"], e["result"]) for e in log] == [
        ("operator:reader", "provider.pause", "denied")
    ]


async def test_a_tenant_cannot_pause_even_with_its_token(
    ui: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    csrf = await sign_in(ui, ACME_KEY, "/ui/providers")
    refused = await ui.post("/ui/providers/minimax/pause", data={"csrf": csrf, "for_s": "900"})
    assert refused.status_code == 403
    assert not await _paused(engine, "minimax")


async def test_an_unknown_instance_is_a_404(ui: httpx.AsyncClient) -> None:
    csrf = await sign_in(ui, OPS_KEY, "/ui/providers")
    response = await ui.post("/ui/providers/nowhere/resume", data={"csrf": csrf})
    assert response.status_code == 404
