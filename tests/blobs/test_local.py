"""LocalBlobStore: the embedded archive in a folder, and its signed links."""

from __future__ import annotations

import asyncio
import stat
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.blobs.base import BlobError, BlobNotFound, InvalidKey
from app.blobs.local import (
    LINK_KEY_FILE,
    ExpiredLink,
    InvalidLink,
    LocalBlobStore,
    load_link_key,
)
from app.blobs.stores import open_store
from app.core.config import Settings
from tests.blobs import MIB, peak_rss_growth, write_random_file

PUBLIC_URL = "http://127.0.0.1:8000"
AUDIO_BYTES = 6 * MIB + 5


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def store(root: Path, clock: Clock) -> LocalBlobStore:
    return LocalBlobStore(root, public_url=PUBLIC_URL, link_key=b"k" * 32, clock=clock)


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "audio.mp3"
    write_random_file(path, AUDIO_BYTES)
    return path


def on_one_disk(path: Path, root: Path) -> bool:
    return path.parent == root.resolve() and path.stat().st_dev == root.stat().st_dev


def on_another_disk(path: Path, root: Path) -> bool:
    root.mkdir(parents=True, exist_ok=True)
    return path.is_dir() and path.stat().st_dev != root.stat().st_dev


def same_bytes(one: Path, other: Path) -> bool:
    return one.read_bytes() == other.read_bytes()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def link_parts(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return (
        parts.path.removeprefix("/v1/archive/files/"),
        int(query["expires"][0]),
        query["signature"][0],
    )


async def test_a_stored_file_resolves_from_its_link(
    store: LocalBlobStore, audio: Path, root: Path, clock: Clock
) -> None:
    key = f"tasks/{uuid.uuid4()}/audio.mp3"
    await store.put_file(key, audio, content_type="audio/mpeg")
    url = await store.link(key, expires_in_s=3600, content_type="audio/mpeg")
    assert url.startswith(f"{PUBLIC_URL}/v1/archive/files/{key}?expires=")
    link_key, expires, signature = link_parts(url)
    assert (link_key, expires) == (key, int(clock.now) + 3600)
    found = await store.resolve(link_key, expires, signature)
    assert found.path == (root / key).resolve()
    assert (found.content_type, found.size) == ("audio/mpeg", AUDIO_BYTES)
    assert same_bytes(found.path, audio)


async def test_putting_again_replaces_the_file_and_its_type(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"one")
    second.write_bytes(b"two, longer")
    await store.put_file("tasks/x/s.srt", first, content_type="text/plain")
    await store.put_file("tasks/x/s.srt", second, content_type="application/x-subrip")
    url = await store.link("tasks/x/s.srt", expires_in_s=60, content_type="application/x-subrip")
    found = await store.resolve(*link_parts(url))
    assert (found.path.read_bytes(), found.content_type) == (b"two, longer", "application/x-subrip")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda k, e, s: (k, e, s), None),
        (lambda k, e, s: (k, e, s.upper()), None),  # hex is hex, whatever its case
        (lambda k, e, s: (k, e + 1, s), InvalidLink),
        (lambda k, e, s: ("tasks/x/other.mp3", e, s), InvalidLink),
        (lambda k, e, s: (k, e, s[:-1] + ("0" if s[-1] != "0" else "1")), InvalidLink),
        (lambda k, e, s: (k, e, ""), InvalidLink),
        (lambda k, e, s: (k, e, "not hex at all"), InvalidLink),
        (lambda k, e, s: ("tasks/../x/a.mp3", e, s), InvalidLink),
        (lambda k, e, s: (".link-key", e, s), InvalidLink),
    ],
)
async def test_resolve_checks_the_signature(
    store: LocalBlobStore,
    audio: Path,
    change: object,
    error: type[BlobError] | None,
) -> None:
    await store.put_file("tasks/x/a.mp3", audio, content_type="audio/mpeg")
    await store.put_file("tasks/x/other.mp3", audio, content_type="audio/mpeg")
    url = await store.link("tasks/x/a.mp3", expires_in_s=60, content_type="audio/mpeg")
    assert callable(change)
    key, expires, signature = change(*link_parts(url))
    if error is None:
        assert (await store.resolve(key, expires, signature)).size == AUDIO_BYTES
    else:
        with pytest.raises(error):
            await store.resolve(key, expires, signature)


