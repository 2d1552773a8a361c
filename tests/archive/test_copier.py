"""One result file copied into a real local store from a real `pollhook sandbox` over HTTP,
through the SSRF guard: the bytes the provider served, hashed and typed; MiniMax's tar
unpacked; and every way a copy fails, with the reason its retries go by."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from starlette.responses import RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from app.archive.copier import Copier, CopyError, Source
from app.archive.retries import Reason
from app.archive.worker import download_client
from app.blobs.local import LocalBlobStore
from app.blobs.views import StoredFile
from app.core.config import Settings
from app.sandbox.media import jimmy_audio, minimax_members
from tests.helpers import eventually, free_port
from tests.sandbox.support import sandbox_command
from tests.webhooks.receiver import start_server, stop_server

TASK = uuid.UUID(int=7)
KEY = "sandbox-key"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    with sandbox_command("--minimax-rate", "0", "--jimmy-rate", "0") as (_, base):
        yield base


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "archive", public_url="http://127.0.0.1:1", link_key=b"k" * 32)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The archive's own download client, with only the sandbox's address allowed."""
    http = download_client(Settings(archive={"allow_networks": ["127.0.0.1/32"]}))
    yield http
    await http.aclose()


def script(sandbox: str, **fields: Any) -> dict[str, Any]:
    created = httpx.post(f"{sandbox}/_sandbox/tasks", json={"duration_s": 0, **fields})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def jimmy_urls(sandbox: str, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    task = script(sandbox, provider="jimmy", model="audio", **fields)
    answer = httpx.get(
        f"{sandbox}/api/open-api/v1/audios/{task['id']}",
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    return task, answer["data"]


def minimax_url(sandbox: str, **fields: Any) -> tuple[dict[str, Any], str]:
    task = script(sandbox, provider="minimax", **fields)
    headers = {"Authorization": f"Bearer {KEY}"}
    query = httpx.get(
        f"{sandbox}/v1/query/t2a_async_query_v2", params={"task_id": task["id"]}, headers=headers
    ).json()
    retrieved = httpx.get(
        f"{sandbox}/v1/files/retrieve", params={"file_id": query["file_id"]}, headers=headers
    ).json()
    return task, str(retrieved["file"]["download_url"])


async def stored_bytes(store: LocalBlobStore, file: StoredFile) -> bytes:
    link = urlsplit(await store.link(file["key"], expires_in_s=60, content_type=""))
    query = parse_qs(link.query)
    found = await store.resolve(file["key"], int(query["expires"][0]), query["signature"][0])
    assert found.content_type == file["content_type"]
    return found.path.read_bytes()


async def test_a_file_is_copied_as_served(
    sandbox: str, store: LocalBlobStore, client: httpx.AsyncClient
) -> None:
    task, data = jimmy_urls(sandbox, result_bytes=200_000, subtitles=True)
    served = jimmy_audio(task["id"], 200_000).read()

    [file] = await Copier(client, store, max_bytes=10**6).copy(
        "acme", TASK, Source("audio", data["audioUrl"]), set()
    )

    assert file["kind"] == "audio"
    assert file["name"] == f"{task['id']}.mp3"
    assert file["key"] == f"acme/{TASK}/{task['id']}.mp3"
    assert file["bytes"] == len(served)
    assert file["sha256"] == hashlib.sha256(served).hexdigest()
    assert file["content_type"] == "audio/mpeg"
    assert await stored_bytes(store, file) == served


async def test_a_bundle_becomes_its_members(
    sandbox: str, store: LocalBlobStore, client: httpx.AsyncClient
) -> None:
    task, url = minimax_url(sandbox, result_bytes=20_000)
    members = {
        Path(name).name: generated.read()
        for name, generated in minimax_members(str(task["id"]), 20_000).items()
    }

    files = await Copier(client, store, max_bytes=10**6).copy(
        "acme", TASK, Source("bundle", url), {f"content-{task['id']}.extra"}
    )

    kinds = {f["kind"]: f for f in files}
    assert set(kinds) == {"audio", "subtitle", "extra"}
    assert kinds["audio"]["content_type"] == "audio/mpeg"
    assert kinds["subtitle"]["content_type"] == "application/json"
    # A name already taken in the task is made unique, not overwritten.
    assert kinds["extra"]["name"] == f"2-content-{task['id']}.extra"
    for file in files:
        original = members[file["name"].removeprefix("2-")]
        assert await stored_bytes(store, file) == original
        assert file["sha256"] == hashlib.sha256(original).hexdigest()


@pytest.mark.parametrize(
    ("fields", "source_kind", "max_bytes", "reason"),
    [
        # Over the cap: announced by Content-Length.
        ({"result_bytes": 50_000}, "audio", 10_000, Reason.TOO_LARGE),
        # A 503, then a body cut short of its Content-Length.
        ({"failed_downloads": 1}, "audio", 10**6, Reason.HTTP_ERROR),
        ({"cut_downloads": 1}, "audio", 10**6, Reason.UNREACHABLE),
        # An MP3 where a tar was promised.
        ({}, "bundle", 10**6, Reason.BAD_BUNDLE),
    ],
)
async def test_a_failed_copy_says_why_and_stores_nothing(
    sandbox: str,
    store: LocalBlobStore,
    client: httpx.AsyncClient,
    tmp_path: Path,
    fields: dict[str, Any],
    source_kind: str,
    max_bytes: int,
    reason: Reason,
) -> None:
    _, data = jimmy_urls(sandbox, **fields)

    with pytest.raises(CopyError) as failed:
        await Copier(client, store, max_bytes=max_bytes).copy(
            "acme", TASK, Source(source_kind, data["audioUrl"]), set()
        )

    assert failed.value.reason is reason
    assert not list((tmp_path / "archive").rglob("*.mp3"))


async def test_a_retry_after_a_failed_download_copies_the_file(
    sandbox: str, store: LocalBlobStore, client: httpx.AsyncClient
) -> None:
    task, data = jimmy_urls(sandbox, failed_downloads=1, cut_downloads=1, result_bytes=30_000)
    copier = Copier(client, store, max_bytes=10**6)
    source = Source("audio", data["audioUrl"])
    for reason in (Reason.HTTP_ERROR, Reason.UNREACHABLE):
        with pytest.raises(CopyError) as failed:
            await copier.copy("acme", TASK, source, set())
        assert failed.value.reason is reason

    [file] = await copier.copy("acme", TASK, source, set())

    assert await stored_bytes(store, file) == jimmy_audio(task["id"], 30_000).read()


async def test_a_dead_url_is_an_http_error(
    sandbox: str, store: LocalBlobStore, client: httpx.AsyncClient
) -> None:
    """Past its expiry the provider's URL answers 403, as a signed object-store URL does:
    retried while the job's deadline allows (app/archive/retries.py)."""
    _, data = jimmy_urls(sandbox, url_ttl_s=0.01)
    await eventually(lambda: _status(data["audioUrl"], 403), within_s=5)

    with pytest.raises(CopyError) as failed:
        await Copier(client, store, max_bytes=10**6).copy(
            "acme", TASK, Source("audio", data["audioUrl"]), set()
        )

    assert failed.value.reason is Reason.HTTP_ERROR
    assert "403" in failed.value.message


async def _status(url: str, code: int) -> bool:
    async with httpx.AsyncClient() as http:
        return (await http.get(url)).status_code == code


@pytest.mark.parametrize(
    "url",
    [
        # Loopback outside the allowed 127.0.0.1/32: refused before connecting.
        "http://127.0.0.2:9/x.mp3",
        "http://10.0.0.1/x.mp3",
        "http://[::1]:9/x.mp3",
        "ftp://127.0.0.1/x.mp3",
    ],
)
async def test_a_url_at_a_private_address_is_refused(
    store: LocalBlobStore, client: httpx.AsyncClient, url: str
) -> None:
    with pytest.raises(CopyError) as failed:
        await Copier(client, store, max_bytes=10**6).copy("acme", TASK, Source("audio", url), set())

    assert failed.value.reason is Reason.REFUSED


async def test_a_redirect_to_a_private_address_is_refused(
    store: LocalBlobStore, client: httpx.AsyncClient
) -> None:
    """Each hop is checked as it connects: an allowed host that redirects inside is refused
    like a URL that points there."""

    async def redirect(scope: Scope, receive: Receive, send: Send) -> None:
        await RedirectResponse("http://10.0.0.1/x.mp3", status_code=302)(scope, receive, send)

    port = free_port()
    server, task = await start_server(redirect, port)
    try:
        with pytest.raises(CopyError) as failed:
            await Copier(client, store, max_bytes=10**6).copy(
                "acme", TASK, Source("audio", f"http://127.0.0.1:{port}/x.mp3"), set()
            )
    finally:
        await stop_server(server, task)
    assert failed.value.reason is Reason.REFUSED


def _tar(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _member(name: str, **pax: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.pax_headers = pax
    return info


def _gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # A pax header tarfile would read whole into memory.
        (_tar((_member("a.mp3", comment="x" * 200_000), b"ID3")), Reason.BAD_BUNDLE),
        # More entries than any provider's result has.
        (_tar(*[(_member(f"d{i}.txt"), b"") for i in range(300)]), Reason.BAD_BUNDLE),
        # Compressed: it could inflate without bound.
        (_gzipped(_tar((_member("a.mp3"), b"ID3"))), Reason.BAD_BUNDLE),
        # Folders, links and members with paths of their own are not files to keep.
        (_tar((_member("../../etc/passwd"), b"root")), None),
    ],
)
async def test_a_hostile_bundle_is_refused_and_a_path_cut_to_its_name(
    store: LocalBlobStore, client: httpx.AsyncClient, body: bytes, reason: Reason | None
) -> None:
    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        await Response(body, media_type="application/x-tar")(scope, receive, send)

    port = free_port()
    server, task = await start_server(serve, port)
    source = Source("bundle", f"http://127.0.0.1:{port}/r.tar")
    try:
        if reason is None:
            [file] = await Copier(client, store, max_bytes=10**6).copy("acme", TASK, source, set())
            assert file["key"] == f"acme/{TASK}/passwd"
            assert await stored_bytes(store, file) == b"root"
            return
        with pytest.raises(CopyError) as failed:
            await Copier(client, store, max_bytes=10**6).copy("acme", TASK, source, set())
        assert failed.value.reason is reason
    finally:
        await stop_server(server, task)
