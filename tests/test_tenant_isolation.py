"""Invariant 5, walked over the whole API: one tenant never sees or changes another's tasks,
endpoints or deliveries.

Every route of the app is enumerated. Tenant A creates one of each object; tenant B then
calls every route that takes an id with A's ids (each must be a 404 that says nothing of A),
and every other route with its own key (nothing of A's may appear). A's rows must be exactly
as they were. A new route whose id parameter, body or kind this walk does not know fails the
test, so the walk stays complete as the API grows.
"""

from __future__ import annotations

import ipaddress
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.deps import TenantDep, get_statement_caller, get_statement_tenant, get_tenant
from app.main import create_app
from tests.helpers import ACME_KEY, OTHER_KEY, app_client

A = {"Authorization": f"Bearer {ACME_KEY}"}
B = {"Authorization": f"Bearer {OTHER_KEY}"}
HOOK_URL = "http://127.0.0.1:9/a-hook"
A_EXTERNAL_ID = 424242

# Routes that take no tenant at all.
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
# Routes without an id: B calls them with these bodies. POST /v1/tasks names A's upstream
# task, which must register B's own task rather than hand back A's.
COLLECTION_BODIES: dict[tuple[str, str], Any] = {
    ("GET", "/v1/tasks"): None,
    ("POST", "/v1/tasks"): {"provider": "minimax", "external_id": A_EXTERNAL_ID},
    ("POST", "/v1/tasks/batch"): {
        "tasks": [
            {"provider": "minimax", "external_id": A_EXTERNAL_ID},
            {"provider": "jimmy", "external_id": "a-only"},
        ]
    },
    ("GET", "/v1/providers"): None,
    ("GET", "/v1/webhooks"): None,
    ("POST", "/v1/webhooks"): {"url": HOOK_URL},
    ("GET", "/v1/signing-secret"): None,
}
# Routes with an id that take a body: the most damaging change B could ask for.
ID_ROUTE_BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/webhooks/{webhook_id}"): {
        "url": "http://127.0.0.1:9/b-hook",
        "events": ["task.queued"],
        "description": "taken over",
        "enabled": False,
    },
}
# A's rows, read straight from the tables: they must not change.
SNAPSHOT_QUERIES = [
    "SELECT * FROM tasks WHERE tenant = 'acme' ORDER BY id",
    "SELECT * FROM events WHERE tenant = 'acme' ORDER BY id",
    "SELECT * FROM webhook_endpoints WHERE tenant = 'acme' ORDER BY id",
    "SELECT * FROM deliveries WHERE tenant = 'acme' ORDER BY id",
    "SELECT a.* FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id"
    " WHERE d.tenant = 'acme' ORDER BY a.id",
    "SELECT * FROM tenant_secrets WHERE tenant = 'acme'",
]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}, {"tenant": "other", "key": OTHER_KEY}],
        webhook_allow_networks=[ipaddress.ip_network("127.0.0.0/8")],
        log_format="json",
    )


def _masked(text: str, ids: Iterable[str]) -> str:
    for value in ids:
        text = text.replace(value, "<id>")
    return text


# The tenant of a request on the unit-of-work session, and of one on a statement session.
TENANT_DEPENDENCIES = (get_tenant, get_statement_caller, get_statement_tenant)


def _needs_tenant(dependant: Dependant) -> bool:
    return any(d.call in TENANT_DEPENDENCIES or _needs_tenant(d) for d in dependant.dependencies)


async def _snapshot(engine: AsyncEngine) -> list[list[Any]]:
    async with engine.connect() as conn:
        return [list((await conn.execute(text(query))).all()) for query in SNAPSHOT_QUERIES]


async def _objects_of_a(client: httpx.AsyncClient) -> dict[str, list[str]]:
    """A's objects: an active task, a cancelled one with a delivery, an endpoint, its secret."""
    active = await client.post(
        "/v1/tasks", json={"provider": "minimax", "external_id": A_EXTERNAL_ID}, headers=A
    )
    ended = await client.post(
        "/v1/tasks",
        json={"provider": "jimmy", "external_id": "a-only", "metadata": {"owner": "acme"}},
        headers=A,
    )
    hook = await client.post(
        "/v1/webhooks", json={"url": HOOK_URL, "description": "acme's"}, headers=A
    )
    assert (active.status_code, ended.status_code, hook.status_code) == (201, 201, 201)
    cancelled = await client.delete(f"/v1/tasks/{ended.json()['id']}", headers=A)
    assert cancelled.json()["status"] == "cancelled"
    listed = await client.get(f"/v1/tasks/{ended.json()['id']}/deliveries", headers=A)
    [delivery] = listed.json()["items"]
    secret = (await client.get("/v1/signing-secret", headers=A)).json()["secret"]
    return {
        "task_id": [active.json()["id"], ended.json()["id"]],
        "webhook_id": [hook.json()["id"]],
        "delivery_id": [delivery["id"]],
        "secrets": [hook.json()["secret"], secret],
    }


