"""Invariant 5, walked over the whole API: one tenant never sees or changes another's tasks,
endpoints or deliveries. And the roles above tenants: an operator reaches every tenant's, a
read-only operator sees them and changes nothing.

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
from app.deps import TenantDep, get_caller, get_statement_caller, get_statement_tenant, get_tenant
from app.main import create_app
from tests.helpers import ACME_KEY, ADMIN_KEYS, OPS_KEY, OTHER_KEY, READER_KEY, app_client

A = {"Authorization": f"Bearer {ACME_KEY}"}
B = {"Authorization": f"Bearer {OTHER_KEY}"}
OPS = {"Authorization": f"Bearer {OPS_KEY}"}
READER = {"Authorization": f"Bearer {READER_KEY}"}
HOOK_URL = "http://127.0.0.1:9/a-hook"
A_EXTERNAL_ID = 424242

# Routes that take no tenant at all: probes, metrics, and the providers' callbacks (they
# prove themselves with the instance's secret and only make tasks due: tests/inbound).
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/v1/inbound/{instance}"),
}
# Routes for operators only: a tenant's key gets a 403.
OPERATORS_ONLY = {
    ("GET", "/v1/audit"),
    ("GET", "/v1/overview"),
    ("POST", "/v1/providers/{name}/pause"),
    ("POST", "/v1/providers/{name}/resume"),
}
# Path parameters that name no tenant's object but what every tenant shares: the walk fills
# them with a real one.
SHARED_IDS = {"name": ["minimax"]}
# Routes that make what belongs to one tenant: an operator's key gets a 403.
TENANTS_ONLY = {
    ("POST", "/v1/tasks"),
    ("POST", "/v1/tasks/batch"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/signing-secret"),
}
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
    ("GET", "/v1/audit"): None,
    ("GET", "/v1/overview"): None,
    ("GET", "/v1/deliveries"): None,
    ("GET", "/v1/deliveries/summary"): None,
    # Everything B's filter could reach, as confirmed: A's must stay out of it.
    ("POST", "/v1/deliveries/retry"): {"status": "troubled", "tenant": "acme", "expected": 10_000},
}
# Routes with an id that take a body: the most damaging change B could ask for.
ID_ROUTE_BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/webhooks/{webhook_id}"): {
        "url": "http://127.0.0.1:9/b-hook",
        "events": ["task.queued"],
        "description": "taken over",
        "enabled": False,
    },
    ("POST", "/v1/providers/{name}/pause"): {"for_s": 60},
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
    # Shared by every tenant: no tenant may pause it.
    "SELECT name, paused_until FROM provider_state ORDER BY name",
]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}, {"tenant": "other", "key": OTHER_KEY}],
        admin_keys=ADMIN_KEYS,
        webhook_allow_networks=[ipaddress.ip_network("127.0.0.0/8")],
        log_format="json",
    )


def _masked(text: str, ids: Iterable[str]) -> str:
    for value in ids:
        text = text.replace(value, "<id>")
    return text


# The tenant of a request on the unit-of-work session, and of one on a statement session.
TENANT_DEPENDENCIES = (get_caller, get_tenant, get_statement_caller, get_statement_tenant)


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


def _dashboard(path: str | None) -> bool:
    """The dashboard's routes: signed in with a cookie, not a bearer key, and answering HTML;
    their isolation is tested in tests/ui/test_endpoints.py."""
    return path is not None and (path == "/ui" or path.startswith("/ui/"))


async def _walk(client: httpx.AsyncClient, app: FastAPI, ids: dict[str, list[str]]) -> None:
    """Call every route as tenant B; fail on any route the walk cannot classify or fill."""
    a_values = [v for values in ids.values() for v in values]
    visited: set[tuple[str, str]] = set()
    # FastAPI keeps included routers lazily; this is how its own OpenAPI generation flattens
    # them, with each route's full path.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue  # /openapi.json and the docs pages
        if _dashboard(route.path):
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
                unknown = [p for p in params if p not in {**ids, **SHARED_IDS}]
                assert not unknown, f"the walk cannot fill {unknown} of {key}: add A's object"
                has_body = route.body_field is not None
                assert not has_body or key in ID_ROUTE_BODIES, f"no body for {key} in the walk"
                for values in _values(ids, params):
                    await _call_with_ids(client, key, params, list(values))
            else:
                assert key in COLLECTION_BODIES, f"the walk does not know the route {key}"
                response = await client.request(
                    method, route.path, json=COLLECTION_BODIES[key], headers=B
                )
                if key in OPERATORS_ONLY:
                    assert response.status_code == 403, (key, response.text)
                    continue
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
    stale = (set(COLLECTION_BODIES) | set(ID_ROUTE_BODIES) | PUBLIC | TENANTS_ONLY) - visited
    assert not stale, f"the walk lists routes the app no longer has: {stale}"


def _values(ids: dict[str, list[str]], params: list[str]) -> Iterable[tuple[str, ...]]:
    """Every way to fill `params` with A's objects (and what all tenants share)."""
    known = {**ids, **SHARED_IDS}
    return itertools.product(*(known[p] for p in params))


