"""GET /v1/providers by role: a tenant sees health and its own active tasks; the instance's
address, budget and totals are for operators."""

from __future__ import annotations

from typing import Any

import httpx

from app.providers.service import OPERATOR_FIELDS
from tests.helpers import OPS_KEY, OTHER_KEY


async def _instances(client: httpx.AsyncClient, key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await client.get("/v1/providers", headers=headers)
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["items"]}


async def test_a_tenant_sees_its_own_counts_only(client: httpx.AsyncClient) -> None:
    for external_id in (11, 13):
        created = await client.post(
            "/v1/tasks", json={"provider": "minimax", "external_id": external_id}
        )
        assert created.status_code == 201
    other = await client.post(
        "/v1/tasks",
        json={"provider": "minimax", "external_id": 17},
        headers={"Authorization": f"Bearer {OTHER_KEY}"},
    )
    assert other.status_code == 201

    mine = await _instances(client)
    assert mine["minimax"]["your_active_tasks"] == {"pending": 2}
    assert mine["jimmy"]["your_active_tasks"] == {}
    assert mine["minimax"]["health"] == "ok"
    assert all(mine["minimax"][field] is None for field in OPERATOR_FIELDS)
    theirs = await _instances(client, OTHER_KEY)
    assert theirs["minimax"]["your_active_tasks"] == {"pending": 1}

    ops = await _instances(client, OPS_KEY)
    assert ops["minimax"]["base_url"] == "https://api.minimax.io"
    assert ops["minimax"]["configured_rate_per_s"] > 0
    assert isinstance(ops["minimax"]["due_backlog"], int)
    assert ops["minimax"]["your_active_tasks"] == {}