async def _walk(client: httpx.AsyncClient, app: FastAPI, ids: dict[str, list[str]]) -> None:
    """Call every route as tenant B; fail on any route the walk cannot classify or fill."""
    a_values = [v for values in ids.values() for v in values]
    visited: set[tuple[str, str]] = set()
    # FastAPI keeps included routers lazily; this is how its own OpenAPI generation flattens
    # them, with each route's full path.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue  # /openapi.json and the docs pages
        if route.path is not None and (route.path == "/ui" or route.path.startswith("/ui/")):
            # The dashboard: signed in with a cookie, not a bearer key, and answering HTML;
            # its own isolation tests are in tests/ui/test_endpoints.py.
            continue
        assert route.path is not None
        assert route.methods is not None
        for method in sorted(route.methods):
            key = (method, route.path)
            visited.add(key)
            dependant: Dependant = route.dependant
            if key in PUBLIC:
                assert not _needs_tenant(dependant), key
                continue
            assert _needs_tenant(dependant), f"{key} is neither public nor per tenant"
            params = [p.name for p in dependant.path_params]
            if params:
                unknown = [p for p in params if p not in ids]
                assert not unknown, f"the walk cannot fill {unknown} of {key}: add A's object"
                has_body = route.body_field is not None
                assert not has_body or key in ID_ROUTE_BODIES, f"no body for {key} in the walk"
                for values in itertools.product(*(ids[p] for p in params)):
                    await _call_with_ids(client, key, params, list(values))
            else:
                assert key in COLLECTION_BODIES, f"the walk does not know the route {key}"
                response = await client.request(
                    method, route.path, json=COLLECTION_BODIES[key], headers=B
                )
                assert response.status_code < 300, (key, response.text)
                leaked = [v for v in a_values if v in response.text]
                assert not leaked, f"{key} shows tenant A's {leaked} to tenant B"
                if key == ("POST", "/v1/tasks"):
                    assert response.status_code == 201  # B's own task, not A's
                if key == ("POST", "/v1/tasks/batch"):
                    # B's own tasks (A's ids are not in the answer), not errors.
                    results = response.json()["results"]
                    assert [r["status"] != "error" for r in results] == [True, True], results

    # The enumeration itself is complete: it found every operation the API documents.
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert documented <= visited, documented - visited
    stale = (set(COLLECTION_BODIES) | set(ID_ROUTE_BODIES) | PUBLIC) - visited
    assert not stale, f"the walk lists routes the app no longer has: {stale}"


async def _call_with_ids(
    client: httpx.AsyncClient, key: tuple[str, str], params: list[str], values: list[str]
) -> None:
    method, template = key
    path = template.format(**dict(zip(params, values, strict=True)))
    response = await client.request(method, path, json=ID_ROUTE_BODIES.get(key), headers=B)
    assert response.status_code == 404, (method, path, response.text)
    assert response.json()["error"]["code"] == "not_found"
    # Indistinguishable from ids that never existed: the same answer, but for the id B
    # itself sent.
    nowhere = [str(uuid.uuid4()) for _ in params]
    control = await client.request(
        method,
        template.format(**dict(zip(params, nowhere, strict=True))),
        json=ID_ROUTE_BODIES.get(key),
        headers=B,
    )
    assert (control.status_code, _masked(control.text, nowhere)) == (
        404,
        _masked(response.text, values),
    ), (method, path)


async def test_tenant_b_cannot_reach_tenant_a(settings: Settings, engine: AsyncEngine) -> None:
    app = create_app(settings, engine=engine)  # the walk reads its routes
    async with app_client(app) as client:
        ids = await _objects_of_a(client)
        before = await _snapshot(engine)

        await _walk(client, app, ids)

        assert await _snapshot(engine) == before
        # And A still sees all of it, unchanged, through the API.
        for task_id in ids["task_id"]:
            assert (await client.get(f"/v1/tasks/{task_id}", headers=A)).status_code == 200
        hook = (await client.get(f"/v1/webhooks/{ids['webhook_id'][0]}", headers=A)).json()
    assert (hook["url"], hook["enabled"], hook["events"]) == (HOOK_URL, True, None)


async def _thing(thing_id: uuid.UUID, tenant: TenantDep) -> None:
    return None


async def _everything(tenant: TenantDep) -> None:
    return None


async def _open() -> None:
    return None


@pytest.mark.parametrize(
    ("path", "endpoint", "complaint"),
    [
        ("/things/{thing_id}", _thing, "cannot fill"),
        ("/everything", _everything, "does not know the route"),
        ("/open", _open, "neither public nor per tenant"),
    ],
)
async def test_the_walk_refuses_routes_it_does_not_know(
    settings: Settings,
    engine: AsyncEngine,
    path: str,
    endpoint: Callable[..., Awaitable[None]],
    complaint: str,
) -> None:
    app = create_app(settings, engine=engine)
    extra = APIRouter(prefix="/v1")
    extra.add_api_route(path, endpoint, methods=["GET"])
    app.include_router(extra)
    nowhere = {name: [str(uuid.uuid4())] for name in ("task_id", "webhook_id", "delivery_id")}
    async with app_client(app, key=None) as http:
        with pytest.raises(AssertionError, match=complaint):
            await _walk(http, app, nowhere)
