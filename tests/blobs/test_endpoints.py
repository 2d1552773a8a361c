"""GET /v1/archive/files/{key}: the download route of a file:// archive's links."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.blobs.local import LocalBlobStore
from app.core.config import Settings
from app.main import create_app
from tests.blobs import MIB, write_random_file
from tests.helpers import app_client, assert_error

# The test client's own base URL, so a link is fetched from the app under test as it is.
PUBLIC_URL = "http://pollhook.test"
ROUTE = "/v1/archive/files/{key}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        archive={"url": f"file://{tmp_path / 'archive'}"},
        public_url=PUBLIC_URL,
        log_format="json",
    )


@pytest_asyncio.fixture
async def served(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, LocalBlobStore]]:
    """A client without an API key, and the store of the app it talks to."""
    app = create_app(settings, engine=engine)
    store = app.state.pollhook.blobs
    assert isinstance(store, LocalBlobStore)
    async with app_client(app, key=None) as http:
        yield http, store


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "audio.mp3"
    write_random_file(path, 2 * MIB + 3)
    return path


async def test_a_link_downloads_the_file_without_an_api_key(
    served: tuple[httpx.AsyncClient, LocalBlobStore], audio: Path
) -> None:
    http, store = served
    await store.put_file("tasks/abc/audio.mp3", audio, content_type="audio/mpeg")
    url = await store.link("tasks/abc/audio.mp3", expires_in_s=600, content_type="audio/mpeg")
    answer = await http.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "audio/mpeg"
    assert int(answer.headers["content-length"]) == 2 * MIB + 3
    assert answer.content == await asyncio.to_thread(audio.read_bytes)
    assert "content-disposition" not in answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert str(audio.parent) not in str(answer.headers)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda url: re.sub(r"signature=(.)", _other_digit, url), "invalid"),
        (lambda url: url.replace("/audio.mp3?", "/other.mp3?"), "invalid"),
        (lambda url: url.replace("expires=", "expires=1"), "invalid"),
    ],
)
async def test_a_bad_signature_is_forbidden(
    served: tuple[httpx.AsyncClient, LocalBlobStore],
    audio: Path,
    change: object,
    reason: str,
) -> None:
    http, store = served
    await store.put_file("tasks/abc/audio.mp3", audio, content_type="audio/mpeg")
    await store.put_file("tasks/abc/other.mp3", audio, content_type="audio/mpeg")
    url = await store.link("tasks/abc/audio.mp3", expires_in_s=600, content_type="audio/mpeg")
    assert callable(change)
    error = assert_error(await http.get(change(url)), 403, "forbidden")
    assert error["details"] == {"reason": reason}


async def test_an_expired_link_is_forbidden(
    served: tuple[httpx.AsyncClient, LocalBlobStore], audio: Path
) -> None:
    http, store = served
    await store.put_file("tasks/abc/audio.mp3", audio, content_type="audio/mpeg")
    url = await store.link("tasks/abc/audio.mp3", expires_in_s=-1, content_type="audio/mpeg")
    error = assert_error(await http.get(url), 403, "forbidden")
    assert error == {
        "code": "forbidden",
        "message": "this link has expired",
        "details": {"reason": "expired"},
    }


async def test_a_deleted_file_is_not_found_and_its_path_stays_private(
    served: tuple[httpx.AsyncClient, LocalBlobStore], audio: Path, tmp_path: Path
) -> None:
    http, store = served
    await store.put_file("tasks/abc/audio.mp3", audio, content_type="audio/mpeg")
    url = await store.link("tasks/abc/audio.mp3", expires_in_s=600, content_type="audio/mpeg")
    await store.delete(["tasks/abc/audio.mp3"])
    answer = await http.get(url)
    assert_error(answer, 404, "not_found")
    assert str(tmp_path) not in answer.text


@pytest.mark.parametrize(
    "query",
    ["", "?expires=1", "?signature=ab", "?expires=soon&signature=ab", "?expires=-1&signature=ab"],
)
async def test_a_link_without_its_parameters_is_invalid_input(
    served: tuple[httpx.AsyncClient, LocalBlobStore], query: str
) -> None:
    http, _ = served
    assert_error(
        await http.get(f"/v1/archive/files/tasks/abc/a.mp3{query}"), 422, "validation_error"
    )


@pytest.mark.parametrize("key", ["tasks/%2E%2E/x", ".link-key", ".types/tasks/abc/audio.mp3"])
async def test_no_link_reaches_outside_the_archive_or_its_bookkeeping(
    served: tuple[httpx.AsyncClient, LocalBlobStore], audio: Path, key: str
) -> None:
    http, store = served
    await store.put_file("tasks/abc/audio.mp3", audio, content_type="audio/mpeg")
    answer = await http.get(f"/v1/archive/files/{key}?expires=9999999999&signature={'0' * 64}")
    assert_error(answer, 403, "forbidden")


async def test_the_route_is_documented_without_bearer_auth(
    settings: Settings, engine: AsyncEngine
) -> None:
    operation = create_app(settings, engine=engine).openapi()["paths"][ROUTE]["get"]
    assert operation["security"] == []
    assert set(operation["responses"]) >= {"200", "403", "404", "422"}


@pytest.mark.parametrize(
    "archive",
    [{}, {"url": "s3://pollhook-archive", "endpoint_url": "http://127.0.0.1:9"}],
)
async def test_the_route_exists_only_for_a_file_archive(
    database_url: str, engine: AsyncEngine, archive: dict[str, str]
) -> None:
    app = create_app(Settings(database_url=database_url, archive=archive), engine=engine)
    assert ROUTE not in app.openapi()["paths"]
    async with app_client(app, key=None) as http:
        answer = await http.get("/v1/archive/files/tasks/a/b.mp3?expires=1&signature=ab")
    assert_error(answer, 404, "not_found")


def _other_digit(match: re.Match[str]) -> str:
    return "signature=" + ("1" if match.group(1) == "0" else "0")


async def test_a_signature_that_is_not_one_is_refused_before_it_is_checked(
    served: tuple[httpx.AsyncClient, LocalBlobStore], audio: Path
) -> None:
    """Not 64 hex digits (one non-ASCII character, or one digit too many): a 422, never a
    comparison."""
    http, store = served
    await store.put_file("tasks/abc/audio.mp3", audio, content_type="audio/mpeg")
    url = await store.link("tasks/abc/audio.mp3", expires_in_s=600, content_type="audio/mpeg")
    for bad in (re.sub(r"signature=[0-9a-f]+", "signature=%C3%A9", url), url + "0"):
        assert_error(await http.get(bad), 422, "validation_error")