async def _call_with_ids(
    client: httpx.AsyncClient, key: tuple[str, str], params: list[str], values: list[str]
) -> None:
    method, template = key
    path = template.format(**dict(zip(params, values, strict=True)))
    response = await client.request(method, path, json=ID_ROUTE_BODIES.get(key), headers=B)
    if key in OPERATORS_ONLY:
        assert response.status_code == 403, (method, path, response.text)
        return
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
        # The walk calls lists without a query; with one that names A, B still gets nothing.
        for query in (
            {"status": "all"},
            {"status": "all", "tenant": "acme"},
            {"status": "all", "task_id": ids["task_id"][1]},
        ):
            listed = await client.get("/v1/deliveries", params=query, headers=B)
            assert listed.json()["items"] == [], query
            as_ops = await client.get("/v1/deliveries", params=query, headers=OPS)
            assert [d["id"] for d in as_ops.json()["items"]] == ids["delivery_id"], query

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


def _routes(app: FastAPI) -> list[tuple[str, str, list[str]]]:
    """(method, path, path parameters) of every route that takes a caller."""
    found = []
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or _dashboard(route.path):
            continue
        assert route.path is not None
        assert route.methods is not None
        for method in sorted(route.methods):
            if (method, route.path) not in PUBLIC:
                found.append((method, route.path, [p.name for p in route.dependant.path_params]))
    return found


async def test_an_operator_reaches_every_tenant(settings: Settings, engine: AsyncEngine) -> None:
    """Every read of A's objects answers an operator as it answers A, every list shows them,
    and what only a tenant can make is refused with a 403 that changes nothing."""
    app = create_app(settings, engine=engine)
    async with app_client(app) as client:
        ids = await _objects_of_a(client)
        before = await _snapshot(engine)
        for method, path, params in _routes(app):
            key = (method, path)
            if key in TENANTS_ONLY:
                body = COLLECTION_BODIES.get(key)
                response = await client.request(method, path, json=body, headers=OPS)
                assert response.status_code == 403, (key, response.text)
            elif method == "GET" and params:
                for values in _values(ids, params):
                    url = path.format(**dict(zip(params, values, strict=True)))
                    as_a = await client.get(url, headers=A)
                    as_ops = await client.get(url, headers=OPS)
                    assert (as_ops.status_code, as_ops.json()) == (200, as_a.json()), key
            elif method == "GET":
                response = await client.get(path, headers=OPS)
                assert response.status_code == 200, (key, response.text)
                if key in {("GET", "/v1/tasks"), ("GET", "/v1/webhooks")}:
                    shown = [item["id"] for item in response.json()["items"]]
                    mine = ids["task_id"] if path == "/v1/tasks" else ids["webhook_id"]
                    assert set(mine) <= set(shown), key
        assert await _snapshot(engine) == before

        # And it changes them: a retry of A's delivery, recorded under its own name.
        retried = await client.post(f"/v1/deliveries/{ids['delivery_id'][0]}/retry", headers=OPS)
        assert retried.status_code == 200, retried.text
        log = (await client.get("/v1/audit", headers=OPS)).json()["items"]
        assert [(e["actor"], e["action"], e["tenant"], e["result"]) for e in log[:1]] == [
            ("operator:ops", "delivery.retry", "acme", "ok")
        ]
        assert log[0]["target"] == f"delivery:{ids['delivery_id'][0]}"


async def test_a_read_only_operator_sees_and_changes_nothing(
    settings: Settings, engine: AsyncEngine
) -> None:
    app = create_app(settings, engine=engine)
    async with app_client(app) as client:
        ids = await _objects_of_a(client)
        before = await _snapshot(engine)
        refused = 0
        for method, path, params in _routes(app):
            key = (method, path)
            if method == "GET" or key in TENANTS_ONLY:
                continue
            for values in _values(ids, params):
                url = path.format(**dict(zip(params, values, strict=True)))
                response = await client.request(
                    method, url, json=ID_ROUTE_BODIES.get(key), headers=READER
                )
                assert response.status_code == 403, (key, response.text)
                assert response.json()["error"]["code"] == "forbidden"
                refused += 1
        assert refused >= 5  # update, delete, rotate, retry, cancel at least
        assert await _snapshot(engine) == before

        # It sees everything: A's tasks and endpoints, but not a secret to sign with.
        hook = await client.get(f"/v1/webhooks/{ids['webhook_id'][0]}", headers=READER)
        assert (hook.status_code, hook.json()["url"], hook.json()["secret"]) == (
            200,
            HOOK_URL,
            None,
        )
        assert not any(secret in hook.text for secret in ids["secrets"])
        # Each refusal is in the audit log, which it may read.
        log = (await client.get("/v1/audit?limit=500", headers=READER)).json()["items"]
        denied = [e for e in log if e["actor"] == "operator:reader"]
        assert len(denied) == refused
        assert {e["result"] for e in denied} == {"denied"}
        # A tenant may not read the log.
        assert (await client.get("/v1/audit", headers=A)).status_code == 403
