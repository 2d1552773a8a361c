"""The dashboard over HTTP: sign-in and sign-out, the session cookie, CSRF, redirects, and
the task pages of one tenant never showing another's."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.auth.repository import ApiKeyRepository
from app.auth.service import create_key
from app.core.config import Settings
from app.main import create_app
from app.ui import endpoints
from app.ui.endpoints import TASKS_PER_PAGE, NavItem
from app.ui.session import COOKIE_NAME, CSRF_HEADER, SESSION_TTL_S
from app.webhooks.delivery import DeliveryWorker
from tests.helpers import (
    ACME_KEY,
    DISCARD_URL,
    NO_LINKS,
    OPS_KEY,
    OTHER_KEY,
    READER_KEY,
    api_client,
    eventually,
)
from tests.ui import sign_in

JIMMY_ID = "ui-test-task"


async def register(
    api: httpx.AsyncClient, external_id: str | int, provider: str = "jimmy"
) -> dict[str, Any]:
    response = await api.post("/v1/tasks", json={"provider": provider, "external_id": external_id})
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


async def test_pages_redirect_to_the_sign_in_form_and_back(ui: httpx.AsyncClient) -> None:
    for path in ("/ui", "/ui/tasks?status=failed", f"/ui/tasks/{uuid.uuid4()}"):
        response = await ui.get(path)
        assert response.status_code == 303, path
        location = urlsplit(response.headers["location"])
        assert location.path == "/ui/signin"
        assert parse_qs(location.query) == {"next": [path]}
    form = await ui.get("/ui/signin?next=/ui/tasks")
    assert form.status_code == 200
    assert '<label for="key">' in form.text
    assert 'id="key" name="key" type="password"' in form.text
    assert 'method="post" action="/ui/signin"' in form.text
    assert 'name="next" value="/ui/tasks"' in form.text


async def test_sign_in_sets_a_strict_http_only_cookie_without_the_key(
    ui: httpx.AsyncClient,
) -> None:
    response = await ui.post("/ui/signin", data={"key": ACME_KEY, "next": "/ui/tasks"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/tasks"
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/ui" in cookie.lower()
    assert f"max-age={SESSION_TTL_S}" in cookie.lower()
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    assert ACME_KEY not in cookie
    page = await ui.get("/ui/tasks")
    assert page.status_code == 200
    assert "Signed in as <strong>acme</strong>" in page.text
    assert ACME_KEY not in page.text


async def test_over_https_the_cookie_is_secure(settings: Settings, engine: AsyncEngine) -> None:
    app = create_app(settings, engine=engine)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://pollhook.test"
        ) as http,
    ):
        response = await http.post("/ui/signin", data={"key": ACME_KEY})
    assert response.status_code == 303
    assert "secure" in response.headers["set-cookie"].lower()


async def test_behind_a_tls_proxy_the_public_url_makes_the_cookie_secure(
    settings: Settings, engine: AsyncEngine
) -> None:
    behind = settings.model_copy(update={"public_url": "https://pollhook.example.test"})
    async with api_client(behind, engine, key=None) as http:
        response = await http.post("/ui/signin", data={"key": ACME_KEY})
    assert response.status_code == 303
    assert "secure" in response.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("headers", "signed_in"),
    [
        ({"sec-fetch-site": "cross-site"}, False),
        ({"sec-fetch-site": "same-site"}, False),
        ({"origin": "http://evil.invalid"}, False),
        ({"sec-fetch-site": "same-origin"}, True),
        ({"origin": "http://pollhook.test"}, True),
        ({}, True),  # not a browser: as the API, the key is the credential
    ],
)
async def test_another_site_cannot_sign_the_browser_in(
    ui: httpx.AsyncClient, headers: dict[str, str], signed_in: bool
) -> None:
    response = await ui.post("/ui/signin", data={"key": ACME_KEY}, headers=headers)
    assert response.status_code == (303 if signed_in else 403), response.text
    assert ("set-cookie" in response.headers) is signed_in


async def test_dashboard_pages_count_against_the_callers_rate_limit(
    settings: Settings, engine: AsyncEngine
) -> None:
    tight = settings.model_copy(update={"api_rate_limit_per_s": 0.001, "api_rate_limit_burst": 3})
    async with api_client(tight, engine, key=None) as http:
        await http.post("/ui/signin", data={"key": ACME_KEY})
        answers = [(await http.get("/ui/tasks")).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]


@pytest.mark.parametrize("key", ["wrong-key-0123456789", "", " ", "x" * 300])
async def test_a_wrong_key_gets_the_form_again_without_it(ui: httpx.AsyncClient, key: str) -> None:
    response = await ui.post("/ui/signin", data={"key": key, "next": "/ui/tasks"})
    assert response.status_code == 401
    assert "not a valid API key" in response.text
    assert "set-cookie" not in response.headers
    if key.strip():
        assert key not in response.text


@pytest.mark.parametrize(
    ("next_path", "lands"),
    [("https://evil.example/", "/ui"), ("//evil.example", "/ui"), ("/ui/tasks", "/ui/tasks")],
)
async def test_sign_in_only_goes_back_to_the_dashboard(
    ui: httpx.AsyncClient, next_path: str, lands: str
) -> None:
    response = await ui.post("/ui/signin", data={"key": ACME_KEY, "next": next_path})
    assert response.headers["location"] == lands


async def test_a_post_without_the_session_csrf_token_is_refused(ui: httpx.AsyncClient) -> None:
    csrf = await sign_in(ui, ACME_KEY)
    for data, headers in (
        ({}, {}),
        ({"csrf": "not-the-token"}, {}),
        ({}, {CSRF_HEADER: "not-the-token"}),
    ):
        response = await ui.post("/ui/signout", data=data, headers=headers)
        assert response.status_code == 403
        assert (await ui.get("/ui/tasks")).status_code == 200  # still signed in
    # htmx sends the token as a header.
    response = await ui.post("/ui/signout", headers={CSRF_HEADER: csrf})
    assert response.status_code == 303


async def test_sign_out_clears_the_cookie(ui: httpx.AsyncClient) -> None:
    page = await ui.get("/ui/signin")
    csrf = await sign_in(ui, ACME_KEY)
    assert page.status_code == 200
    response = await ui.post("/ui/signout", data={"csrf": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/signin"
    assert f'{COOKIE_NAME}=""' in response.headers["set-cookie"]
    assert (await ui.get("/ui/tasks")).status_code == 303


async def test_a_post_without_a_session_is_refused(ui: httpx.AsyncClient) -> None:
    response = await ui.post("/ui/signout", data={"csrf": "x"})
    assert response.status_code == 401


async def test_a_forged_or_foreign_cookie_is_no_session(ui: httpx.AsyncClient) -> None:
    await sign_in(ui, ACME_KEY)
    good = ui.cookies[COOKIE_NAME]
    payload, _, signature = good.partition(".")
    ui.cookies.set(COOKIE_NAME, payload + "x." + signature, path="/ui")
    assert (await ui.get("/ui/tasks")).status_code == 303


async def test_a_revoked_key_stops_working_on_the_next_request(
    ui: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    sessions = async_sessionmaker(engine)
    async with sessions.begin() as session:
        new = await create_key(session, "acme")
    await sign_in(ui, new.key)
    async with sessions.begin() as session:
        assert await ApiKeyRepository(session).revoke(new.key_prefix) == 1
    response = await ui.get("/ui/tasks")
    assert response.status_code == 303
    assert urlsplit(response.headers["location"]).path == "/ui/signin"


async def test_htmx_requests_of_a_lapsed_session_are_sent_to_sign_in(
    ui: httpx.AsyncClient,
) -> None:
    response = await ui.get(f"/ui/tasks/{uuid.uuid4()}/live", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/ui/signin?next=")


async def test_tasks_list_shows_the_tenants_own_tasks(
    ui: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    mine = await register(client, "acme-task")
    client.headers["Authorization"] = f"Bearer {OTHER_KEY}"
    theirs = await register(client, "other-task")
    await sign_in(ui, ACME_KEY)
    page = await ui.get("/ui/tasks")
    assert mine["id"] in page.text
    assert "acme-task" in page.text
    assert theirs["id"] not in page.text
    assert "other-task" not in page.text
    # The tenant filter is for operators: a tenant neither sees it nor widens its view.
    assert 'name="tenant"' not in page.text
    assert theirs["id"] not in (await ui.get("/ui/tasks?tenant=other")).text


async def test_tasks_filters_and_pages(ui: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    total = TASKS_PER_PAGE + 2
    response = await client.post(
        "/v1/tasks/batch",
        json={"tasks": [{"provider": "jimmy", "external_id": f"t{n}"} for n in range(total)]},
    )
    assert response.status_code == 200
    await register(client, 95157322514444, provider="minimax")
    await sign_in(ui, ACME_KEY)

    first = await ui.get("/ui/tasks?provider=jimmy")
    rows = re.findall(r'href="/ui/tasks/([0-9a-f-]{36})"', first.text)
    assert len(rows) == TASKS_PER_PAGE
    older = re.search(r'href="(/ui/tasks\?[^"]+)" rel="next"', first.text)
    assert older is not None
    second = await ui.get(older.group(1).replace("&amp;", "&"))
    more = re.findall(r'href="/ui/tasks/([0-9a-f-]{36})"', second.text)
    assert len(more) == 2
    assert not set(rows) & set(more)
    assert 'rel="next"' not in second.text

    by_id = await ui.get("/ui/tasks?external_id=t7")
    assert len(re.findall(r'href="/ui/tasks/[0-9a-f-]{36}"', by_id.text)) == 1
    assert ">t7<" in by_id.text
    assert "95157322514444" in (await ui.get("/ui/tasks?provider=minimax")).text
    assert "No tasks match" in (await ui.get("/ui/tasks?status=succeeded")).text

    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    earlier = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert "No tasks match" in (await ui.get(f"/ui/tasks?created_from={later}")).text
    assert "No tasks match" in (await ui.get(f"/ui/tasks?created_before={earlier}")).text
    window = await ui.get(f"/ui/tasks?created_from={earlier}&created_before={later}&provider=mini")
    assert window.status_code == 422  # an unknown provider, said on the page
    assert "unknown provider" in window.text


async def test_task_page_shows_the_task_and_its_timeline(
    ui: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    task = await register(client, JIMMY_ID)
    await sign_in(ui, ACME_KEY)
    page = await ui.get(f"/ui/tasks/{task['id']}")
    assert page.status_code == 200
    assert JIMMY_ID in page.text
    assert 'data-status="pending"' in page.text
    assert "registered" in page.text
    # Live while the task is active: the fragment is polled.
    assert f'hx-get="/ui/tasks/{task["id"]}/live"' in page.text
    assert 'hx-trigger="every 2s"' in page.text

    assert (await client.delete(f"/v1/tasks/{task['id']}")).status_code == 200
    live = await ui.get(f"/ui/tasks/{task['id']}/live")
    assert live.status_code == 200
    assert 'data-status="cancelled"' in live.text
    assert "task.cancelled" in live.text
    assert "<html" not in live.text  # a fragment
    # Terminal: no more polling.
    assert "hx-trigger" not in live.text


async def test_another_tenants_task_is_not_found(
    ui: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    task = await register(client, JIMMY_ID)
    await sign_in(ui, OTHER_KEY)
    for path in (f"/ui/tasks/{task['id']}", f"/ui/tasks/{task['id']}/live"):
        response = await ui.get(path)
        assert response.status_code == 404
        assert JIMMY_ID not in response.text
        assert "Not found" in response.text
    nowhere = await ui.get(f"/ui/tasks/{uuid.uuid4()}")
    assert nowhere.status_code == 404
    assert (await ui.get("/ui/tasks/not-a-uuid")).status_code == 404


async def test_the_static_files_are_served_by_pollhook(ui: httpx.AsyncClient) -> None:
    for path, kind in (
        ("/ui/static/ui.css", "text/css"),
        ("/ui/static/vendor/htmx/htmx.min.js", "javascript"),
        ("/ui/static/vendor/uplot/uPlot.iife.min.js", "javascript"),
        ("/ui/static/vendor/uplot/uPlot.min.css", "text/css"),
    ):
        response = await ui.get(path)
        assert response.status_code == 200, path
        assert kind in response.headers["content-type"]
    page = await ui.get("/ui/signin")
    assert 'src="/ui/static/vendor/htmx/htmx.min.js"' in page.text
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    # Everything from pollhook itself: no CDN.
    for link in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert link.startswith(("/", "#")), link
        assert not link.startswith("//"), link


async def test_no_key_in_any_url_or_page(ui: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    task = await register(client, JIMMY_ID)
    seen: list[httpx.Response] = []
    ui.event_hooks["response"] = [_keep(seen)]
    await ui.get("/ui/tasks")
    csrf = await sign_in(ui, ACME_KEY)
    await ui.get(f"/ui/tasks/{task['id']}")
    await ui.get(f"/ui/tasks/{task['id']}/live")
    await ui.post("/ui/signout", data={"csrf": csrf})
    for response in seen:
        await response.aread()
        assert ACME_KEY not in str(response.request.url)
        assert ACME_KEY not in response.headers.get("location", "")
        assert ACME_KEY not in response.text
        assert ACME_KEY not in response.headers.get("set-cookie", "")


def _keep(seen: list[httpx.Response]) -> Any:
    async def hook(response: httpx.Response) -> None:
        seen.append(response)

    return hook


@pytest.mark.parametrize(("key", "role"), [(OPS_KEY, "operator"), (READER_KEY, "operator_read")])
async def test_an_operator_sees_every_tenants_tasks(
    ui: httpx.AsyncClient, client: httpx.AsyncClient, key: str, role: str
) -> None:
    mine = await register(client, "acme-task")
    client.headers["Authorization"] = f"Bearer {OTHER_KEY}"
    theirs = await register(client, "other-task")
    await sign_in(ui, key)
    page = await ui.get("/ui/tasks")
    assert f"({role})" in page.text
    assert mine["id"] in page.text
    assert theirs["id"] in page.text
    assert 'name="tenant"' in page.text
    only_other = await ui.get("/ui/tasks?tenant=other")
    assert theirs["id"] in only_other.text
    assert mine["id"] not in only_other.text
    by_id = await ui.get("/ui/tasks?external_id=other-task")
    assert theirs["id"] in by_id.text
    assert mine["id"] not in by_id.text
    task = await ui.get(f"/ui/tasks/{theirs['id']}")
    assert task.status_code == 200
    assert "<dt>Tenant</dt><dd>other</dd>" in task.text


@pytest.mark.parametrize(
    ("path", "current"),
    [
        ("/ui", "/ui"),
        ("/ui/tasks", "/ui/tasks"),
        ("/ui/tasks/0b0e5a7e-5c2b-4d84-9e0b-9d5c6d1c9c11", "/ui/tasks"),
        ("/ui/endpoints/0b0e5a7e-5c2b-4d84-9e0b-9d5c6d1c9c11", "/ui/endpoints"),
        ("/ui/taskslist", None),
    ],
)
def test_the_current_page_in_the_nav(path: str, current: str | None) -> None:
    assert [item.path for item in endpoints.NAV if item.is_current(path)] == (
        [current] if current else []
    )


async def test_operator_pages_are_in_the_nav_of_operators_only(
    ui: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoints, "NAV", [*endpoints.NAV, NavItem("/ui/x", "X", True)])
    await sign_in(ui, ACME_KEY)
    page = await ui.get("/ui/tasks")
    assert 'href="/ui/tasks" aria-current="page"' in page.text
    assert 'href="/ui/x"' not in page.text
    ui.cookies.clear()
    await sign_in(ui, READER_KEY)
    assert 'href="/ui/x"' in (await ui.get("/ui/tasks")).text


@contextlib.asynccontextmanager
async def _failing_delivery(
    client: httpx.AsyncClient, settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
    """An endpoint nothing listens at (the discard port), and a delivery to it that failed
    its first attempt (the next is seconds away), with the delivery loop running."""
    hook = await client.post("/v1/webhooks", json={"url": f"{DISCARD_URL}/hook"})
    task = await register(client, 31337, provider="minimax")
    await client.delete(f"/v1/tasks/{task['id']}")
    worker = DeliveryWorker(settings, engine, "ui-test", NO_LINKS)
    worker.start()
    try:

        async def failing() -> bool:
            items = (await client.get("/v1/deliveries", params={"status": "failing"})).json()
            return len(items["items"]) == 1

        await eventually(failing)
        yield hook.json(), task
    finally:
        await worker.stop()


async def test_deliveries_page_retries_one_and_all_matching(
    ui: httpx.AsyncClient, client: httpx.AsyncClient, settings: Settings, engine: AsyncEngine
) -> None:
    async with _failing_delivery(client, settings, engine) as (hook, task):
        csrf = await sign_in(ui, ACME_KEY, "/ui/deliveries")
        page = (await ui.get("/ui/deliveries")).text
        [delivery] = (await client.get("/v1/deliveries")).json()["items"]
        assert f'href="/ui/tasks/{task["id"]}"' in page
        assert "task.cancelled" in page
        assert "failing" in page
        assert "ConnectError" in page  # the last error
        assert f'action="/ui/deliveries/{delivery["id"]}/retry"' in page
        assert "Retry all matching" in page
        assert f'href="/ui/deliveries?endpoint_id={hook["id"]}"' in page  # the summary

        retried = await ui.post(
            f"/ui/deliveries/{delivery['id']}/retry",
            data={"csrf": csrf, "back": "/ui/deliveries?status=failing"},
        )
        assert retried.status_code == 303
        assert retried.headers["location"] == "/ui/deliveries?status=failing&done=retried"

        confirm = await ui.get(f"/ui/deliveries/retry?status=failing&endpoint_id={hook['id']}")
        assert confirm.status_code == 200
        assert re.search(r"<strong>1</strong> failing or failed delivery matches", confirm.text)
        as_of = re.search(r'name="as_of" value="([^"]+)"', confirm.text)
        assert as_of is not None
        done = await ui.post(
            "/ui/deliveries/retry",
            data={
                "csrf": csrf,
                "status": "failing",
                "endpoint_id": hook["id"],
                "expected": "1",
                "as_of": as_of.group(1),
            },
        )
        assert done.status_code == 200, done.text
        assert re.search(r"Queued [01] deliver", done.text)
        # Confirmed fewer than match: nothing, and a page that says so.
        refused = await ui.post(
            "/ui/deliveries/retry", data={"csrf": csrf, "status": "troubled", "expected": "0"}
        )
        assert refused.status_code == 409
        assert "more than the 0 confirmed" in refused.text

    log = (await client.get("/v1/audit", headers={"Authorization": f"Bearer {OPS_KEY}"})).json()[
        "items"
    ]
    assert [(e["action"], e["actor"]) for e in log[:2]] == [
        ("delivery.bulk_retry", "tenant:acme"),
        ("delivery.retry", "tenant:acme"),
    ]


async def test_a_confirmed_bulk_retry_keeps_the_filters_own_end(
    ui: httpx.AsyncClient, client: httpx.AsyncClient, settings: Settings, engine: AsyncEngine
) -> None:
    """The confirmation's moment bounds what is retried, and so does the filter's
    `created_before` when it is earlier: a delivery after it is never queued."""
    async with _failing_delivery(client, settings, engine) as (_hook, _task):
        later = await register(client, 31339, provider="minimax")
        await client.delete(f"/v1/tasks/{later['id']}")

        async def both_failing() -> bool:
            items = (await client.get("/v1/deliveries", params={"status": "failing"})).json()
            return len(items["items"]) == 2

        await eventually(both_failing)
        newer, older = (await client.get("/v1/deliveries")).json()["items"]
        first = datetime.fromisoformat(older["created_at"])
        cut = first + (datetime.fromisoformat(newer["created_at"]) - first) / 2
        cut_field = cut.astimezone(UTC).replace(tzinfo=None).isoformat()
        csrf = await sign_in(ui, ACME_KEY, "/ui/deliveries")
        confirm = await ui.get(f"/ui/deliveries/retry?status=failing&created_before={cut_field}")
        assert re.search(r"<strong>1</strong> failing or failed delivery matches", confirm.text)
        as_of = re.search(r'name="as_of" value="([^"]+)"', confirm.text)
        assert as_of is not None
        done = await ui.post(
            "/ui/deliveries/retry",
            data={
                "csrf": csrf,
                "status": "failing",
                "created_before": cut_field,
                "expected": "1",
                "as_of": as_of.group(1),
            },
        )
        assert done.status_code == 200, done.text

        async def retried_once() -> bool:
            attempts = {
                d["id"]: d["attempts"] for d in (await client.get("/v1/deliveries")).json()["items"]
            }
            return bool(attempts[older["id"]] > older["attempts"])

        # The older delivery went out again (and the worker is idle when it stops).
        await eventually(retried_once)
        # Not a digit in ASCII: asked again, not a 500.
        odd = await ui.post(
            "/ui/deliveries/retry", data={"csrf": csrf, "status": "failing", "expected": "²"}
        )
        assert odd.status_code == 422


@pytest.mark.parametrize(
    "moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "not a time"]
)
async def test_times_without_a_utc_equivalent_are_no_server_error(
    ui: httpx.AsyncClient, client: httpx.AsyncClient, moment: str
) -> None:
    await sign_in(ui, ACME_KEY)
    for path, field in [
        ("/ui/tasks", "created_from"),
        ("/ui/tasks", "created_before"),
        ("/ui/deliveries", "created_after"),
        ("/ui/deliveries/retry", "created_before"),
    ]:
        page = await ui.get(path, params={field: moment})
        assert page.status_code < 500, (path, field, page.text)
    api = await client.get("/v1/deliveries", params={"created_after": moment})
    assert api.status_code == 422, api.text


async def test_a_read_only_operator_sees_disabled_buttons_and_is_refused(
    client: httpx.AsyncClient, settings: Settings, engine: AsyncEngine
) -> None:
    async with (
        _failing_delivery(client, settings, engine) as (hook, _task),
        api_client(settings, engine, key=None) as reader,
    ):
        csrf = await sign_in(reader, READER_KEY, "/ui/deliveries")
        page = (await reader.get("/ui/deliveries")).text
        assert "read-only" in page
        assert 'disabled aria-describedby="read-only">Retry</button>' in page
        endpoint_page = (await reader.get(f"/ui/endpoints/{hook['id']}")).text
        for label in ("Disable", "Send test event", "Rotate secret"):
            assert f'disabled aria-describedby="read-only">{label}</button>' in endpoint_page
        [delivery] = (await client.get("/v1/deliveries")).json()["items"]
        for path, data in (
            (f"/ui/deliveries/{delivery['id']}/retry", {}),
            ("/ui/deliveries/retry", {"status": "troubled", "expected": "1"}),
            (f"/ui/endpoints/{hook['id']}/enabled", {"enabled": "false"}),
            (f"/ui/endpoints/{hook['id']}/test", {}),
            (f"/ui/endpoints/{hook['id']}/rotate", {}),
        ):
            forced = await reader.post(path, data={"csrf": csrf, **data})
            assert forced.status_code == 403, path
            assert "read-only" in forced.text
    assert (await client.get(f"/v1/webhooks/{hook['id']}")).json()["secret"] == hook["secret"]
    log = (await client.get("/v1/audit", headers={"Authorization": f"Bearer {OPS_KEY}"})).json()[
        "items"
    ]
    assert [(e["actor"], e["result"]) for e in log[:5]] == [("operator:reader", "denied")] * 5


async def test_endpoint_pages_toggle_test_and_rotate(
    ui: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    hook = (await client.post("/v1/webhooks", json={"url": f"{DISCARD_URL}/hook"})).json()
    other = await client.post(
        "/v1/webhooks",
        json={"url": f"{DISCARD_URL}/other"},
        headers={"Authorization": f"Bearer {OTHER_KEY}"},
    )
    csrf = await sign_in(ui, ACME_KEY, "/ui/endpoints")
    listed = (await ui.get("/ui/endpoints")).text
    assert f'href="/ui/endpoints/{hook["id"]}"' in listed
    assert other.json()["id"] not in listed
    assert (await ui.get(f"/ui/endpoints/{other.json()['id']}")).status_code == 404

    tested = await ui.post(f"/ui/endpoints/{hook['id']}/test", data={"csrf": csrf})
    assert tested.headers["location"] == f"/ui/endpoints/{hook['id']}?done=tested"
    [test] = (await client.get("/v1/deliveries", params={"status": "all"})).json()["items"]
    assert test["event_type"] == "webhook.test"

    disabled = await ui.post(
        f"/ui/endpoints/{hook['id']}/enabled", data={"csrf": csrf, "enabled": "false"}
    )
    assert disabled.headers["location"] == f"/ui/endpoints/{hook['id']}?done=disabled"
    shown = (await ui.get(disabled.headers["location"])).text
    assert "disabled by tenant:acme" in shown
    assert ">Enable</button>" in shown
    refused = await ui.post(f"/ui/endpoints/{hook['id']}/test", data={"csrf": csrf})
    assert refused.status_code == 409

    rotated = await ui.post(f"/ui/endpoints/{hook['id']}/rotate", data={"csrf": csrf})
    assert rotated.status_code == 200
    secret = (await client.get(f"/v1/webhooks/{hook['id']}")).json()["secret"]
    assert secret != hook["secret"]
    assert f'value="{secret}"' in rotated.text
    assert "signed with both the old and the new secret" in rotated.text
    assert secret not in (await ui.get(f"/ui/endpoints/{hook['id']}")).text  # shown once

    log = (await client.get("/v1/audit", headers={"Authorization": f"Bearer {OPS_KEY}"})).json()[
        "items"
    ]
    assert [e["action"] for e in log[:3]] == [
        "webhook.rotate_secret",
        "webhook.update",
        "webhook.test",
    ]


async def test_the_audit_page_is_for_operators(
    ui: httpx.AsyncClient, client: httpx.AsyncClient, settings: Settings, engine: AsyncEngine
) -> None:
    hook = (await client.post("/v1/webhooks", json={"url": f"{DISCARD_URL}/hook"})).json()
    await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret")
    await sign_in(ui, ACME_KEY, "/ui/tasks")
    assert (await ui.get("/ui/audit")).status_code == 404
    assert 'href="/ui/audit"' not in (await ui.get("/ui/tasks")).text
    async with api_client(settings, engine, key=None) as ops:
        await sign_in(ops, OPS_KEY, "/ui/audit")
        page = (await ops.get("/ui/audit")).text
        assert "webhook.rotate_secret" in page
        assert f"webhook:{hook['id']}" in page
        assert "webhook.create" in page
        only = (await ops.get("/ui/audit?action=webhook.create")).text
        assert "webhook.rotate_secret" not in only
        nobody = (await ops.get("/ui/audit?actor=operator:nobody")).text
        assert "No entries match." in nobody
        bad = await ops.get("/ui/audit?cursor=nonsense")
        assert bad.status_code == 422
