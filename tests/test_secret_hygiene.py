"""Secrets never leave through logs, error bodies or metrics.

One run drives every flow that handles a secret, with the engines live: a database API key
and static keys (good and bad), webhook endpoints created, read, changed and rotated, the
tenant signing secret, tasks polled at upstreams that need an API key (one of which echoes
the key back in its error), and signed deliveries. Everything the process writes is then
searched for every secret: all log output at DEBUG, every response body, and /metrics. The
only place a webhook secret may appear is its owner's create / read / change / rotate /
signing-secret responses.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook

from app.auth.service import create_key
from app.core.config import Settings
from app.core.db import create_sessionmaker, transaction
from app.core.logging import configure_logging
from app.core.redaction import Redactor
from app.polling.worker import PollWorker
from app.webhooks.delivery import DeliveryWorker
from tests.helpers import ACME_KEY, ADMIN_KEYS, NO_LINKS, OPS, OTHER_KEY, api_client, eventually
from tests.webhooks.receiver import Receiver

MINIMAX_KEY = "sk-minimax-upstream-secret-4f9c2e"
JIMMY_KEY = "sk-jimmy-upstream-secret-77ab01"
FAST = {"first_poll_delay_s": 0, "min_poll_interval_s": 0.05, "max_poll_interval_s": 0.2}

# (method, path) of the responses that carry a webhook secret to its owner.
OWNER_SECRET_ROUTES = [
    ("POST", re.compile(r"/v1/webhooks")),
    ("GET", re.compile(r"/v1/webhooks/[^/]+")),
    ("PATCH", re.compile(r"/v1/webhooks/[^/]+")),
    ("POST", re.compile(r"/v1/webhooks/[^/]+/rotate-secret")),
    ("GET", re.compile(r"/v1/signing-secret")),
]


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    key: str
    status: int
    text: str


pytestmark = pytest.mark.usefixtures("restore_logging")


def _succeeding_minimax(request: httpx.Request, download_url: str) -> httpx.Response:
    """A MiniMax whose every task has succeeded, its file at `download_url`."""
    if request.url.path == "/v1/files/retrieve":
        file_id = int(request.url.params["file_id"])
        file = {"file_id": file_id, "download_url": download_url, "filename": f"{file_id}.tar"}
        return httpx.Response(
            200, json={"file": file, "base_resp": {"status_code": 0, "status_msg": "success"}}
        )
    task_id = int(request.url.params["task_id"])
    return httpx.Response(
        200,
        json={
            "task_id": task_id,
            "status": "Success",
            "file_id": task_id + 1,
            "base_resp": {"status_code": 0, "status_msg": "success"},
        },
    )


def _upstream(
    seen_auth: set[str],
) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        seen_auth.add(request.headers.get("authorization", ""))
        if request.url.host == "jm.test":
            # An upstream that quotes the credential it refused.
            return httpx.Response(
                401, json={"code": 20001, "msg": f"invalid api key {JIMMY_KEY}", "data": None}
            )
        return _succeeding_minimax(request, "https://cdn.example/f")

    return handle


def _forms(secret: str) -> list[str]:
    """A secret and the encodings it could leak in: for whsec_ secrets the base64 payload,
    the raw key bytes as hex, and base64url."""
    forms = [secret]
    if secret.startswith("whsec_"):
        payload = secret.removeprefix("whsec_")
        raw = base64.b64decode(payload)
        forms += [payload, raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]
    return forms


async def test_no_secret_leaks(
    database_url: str,
    engine: AsyncEngine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}, {"tenant": "other", "key": OTHER_KEY}],
        webhook_allow_networks=[ipaddress.ip_network("127.0.0.0/8")],
        providers={
            "minimax": {
                "kind": "minimax_t2a",
                "base_url": "https://mm.test",
                "api_key": MINIMAX_KEY,
                "rate_limit_per_s": 0,
                **FAST,
            },
            "jimmy": {
                "kind": "jimmy_soundclone",
                "base_url": "https://jm.test",
                "api_key": JIMMY_KEY,
                **FAST,
            },
        },
        engine={"tick_s": 0.05, "auth_retry_s": 0.2, "shutdown_grace_s": 1},
        webhooks={"retry_schedule_s": [0, 0.2], "timeout_s": 2},
        log_format="json",
        log_level="DEBUG",
    )
    configure_logging("json", "DEBUG")
    async with transaction(create_sessionmaker(engine)) as session:
        db_key = (await create_key(session, "dbtenant", "hygiene")).key

    exchanges: list[Exchange] = []
    receiver = Receiver()
    await receiver.start()
    seen_auth: set[str] = set()
    poller = PollWorker(settings, engine, transport=httpx.MockTransport(_upstream(seen_auth)))
    deliverer = DeliveryWorker(settings, engine, "hygiene", NO_LINKS)
    async with api_client(settings, engine, key=None) as http:

        async def call(
            method: str, path: str, key: str | None, json: object = None
        ) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
            response = await http.request(method, path, json=json, headers=headers)
            exchanges.append(Exchange(method, path, key or "", response.status_code, response.text))
            return response

        # Keys: good, a near miss of each, malformed.
        assert (await call("GET", "/v1/tasks", db_key)).status_code == 200
        for bad in (db_key + "x", db_key[:-1], ACME_KEY.upper(), f"{ACME_KEY} {OTHER_KEY}"):
            assert (await call("GET", "/v1/tasks", bad)).status_code == 401
        await call("GET", "/v1/tasks", None)

        # Webhook endpoints and secrets, and the other tenant trying to reach them.
        hook = (await call("POST", "/v1/webhooks", ACME_KEY, {"url": receiver.url("/h")})).json()
        first_secret = hook["secret"]
        rotated = (await call("POST", f"/v1/webhooks/{hook['id']}/rotate-secret", ACME_KEY)).json()
        await call("GET", f"/v1/webhooks/{hook['id']}", ACME_KEY)
        await call("PATCH", f"/v1/webhooks/{hook['id']}", ACME_KEY, {"description": "x"})
        await call("GET", "/v1/webhooks", ACME_KEY)
        tenant_secret = (await call("GET", "/v1/signing-secret", ACME_KEY)).json()["secret"]
        other_secret = (await call("GET", "/v1/signing-secret", OTHER_KEY)).json()["secret"]
        for method in ("GET", "PATCH", "DELETE"):
            await call(method, f"/v1/webhooks/{hook['id']}", OTHER_KEY, {"enabled": False})
        await call("POST", f"/v1/webhooks/{hook['id']}/rotate-secret", OTHER_KEY)
        await call("POST", "/v1/webhooks", ACME_KEY, {"url": receiver.url("/h"), "secret": "s"})

        # Tasks at both upstreams, one with a per-task callback signed by the tenant secret.
        minimax_task = (
            await call(
                "POST",
                "/v1/tasks",
                ACME_KEY,
                {"provider": "minimax", "external_id": 41, "callback_url": receiver.url("/cb")},
            )
        ).json()
        await call("POST", "/v1/tasks", ACME_KEY, {"provider": "jimmy", "external_id": "j-1"})
        await call("POST", "/v1/tasks", ACME_KEY, {"provider": "nope", "external_id": 1})

        await poller.start()
        deliverer.start()
        try:

            async def delivered() -> bool:
                return bool(receiver.at("/h") and receiver.at("/cb"))

            async def jimmy_refused() -> bool:
                providers = (
                    await http.get("/v1/providers", headers={"Authorization": f"Bearer {ACME_KEY}"})
                ).json()
                jimmy = next(p for p in providers["items"] if p["name"] == "jimmy")
                return bool(jimmy["health"] == "auth_failed")

            await eventually(delivered)
            await eventually(jimmy_refused)
        finally:
            await poller.stop()
            await deliverer.stop()
            await receiver.stop()

        await call("GET", f"/v1/tasks/{minimax_task['id']}", ACME_KEY)
        await call("GET", f"/v1/tasks/{minimax_task['id']}/deliveries", ACME_KEY)
        await call("GET", "/v1/tasks", ACME_KEY)
        await call("GET", "/v1/providers", ACME_KEY)
        await call("GET", "/v1/providers", OTHER_KEY)
        metrics = (await call("GET", "/metrics", None)).text

    # The secrets were really in use: sent upstream, and signing what was delivered.
    assert {f"Bearer {MINIMAX_KEY}", f"Bearer {JIMMY_KEY}"} <= seen_auth
    Webhook(rotated["secret"]).verify(receiver.at("/h")[0].body, receiver.at("/h")[0].headers)
    Webhook(tenant_secret).verify(receiver.at("/cb")[0].body, receiver.at("/cb")[0].headers)

    logs = capsys.readouterr().err
    # The capture saw the API's, the poll engine's and the delivery engine's lines.
    for event in ("request", "provider_auth_failed", "webhook_attempt"):
        assert f'"event": "{event}"' in logs
    webhook_secrets = {first_secret: ACME_KEY, rotated["secret"]: ACME_KEY}
    webhook_secrets |= {tenant_secret: ACME_KEY, other_secret: OTHER_KEY}
    never_shown = [ACME_KEY, OTHER_KEY, db_key, MINIMAX_KEY, JIMMY_KEY]

    for secret in [*never_shown, *webhook_secrets]:
        for form in _forms(secret):
            assert form not in logs, f"a secret is in the logs: {form[:12]}..."
            assert form not in metrics, f"a secret is in /metrics: {form[:12]}..."
    for exchange in exchanges:
        where = f"{exchange.method} {exchange.path} -> {exchange.status}"
        for secret in never_shown:
            assert secret not in exchange.text, f"a key is in the response to {where}"
        for secret, owner in webhook_secrets.items():
            shown = any(form in exchange.text for form in _forms(secret))
            allowed = exchange.key == owner and any(
                exchange.method == method and pattern.fullmatch(exchange.path)
                for method, pattern in OWNER_SECRET_ROUTES
            )
            assert allowed or not shown, f"a webhook secret is in the response to {where}"


ESCAPED_KEY = "sk-jimmy/escaped-Secret-90ab"


def _quoting_upstream(request: httpx.Request) -> httpx.Response:
    """Upstreams that quote their key back in the spellings JSON allows, and a MiniMax whose
    result URL contains the text of its key (the README's sandbox key is `sandbox`)."""

    def quoting(status: int, body: dict[str, object], spelled: str) -> httpx.Response:
        text = json.dumps(body, ensure_ascii=False).replace(ESCAPED_KEY, spelled)
        return httpx.Response(status, text=text, headers={"content-type": "application/json"})

    if request.url.host == "refuses.test":  # the key refused: `\/` and `\uXXXX` escapes
        refusal = {"code": 20001, "msg": f"invalid api key {ESCAPED_KEY}", "data": None}
        return quoting(401, refusal, ESCAPED_KEY.replace("/", "\\/").replace("S", "\\u0053"))
    if request.url.host == "fails.test":  # a failed task whose error quotes the key
        data = {
            "id": request.url.path.rsplit("/", 1)[-1],
            "status": "failed",
            "model": "soundCloningAudio",
            "error": f"quota of {ESCAPED_KEY} exceeded",
        }
        every_char = "".join(f"\\u{ord(c):04x}" for c in ESCAPED_KEY)
        return quoting(200, {"code": 20000, "msg": "ok", "data": data}, every_char)
    file_id = request.url.params.get("file_id")
    url = f"http://127.0.0.1:8900/_sandbox/files/{file_id}.tar?expires=4102444800"
    return _succeeding_minimax(request, url)


async def test_a_key_quoted_in_any_encoding_is_cut_out_and_results_stay_intact(
    database_url: str, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key an upstream quotes back, JSON-escaped, leaves through no task error, provider
    error, webhook, stored answer or log line; and a result URL that merely contains the
    key's text (`/_sandbox/` with the key `sandbox`) reaches the consumer unchanged."""
    jimmy = {"kind": "jimmy_soundclone", "api_key": ESCAPED_KEY, **FAST}
    settings = Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}, {"tenant": "other", "key": OTHER_KEY}],
        admin_keys=ADMIN_KEYS,
        webhook_allow_networks=[ipaddress.ip_network("127.0.0.0/8")],
        providers={
            "minimax": {"base_url": "https://mm.test", "api_key": "sandbox", **FAST},
            "jimmy": {**jimmy, "base_url": "https://refuses.test"},
            "jimmy_b": {**jimmy, "base_url": "https://fails.test"},
        },
        engine={"tick_s": 0.05, "auth_retry_s": 60, "shutdown_grace_s": 1},
        webhooks={"retry_schedule_s": [0, 0.2], "timeout_s": 2},
        log_format="json",
        log_level="DEBUG",
    )
    configure_logging("json", "DEBUG")  # no secrets: the engine itself must cut the key
    receiver = Receiver()
    await receiver.start()
    poller = PollWorker(settings, engine, transport=httpx.MockTransport(_quoting_upstream))
    deliverer = DeliveryWorker(settings, engine, "hygiene", NO_LINKS)
    texts: list[str] = []
    async with api_client(settings, engine) as http:
        await http.post("/v1/webhooks", json={"url": receiver.url("/h"), "events": None})
        minimax = await http.post("/v1/tasks", json={"provider": "minimax", "external_id": 7})
        failed = await http.post("/v1/tasks", json={"provider": "jimmy_b", "external_id": "j-2"})
        waiting = await http.post("/v1/tasks", json={"provider": "jimmy", "external_id": "j-1"})
        await poller.start()
        deliverer.start()
        try:

            async def settled() -> bool:
                providers = (await http.get("/v1/providers")).json()["items"]
                refused = next(p for p in providers if p["name"] == "jimmy")
                return len(receiver.at("/h")) == 2 and refused["health"] == "auth_failed"

            await eventually(settled)
        finally:
            await poller.stop()
            await deliverer.stop()
            await receiver.stop()
        for task in (minimax, failed, waiting):
            texts.append((await http.get(f"/v1/tasks/{task.json()['id']}")).text)
        texts.append((await http.get("/v1/providers")).text)
        texts.append((await http.get("/v1/providers", headers=OPS)).text)
        texts.append(
            (await http.get("/v1/providers", headers={"Authorization": f"Bearer {OTHER_KEY}"})).text
        )
    async with engine.connect() as conn:
        stored = await conn.execute(
            text(
                "SELECT coalesce(last_response::text, '') || coalesce(error::text, '') "
                "|| coalesce(poll_error::text, '') FROM tasks "
                "UNION ALL SELECT coalesce(last_error, '') FROM provider_state "
                "UNION ALL SELECT payload::text FROM events"
            )
        )
        texts += [row[0] for row in stored]
    texts += [r.body.decode() for r in receiver.at("/h")]
    texts.append(capsys.readouterr().err)

    finder = Redactor([ESCAPED_KEY])
    for shown in texts:
        assert finder.text(shown) == shown, f"the key, in some spelling, is in: {shown[:300]}"
    assert "[redacted]" in texts[1]  # the failed task's error names the quota, not the key
    result = json.loads(texts[0])["result"]
    assert result["download_url"].startswith("http://127.0.0.1:8900/_sandbox/files/")
    assert "[redacted]" not in json.dumps(result)