async def test_a_link_expires(store: LocalBlobStore, audio: Path, clock: Clock) -> None:
    await store.put_file("tasks/x/a.mp3", audio, content_type="audio/mpeg")
    url = await store.link("tasks/x/a.mp3", expires_in_s=60, content_type="audio/mpeg")
    clock.now += 59.9
    await store.resolve(*link_parts(url))
    clock.now += 0.1
    with pytest.raises(ExpiredLink):
        await store.resolve(*link_parts(url))


async def test_a_deleted_file_is_missing_to_a_valid_link(
    store: LocalBlobStore, audio: Path, root: Path
) -> None:
    keys = ["tasks/y/audio.mp3", "tasks/y/extra.json"]
    for key in keys:
        await store.put_file(key, audio, content_type="audio/mpeg")
    url = await store.link(keys[0], expires_in_s=60, content_type="audio/mpeg")
    assert [await store.exists(key) for key in keys] == [True, True]
    await store.delete([*keys, "tasks/y/never-stored.bin"])  # a missing key is fine
    assert [await store.exists(key) for key in keys] == [False, False]
    with pytest.raises(BlobNotFound):
        await store.resolve(*link_parts(url))
    # Nothing is left of the task: neither its files, their types, nor its folders.
    assert tree(root) == []


async def test_a_large_file_is_streamed_not_held_in_memory(
    store: LocalBlobStore, audio: Path, tmp_path: Path
) -> None:
    size = 50 * MIB
    path = tmp_path / "large.bin"
    write_random_file(path, size)
    # The first upload sets up obstore's runtime: not part of the file's cost.
    await store.put_file("tasks/z/warm-up.bin", audio, content_type="audio/mpeg")
    growth = await peak_rss_growth(
        store.put_file("tasks/z/large.bin", path, content_type="application/octet-stream")
    )
    # Up to 4 parts of 5 MiB in flight (~15 MiB measured), whatever the file's size.
    assert growth < size * 0.6, f"RSS grew by {growth / MIB:.1f} MiB for a 50 MiB file"
    assert await store.exists("tasks/z/large.bin")


