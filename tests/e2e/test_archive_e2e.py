"""The archive end to end, for both backends: a consumer that comes back after the
provider's download URL died (its lifetime compressed by the sandbox from MiniMax's 9 hours
to seconds) still downloads the audio, byte-identical to what the provider served, from the
webhook it received and from `GET /v1/tasks/{id}`. Real processes and real HTTP: the
sandbox, a `pollhook worker`, the API under uvicorn, a webhook receiver and, for S3, a
SeaweedFS server."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.main import create_app
from tests.e2e.conftest import FAST_ENGINE, Sandbox, Worker, provider_settings
from tests.helpers import ACME_KEY, eventually, free_port
from tests.seaweed import SeaweedS3
from tests.webhooks.receiver import Receiver, start_server, stop_server

URL_TTL_S = 4.0  # MiniMax: 9 hours


@pytest.fixture(params=["file", "s3"])
def archive_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The archive's settings, as environment variables, for one backend."""
    if request.param == "file":
        yield {"POLLHOOK_ARCHIVE__URL": f"file://{tmp_path / 'archive'}"}
        return
    s3: SeaweedS3 = request.getfixturevalue("seaweed_s3")
    yield {
        "POLLHOOK_ARCHIVE__URL": f"s3://{s3.bucket}/e2e-{tmp_path.name}",
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
    }


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def env(archive_env: dict[str, str], api_port: int) -> dict[str, str]:
    """What the API and the worker share: the archive, the public URL its file links use,
    and loopback opened for the sandbox's downloads (the archive's own allow-list) and the
    receiver's webhooks."""
    return {
        **archive_env,
        "POLLHOOK_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        "POLLHOOK_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "POLLHOOK_ARCHIVE__ALLOW_NETWORKS": "127.0.0.0/8",
    }


@pytest.fixture
def settings(
    database_url: str, sandbox_server: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}],
        providers=provider_settings(sandbox_server),
        engine=FAST_ENGINE,
    )


@pytest_asyncio.fixture
async def api(settings: Settings, engine: AsyncEngine, api_port: int) -> AsyncIterator[str]:
    """The API under a real uvicorn: consumers follow the file backend's links to it."""
    server, task = await start_server(create_app(settings, engine=engine), api_port)
    yield f"http://127.0.0.1:{api_port}"
    await stop_server(server, task)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def member(tar_bytes: bytes, suffix: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        (found,) = [m for m in tar if m.isreg() and m.name.endswith(suffix)]
        extracted = tar.extractfile(found)
        assert extracted is not None
        return extracted.read()


def file_of(task: dict[str, Any], kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [f for f in task["result"]["archive"] if f["kind"] == kind]
    assert len(found) == 1, task["result"]["archive"]
    return found[0]


async def test_a_consumer_back_after_the_url_died_still_gets_the_audio(
    api: str,
    env: dict[str, str],
    sandbox: Sandbox,
    receiver: Receiver,
    start_worker: Callable[..., Worker],
) -> None:
    http = httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {ACME_KEY}"})
    consumer = httpx.AsyncClient()  # no key: links are their own credential
    created = await http.post("/v1/webhooks", json={"url": receiver.url("/hook")})
    assert created.status_code == 201, created.text
    start_worker(extra_env=env)
    upstream = sandbox.task(provider="minimax", duration_s=0.3, url_ttl_s=URL_TTL_S)
    registered = await http.post(
        "/v1/tasks", json={"provider": "minimax", "external_id": upstream["id"]}
    )
    assert registered.status_code == 201, registered.text

    async def delivered() -> bool:
        return bool(receiver.at("/hook"))

    await eventually(delivered, within_s=30)
    (hook,) = receiver.at("/hook")
    event = json.loads(hook.body)
    assert event["type"] == "task.succeeded"
    task = event["data"]
    # The event waited for the archive, and went out with it.
    assert task["archive"]["status"] == "archived"
    assert {f["kind"] for f in task["result"]["archive"]} == {"audio", "subtitle", "extra"}
    provider_url = task["result"]["download_url"]
    served = await consumer.get(provider_url)
    assert served.status_code == 200
    audio = member(served.content, ".mp3")

    async def provider_url_dead() -> bool:
        return (await consumer.get(provider_url)).status_code == 403

    await eventually(provider_url_dead, within_s=URL_TTL_S + 10)

    from_webhook = file_of(task, "audio")
    shown = (await http.get(f"/v1/tasks/{task['id']}")).json()
    from_get = file_of(shown, "audio")
    again = await http.post(
        "/v1/tasks", json={"provider": "minimax", "external_id": upstream["id"]}
    )
    assert again.status_code == 200  # registered before: the task as it stands
    from_registration = file_of(again.json(), "audio")
    for entry in (from_webhook, from_get, from_registration):
        download = await consumer.get(entry["url"])
        assert download.status_code == 200
        assert download.content == audio
        assert entry["sha256"] == hashlib.sha256(audio).hexdigest()
        assert entry["bytes"] == len(audio)
        assert entry["content_type"] == "audio/mpeg"
    assert from_get["url_expires_at"] >= from_webhook["url_expires_at"]
    subtitles = (await consumer.get(file_of(shown, "subtitle")["url"])).content
    assert subtitles == member(served.content, ".titles")
    await http.aclose()
    await consumer.aclose()
