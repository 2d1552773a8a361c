from __future__ import annotations

import uuid
from datetime import datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import AllowedNetwork, Settings
from tests.helpers import OTHER_KEY, api_client, assert_error, fields_of

OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


async def create(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", **body})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


async def test_crud(client: httpx.AsyncClient) -> None:
    created = await create(client, description="orders", events=["task.succeeded", "task.failed"])
    assert str(created["secret"]).startswith("whsec_")
    assert created["enabled"] is True
    assert created["events"] == ["task.failed", "task.succeeded"]
    webhook_id = created["id"]

    listed = (await client.get("/v1/webhooks")).json()["items"]
    assert [w["id"] for w in listed] == [webhook_id]
    assert "secret" not in listed[0]

    got = (await client.get(f"/v1/webhooks/{webhook_id}")).json()
    assert got["secret"] == created["secret"]

    patched = await client.patch(
        f"/v1/webhooks/{webhook_id}", json={"events": None, "description": "all terminal"}
    )
    assert patched.status_code == 200
    assert patched.json()["events"] is None
    assert patched.json()["description"] == "all terminal"
    disabled = await client.patch(f"/v1/webhooks/{webhook_id}", json={"enabled": False})
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "disabled by tenant:acme"

    assert (await client.delete(f"/v1/webhooks/{webhook_id}")).status_code == 204
    assert_error(await client.get(f"/v1/webhooks/{webhook_id}"), 404, "not_found")


async def test_rotate_secret_keeps_the_old_one_for_a_day(client: httpx.AsyncClient) -> None:
    created = await create(client)
    rotated = (await client.post(f"/v1/webhooks/{created['id']}/rotate-secret")).json()
    assert rotated["secret"] != created["secret"]
    assert rotated["secret"].startswith("whsec_")
    grace = datetime.fromisoformat(rotated["previous_secret_expires_at"]) - datetime.fromisoformat(
        rotated["updated_at"]
    )
    assert abs(grace.total_seconds() - 86400) < 5


async def test_signing_secret_is_stable_per_tenant(client: httpx.AsyncClient) -> None:
    first = (await client.get("/v1/signing-secret")).json()["secret"]
    assert first.startswith("whsec_")
    assert (await client.get("/v1/signing-secret")).json()["secret"] == first
    theirs = (await client.get("/v1/signing-secret", headers=OTHER)).json()["secret"]
    assert theirs != first


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "url"),
        ({"url": "http://10.1.2.3/hook"}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "http://[::ffff:10.0.0.1]/x"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://127.0.0.1/x", "events": []}, "events"),
        ({"url": "http://127.0.0.1/x", "events": ["task.done"]}, "events.0"),
        ({"url": "http://127.0.0.1/x", "secret": "mine"}, "secret"),
        ({}, "url"),
    ],
)
async def test_invalid_endpoints(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    error = assert_error(await client.post("/v1/webhooks", json=body), 422, "validation_error")
    assert field in [d["field"] for d in error["details"]]


async def test_an_allowed_port_opens_only_that_port(
    settings: Settings, engine: AsyncEngine
) -> None:
    """Allowing the local receiver on 127.0.0.1:9000 keeps the API's own port and the
    database's refused, for endpoints and for a task's callback_url."""
    narrow = settings.model_copy(
        update={"webhook_allow_networks": [AllowedNetwork.parse("127.0.0.1:9000")]}
    )
    async with api_client(narrow, engine) as client:
        await create(client, url="http://127.0.0.1:9000/hook")
        task = {"provider": "jimmy", "external_id": "ext-1"}
        callback = {**task, "callback_url": "http://127.0.0.1:9000/hook"}
        assert (await client.post("/v1/tasks", json=callback)).status_code == 201
        for url in (
            "http://127.0.0.1:8000/v1/tasks",
            "http://127.0.0.1:5432/",
            "http://localhost:5432/",
            "http://127.0.0.1/",
            "http://127.0.0.2:9000/",
        ):
            response = await client.post("/v1/webhooks", json={"url": url})
            assert fields_of(assert_error(response, 422, "validation_error")) == ["url"]
            callback = {**task, "external_id": "ext-2", "callback_url": url}
            response = await client.post("/v1/tasks", json=callback)
            assert fields_of(assert_error(response, 422, "validation_error")) == ["callback_url"]


async def test_other_tenants_endpoints_are_404(client: httpx.AsyncClient) -> None:
    created = await create(client)
    webhook_id = created["id"]
    assert (await client.get("/v1/webhooks", headers=OTHER)).json()["items"] == []
    for method, path, body in [
        ("GET", f"/v1/webhooks/{webhook_id}", None),
        ("PATCH", f"/v1/webhooks/{webhook_id}", {"enabled": False}),
        ("DELETE", f"/v1/webhooks/{webhook_id}", None),
        ("POST", f"/v1/webhooks/{webhook_id}/rotate-secret", None),
        ("POST", f"/v1/deliveries/{uuid.uuid4()}/retry", None),
        ("GET", f"/v1/tasks/{uuid.uuid4()}/deliveries", None),
    ]:
        response = await client.request(method, path, json=body, headers=OTHER)
        assert_error(response, 404, "not_found")
    assert (await client.get(f"/v1/webhooks/{webhook_id}")).json()["enabled"] is True