async def test_a_missing_source_file_is_a_blob_error_of_its_own(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    with pytest.raises(BlobError) as info:
        await store.put_file("tasks/x/a.mp3", tmp_path / "gone", content_type="audio/mpeg")
    assert not isinstance(info.value, BlobNotFound)
    assert info.value.reason == "other"


@pytest.mark.parametrize(
    "key", ["", "/tasks/a", "tasks/../a", ".link-key", ".types/tasks/a", "a b", "a//b", "ä"]
)
async def test_an_invalid_key_is_refused(store: LocalBlobStore, audio: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put_file(key, audio, content_type="audio/mpeg")
    with pytest.raises(InvalidKey):
        await store.link(key, expires_in_s=60, content_type="audio/mpeg")
    with pytest.raises(InvalidKey):
        await store.delete([key])


def test_the_link_key_is_created_once_private_and_shared(root: Path) -> None:
    keys: list[bytes] = []
    # Processes starting together: every one ends up with the same key.
    threads = [threading.Thread(target=lambda: keys.append(load_link_key(root))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1
    assert len(keys[0]) == 32
    path = root / LINK_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in root.iterdir()) == [LINK_KEY_FILE]  # no staging files left
    assert load_link_key(root) == keys[0]


async def test_stores_on_one_folder_accept_each_others_links(tmp_path: Path, audio: Path) -> None:
    settings = Settings(data_dir=tmp_path, archive={"url": "file://"}, port=9000)
    writer, reader = open_store(settings), open_store(settings)
    assert isinstance(writer, LocalBlobStore)
    assert isinstance(reader, LocalBlobStore)
    assert (tmp_path / "archive" / LINK_KEY_FILE).is_file()
    await writer.put_file("tasks/x/a.mp3", audio, content_type="audio/mpeg")
    url = await writer.link("tasks/x/a.mp3", expires_in_s=60, content_type="audio/mpeg")
    assert url.startswith("http://127.0.0.1:9000/v1/archive/files/tasks/x/a.mp3?")
    assert (await reader.resolve(*link_parts(url))).size == AUDIO_BYTES


async def test_a_configured_link_secret_signs_instead_of_the_key_file(
    tmp_path: Path, audio: Path
) -> None:
    def settings(folder: str) -> Settings:
        return Settings(
            archive={"url": f"file://{tmp_path / folder}", "link_secret": "s" * 32},
            public_url="https://127.0.0.1:8443/pollhook",
        )

    one, two = open_store(settings("one")), open_store(settings("two"))
    assert isinstance(one, LocalBlobStore)
    assert isinstance(two, LocalBlobStore)
    assert not (tmp_path / "one" / LINK_KEY_FILE).exists()
    await one.put_file("tasks/x/a.mp3", audio, content_type="audio/mpeg")
    await two.put_file("tasks/x/a.mp3", audio, content_type="audio/mpeg")
    url = await one.link("tasks/x/a.mp3", expires_in_s=60, content_type="audio/mpeg")
    assert url.startswith("https://127.0.0.1:8443/pollhook/v1/archive/files/")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    found = await two.resolve(
        parts.path.removeprefix("/pollhook/v1/archive/files/"),
        int(query["expires"][0]),
        query["signature"][0],
    )
    assert found.path == (tmp_path / "two" / "tasks/x/a.mp3").resolve()


def test_the_archive_off_opens_no_store() -> None:
    assert open_store(Settings()) is None


async def test_links_expire_on_the_wall_clock(tmp_path: Path, audio: Path) -> None:
    store = LocalBlobStore(tmp_path, public_url=PUBLIC_URL, link_key=b"k" * 32)
    await store.put_file("tasks/x/a.mp3", audio, content_type="audio/mpeg")
    url = await store.link("tasks/x/a.mp3", expires_in_s=1, content_type="audio/mpeg")
    await store.resolve(*link_parts(url))
    await asyncio.sleep(max(0.0, link_parts(url)[1] - time.time()) + 0.05)
    with pytest.raises(ExpiredLink):
        await store.resolve(*link_parts(url))


async def test_a_spooled_file_is_linked_into_place_not_copied(
    store: LocalBlobStore, root: Path
) -> None:
    """Written in the store's spool folder, a file is put by a hard link: no byte is copied,
    and removing the spool file afterwards leaves the object whole."""
    spool = store.spool_dir()
    assert spool is not None
    assert on_one_disk(spool, root)
    path = spool / "audio.mp3"
    write_random_file(path, AUDIO_BYTES)
    content = path.read_bytes()

    await store.put_file("tasks/abc/audio.mp3", path, content_type="audio/mpeg")

    stored = root / "tasks" / "abc" / "audio.mp3"
    assert stored.stat().st_ino == path.stat().st_ino
    path.unlink()
    assert stored.read_bytes() == content
    assert ".spool" not in [p.name for p in (root / "tasks").rglob("*")]


async def test_a_file_on_another_disk_is_copied(store: LocalBlobStore, root: Path) -> None:
    """Where a link cannot be made (another file system), the file is copied instead."""
    other = Path("/dev/shm")
    if not on_another_disk(other, root):
        pytest.skip("no second file system to put a file from")
    path = other / f"pollhook-test-{uuid.uuid4().hex}.mp3"
    write_random_file(path, AUDIO_BYTES)
    try:
        await store.put_file("tasks/abc/audio.mp3", path, content_type="audio/mpeg")
        stored = root / "tasks" / "abc" / "audio.mp3"
        assert stored.stat().st_ino != path.stat().st_ino
        assert same_bytes(stored, path)
    finally:
        path.unlink()
