"""S3BlobStore against a real S3 server (SeaweedFS, tests/seaweed.py)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import httpx
import pytest

from app.blobs.base import BlobError, BlobNotFound, InvalidKey
from app.blobs.s3 import S3BlobStore
from app.blobs.stores import open_store
from app.core.config import Settings
from tests.blobs import MIB, peak_rss_growth, write_random_file
from tests.seaweed import SeaweedS3, free_port_pairs


def store_on(server: SeaweedS3, *, secret: str | None = None, prefix: str = "") -> S3BlobStore:
    settings = Settings(
        archive={
            "url": f"s3://{server.bucket}/{prefix or uuid.uuid4().hex}",
            "endpoint_url": server.endpoint,
            "region": server.region,
            "access_key_id": server.access_key_id,
            "secret_access_key": secret or server.secret_access_key,
        }
    )
    store = open_store(settings)
    assert isinstance(store, S3BlobStore)
    return store


@pytest.fixture
def store(seaweed_s3: SeaweedS3) -> S3BlobStore:
    """A store under a prefix of its own, so tests never see each other's objects."""
    return store_on(seaweed_s3)


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "audio.mp3"
    # Over two 5 MiB parts: a multipart upload with a short last part.
    write_random_file(path, 11 * MIB + 17)
    return path


async def test_a_stored_file_downloads_byte_identical_from_its_link(
    store: S3BlobStore, audio: Path
) -> None:
    key = f"tasks/{uuid.uuid4()}/audio.mp3"
    await store.put_file(key, audio, content_type="audio/mpeg")
    url = await store.link(key, expires_in_s=300, content_type="audio/mpeg")
    assert url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient() as http:
        answer = await http.get(url)  # no credentials: the URL is the credential
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "audio/mpeg"
    expected = await asyncio.to_thread(audio.read_bytes)
    assert int(answer.headers["content-length"]) == len(expected)
    assert hashlib.sha256(answer.content).digest() == hashlib.sha256(expected).digest()


async def test_putting_again_replaces_the_object(store: S3BlobStore, tmp_path: Path) -> None:
    key = "tasks/x/subtitles.srt"
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"one")
    second.write_bytes(b"two, longer")
    await store.put_file(key, first, content_type="text/plain")
    await store.put_file(key, second, content_type="application/x-subrip")
    url = await store.link(key, expires_in_s=60, content_type="application/x-subrip")
    async with httpx.AsyncClient() as http:
        answer = await http.get(url)
    assert (answer.content, answer.headers["content-type"]) == (
        b"two, longer",
        "application/x-subrip",
    )


async def test_a_link_stops_working_when_it_expires(store: S3BlobStore, audio: Path) -> None:
    key = "tasks/x/audio.mp3"
    await store.put_file(key, audio, content_type="audio/mpeg")
    # X-Amz-Date has whole seconds: a link signed late in a second for 1 s lives barely
    # past the next second's start, and was dead before the first GET on a busy machine.
    url = await store.link(key, expires_in_s=3, content_type="audio/mpeg")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 200
        await asyncio.sleep(4.2)
        assert (await http.get(url)).status_code == 403


async def test_a_tampered_link_is_refused(store: S3BlobStore, audio: Path) -> None:
    await store.put_file("tasks/x/a.mp3", audio, content_type="audio/mpeg")
    await store.put_file("tasks/x/b.mp3", audio, content_type="audio/mpeg")
    url = await store.link("tasks/x/a.mp3", expires_in_s=300, content_type="audio/mpeg")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url.replace("/a.mp3?", "/b.mp3?"))).status_code == 403
        assert (
            await http.get(url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"))
        ).status_code == 403


async def test_exists_and_delete(store: S3BlobStore, audio: Path) -> None:
    keys = ["tasks/y/audio.mp3", "tasks/y/extra.json"]
    for key in keys:
        await store.put_file(key, audio, content_type="application/octet-stream")
    assert [await store.exists(key) for key in keys] == [True, True]
    await store.delete([*keys, "tasks/y/never-stored.bin"])  # a missing key is fine
    assert [await store.exists(key) for key in keys] == [False, False]
    await store.delete([])
    url = await store.link(keys[0], expires_in_s=60, content_type="audio/mpeg")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 404


async def test_a_large_file_is_streamed_not_held_in_memory(
    store: S3BlobStore, audio: Path, tmp_path: Path
) -> None:
    size = 50 * MIB
    path = tmp_path / "large.bin"
    head = write_random_file(path, size)
    key = "tasks/z/large.bin"
    # The first upload sets up the client and its runtime: not part of the file's cost.
    await store.put_file("tasks/z/warm-up.bin", audio, content_type="application/octet-stream")
    growth = await peak_rss_growth(
        store.put_file(key, path, content_type="application/octet-stream")
    )
    # Up to 4 parts of 5 MiB in flight plus the client's buffers (~15 MiB measured), whatever
    # the file's size; reading the file whole would add all 50.
    assert growth < size * 0.6, f"RSS grew by {growth / MIB:.1f} MiB for a 50 MiB file"
    url = await store.link(key, expires_in_s=60, content_type="application/octet-stream")
    async with httpx.AsyncClient() as http:
        # The first MiB, and the total size, without holding 50 MiB in the test either.
        answer = await http.get(url, headers={"Range": f"bytes=0-{MIB - 1}"})
    assert answer.content == head
    assert answer.headers["content-range"] == f"bytes 0-{MIB - 1}/{size}"


async def test_an_unreachable_store_raises_blob_error(seaweed_s3: SeaweedS3, audio: Path) -> None:
    (closed,) = free_port_pairs(1)  # nothing listens there
    store = S3BlobStore(
        bucket=seaweed_s3.bucket,
        prefix="",
        endpoint_url=f"http://127.0.0.1:{closed}",
        region=seaweed_s3.region,
        access_key_id=seaweed_s3.access_key_id,
        secret_access_key=seaweed_s3.secret_access_key,
    )
    for call in (
        store.put_file("tasks/x/a.mp3", audio, content_type="audio/mpeg"),
        store.exists("tasks/x/a.mp3"),
        store.delete(["tasks/x/a.mp3"]),
    ):
        with pytest.raises(BlobError) as info:
            await call
        assert info.value.reason == "unreachable"
        assert "Debug source" not in str(info.value)


async def test_wrong_credentials_are_denied(seaweed_s3: SeaweedS3, audio: Path) -> None:
    store = store_on(seaweed_s3, secret="not-the-secret")
    with pytest.raises(BlobError) as info:
        await store.put_file("tasks/x/a.mp3", audio, content_type="audio/mpeg")
    assert info.value.reason == "denied"
    assert "not-the-secret" not in str(info.value)


async def test_a_missing_source_file_is_a_blob_error_of_its_own(
    store: S3BlobStore, tmp_path: Path
) -> None:
    with pytest.raises(BlobError) as info:
        await store.put_file("tasks/x/a.mp3", tmp_path / "gone", content_type="audio/mpeg")
    assert not isinstance(info.value, BlobNotFound)
    assert info.value.reason == "other"


@pytest.mark.parametrize("key", ["", "/tasks/a", "tasks/../a", "tasks/.hidden", "a b", "a//b"])
async def test_an_invalid_key_is_refused_before_any_request(
    store: S3BlobStore, audio: Path, key: str
) -> None:
    with pytest.raises(InvalidKey):
        await store.put_file(key, audio, content_type="audio/mpeg")
    with pytest.raises(InvalidKey):
        await store.link(key, expires_in_s=60, content_type="audio/mpeg")
