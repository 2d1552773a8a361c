"""Result files behind the providers' URLs, over real HTTP from `pollhook sandbox`: the exact
bytes `app.sandbox.media` makes, streamed, and refused once their URL expires.

Expiry as time passes runs in-process on a fake clock; everything else talks to the real
command over a socket.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psutil
import pytest
import pytest_asyncio

from app.sandbox.app import create_sandbox_app
from app.sandbox.media import (
    GeneratedFile,
    jimmy_audio,
    jimmy_subtitles,
    minimax_archive,
    minimax_member_names,
)
from app.sandbox.state import DOWNLOAD_URL_TTL_S, SandboxConfig
from tests.sandbox.support import FakeClock, decode_mp3, parse_mp3, sandbox_command

KEY = {"Authorization": "Bearer test-key"}
MIB = 1024 * 1024
Running = tuple[subprocess.Popen[str], httpx.Client]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Running]:
    with (
        sandbox_command("--minimax-rate", "0", "--jimmy-rate", "0", "--seed", "3") as (proc, base),
        httpx.Client(base_url=base, headers=KEY, timeout=30) as http,
    ):
        yield proc, http


@pytest.fixture
def http(sandbox: Running) -> httpx.Client:
    return sandbox[1]


def create(http: httpx.Client, **script: Any) -> dict[str, Any]:
    response = http.post("/_sandbox/tasks", json={"duration_s": 0, **script})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def task_state(http: httpx.Client, provider: str, task_id: object) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/_sandbox/tasks/{provider}/{task_id}").json()
    return body


def minimax_result(http: httpx.Client, **script: Any) -> tuple[dict[str, Any], str, GeneratedFile]:
    """A finished MiniMax task, its download URL, and the file `app.sandbox.media` says is
    behind it: how any test gets the exact bytes the sandbox serves."""
    created = create(http, provider="minimax", **script)
    file = http.get("/v1/files/retrieve", params={"file_id": created["file_id"]}).json()["file"]
    state = task_state(http, "minimax", created["id"])
    expected = minimax_archive(str(state["id"]), state["result_bytes"], int(state["ready_at"]))
    return state, file["download_url"], expected


def jimmy_result(http: httpx.Client, **script: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    created = create(http, provider="jimmy", subtitles=True, **script)
    data: dict[str, Any] = http.get(f"/api/open-api/v1/audios/{created['id']}").json()["data"]
    return task_state(http, "jimmy", created["id"]), data


def with_expires(url: str, expires: str | None) -> str:
    path = url.split("?")[0]
    return path if expires is None else f"{path}?expires={expires}"


def test_minimax_download_is_the_tar_with_its_three_members(http: httpx.Client) -> None:
    state, url, expected = minimax_result(http)
    first, second = http.get(url), http.get(url)
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/x-tar"
    assert first.headers["content-length"] == str(expected.size) == str(len(first.content))
    assert first.content == second.content == expected.read()
    with tarfile.open(fileobj=io.BytesIO(first.content)) as tar:
        names = [member.name for member in tar.getmembers()]
        assert names == list(minimax_member_names(str(state["id"])))
        audio = tar.extractfile(names[0])
        assert audio is not None
        data = audio.read()
    assert len(data) == state["result_bytes"] == 16_384
    assert parse_mp3(data) > 0
    assert task_state(http, "minimax", state["id"])["downloads"] == 2


def test_jimmy_audio_and_subtitles_are_byte_identical_per_task(http: httpx.Client) -> None:
    state, data = jimmy_result(http, result_bytes=40_000)
    expires = int(state["ready_at"] + DOWNLOAD_URL_TTL_S)
    assert data["audioUrl"].endswith(f"/_sandbox/files/{state['id']}.mp3?expires={expires}")
    assert data["subtitleFile"].endswith(f"/_sandbox/files/{state['id']}.srt?expires={expires}")

    audio = [http.get(data["audioUrl"]) for _ in range(2)]
    assert audio[0].headers["content-type"] == "audio/mpeg"
    assert audio[0].headers["content-length"] == "40000"
    assert audio[0].content == audio[1].content == jimmy_audio(state["id"], 40_000).read()
    frames = parse_mp3(audio[0].content)
    samples = decode_mp3(audio[0].content)
    assert len(samples) == frames * 1152
    assert max(map(abs, samples)) > 1000

    subtitles = http.get(data["subtitleFile"])
    assert subtitles.headers["content-type"] == "text/plain; charset=utf-8"
    assert subtitles.content == jimmy_subtitles(state["id"], 40_000).read()
    assert subtitles.text.startswith("1\n00:00:00,000 --> ")

    other = jimmy_result(http, result_bytes=40_000)[1]
    assert http.get(other["audioUrl"]).content != audio[0].content


@pytest.mark.parametrize(
    "name",
    [
        "1.tar",  # no task has this file id
        "abc.tar",
        "audio_nope.mp3",
        "audio_nope.srt",
        "{minimax}.mp3",  # a MiniMax file id under a Jimmy suffix
        "{jimmy}.wav",
        "{jimmy}",
        "{clone}.srt",  # a voice-clone preview has no subtitles
        "{no_subtitles}.srt",
        "{running}.mp3",  # not finished: no file yet
        "{failed}.mp3",
        "{failed_minimax}.tar",
    ],
)
def test_files_no_finished_task_has_are_404(http: httpx.Client, name: str) -> None:
    ids = {
        "minimax": create(http, provider="minimax")["file_id"],
        "jimmy": create(http, provider="jimmy")["id"],
        "clone": create(http, provider="jimmy", model="clone")["id"],
        "no_subtitles": create(http, provider="jimmy", subtitles=False)["id"],
        "running": create(http, provider="jimmy", duration_s=3600)["id"],
        "failed": create(http, provider="jimmy", outcome="failed")["id"],
        "failed_minimax": create(http, provider="minimax", outcome="failed")["file_id"],
    }
    response = http.get(f"/_sandbox/files/{name.format(**ids)}", params={"expires": "9" * 10})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "expires",
    [
        None,
        "",
        "soon",
        "-1",
        "1e12",
        "١٢٣",  # Arabic-Indic digits: str.isdigit says yes, a signed URL says no
        "1",  # long past
        "9" * 13,  # too long to be a time
        "+{real}",
        "{later}",  # later than the sandbox could have minted: a forged expiry
    ],
)
@pytest.mark.parametrize("provider", ["minimax", "jimmy"])
def test_missing_malformed_past_or_forged_expiry_is_403(
    http: httpx.Client, provider: str, expires: str | None
) -> None:
    url = minimax_result(http)[1] if provider == "minimax" else jimmy_result(http)[1]["audioUrl"]
    real = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert http.get(url).status_code == 200
    if expires is not None:
        # An hour past the real one: MiniMax's expiry is minted from the clock, so one a
        # second later is what a File Retrieve a second later would mint (the test failed
        # when it crossed a second), not a forgery.
        expires = expires.format(real=real, later=real + 3600)
    response = http.get(with_expires(url, expires))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/plain")


def read_until_dropped(response: httpx.Response) -> int:
    """How many body bytes came before the connection dropped."""
    received = 0
    try:
        for chunk in response.iter_raw():
            received += len(chunk)
    except httpx.RemoteProtocolError:
        return received
    raise AssertionError(f"the download was not cut: all {received} bytes came")


@pytest.mark.parametrize("provider", ["minimax", "jimmy"])
def test_scripted_download_failures_then_the_file(http: httpx.Client, provider: str) -> None:
    script = {"failed_downloads": 2, "cut_downloads": 1, "result_bytes": 200_000}
    if provider == "minimax":
        state, url, expected = minimax_result(http, **script)
    else:
        state, data = jimmy_result(http, **script)
        url, expected = data["audioUrl"], jimmy_audio(state["id"], 200_000)
    for _ in range(2):
        refused = http.get(url)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"

    with http.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(expected.size)
        assert read_until_dropped(response) == expected.size // 2

    assert http.get(url).content == expected.read()
    assert task_state(http, provider, state["id"])["downloads"] == 4
    # An expired URL is refused before any scripted failure is spent.
    assert http.get(with_expires(url, "1")).status_code == 403
    assert task_state(http, provider, state["id"])["downloads"] == 4


@pytest.mark.parametrize(
    ("provider", "size", "most_growth"),
    [("jimmy", 300_000_000, 64 * MIB), ("minimax", 64 * MIB, 32 * MIB)],
)
def test_large_results_stream_in_flat_memory(
    sandbox: Running, provider: str, size: int, most_growth: int
) -> None:
    proc, http = sandbox
    if provider == "minimax":
        _, url, expected = minimax_result(http, result_bytes=size)
        warm_url = minimax_result(http)[1]
    else:
        state, data = jimmy_result(http, result_bytes=size)
        url, expected = data["audioUrl"], jimmy_audio(state["id"], size)
        warm_url = jimmy_result(http)[1]["audioUrl"]
    assert http.get(warm_url).status_code == 200  # the route's first use allocates too
    process = psutil.Process(proc.pid)
    before = peak = process.memory_info().rss

    received = hashlib.sha256()
    length = since_sample = 0
    with http.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(expected.size)
        for chunk in response.iter_raw():
            received.update(chunk)
            length += len(chunk)
            since_sample += len(chunk)
            if since_sample >= 4 * MIB:
                since_sample = 0
                peak = max(peak, process.memory_info().rss)

    assert length == expected.size
    served = hashlib.sha256()
    for chunk in expected.chunks():
        served.update(chunk)
    assert received.digest() == served.digest()
    # A file built whole in memory would show here as about its size.
    assert peak - before < most_growth, f"RSS grew {(peak - before) / MIB:.1f} MiB"


# --- expiry as time passes, in-process on a fake clock ----------------------------------------


@pytest_asyncio.fixture
async def clocked() -> AsyncIterator[tuple[httpx.AsyncClient, FakeClock]]:
    clock = FakeClock()
    app = create_sandbox_app(SandboxConfig(minimax_rate=0, jimmy_rate=0, seed=5), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox.test", headers=KEY
    ) as client:
        yield client, clock


async def test_minimax_url_dies_its_lifetime_after_each_retrieve(
    clocked: tuple[httpx.AsyncClient, FakeClock],
) -> None:
    http, clock = clocked
    created = (
        await http.post(
            "/_sandbox/tasks", json={"provider": "minimax", "duration_s": 0, "url_ttl_s": 60}
        )
    ).json()

    async def retrieve() -> str:
        answer = await http.get("/v1/files/retrieve", params={"file_id": created["file_id"]})
        url: str = answer.json()["file"]["download_url"]
        return url

    first = await retrieve()
    clock.advance(60)
    assert (await http.get(first)).status_code == 200
    fresh = await retrieve()  # a new File Retrieve mints a URL that lives 60 s from now
    clock.advance(1)
    assert (await http.get(first)).status_code == 403
    assert (await http.get(fresh)).status_code == 200


async def test_jimmy_urls_die_their_lifetime_after_the_task_finished(
    clocked: tuple[httpx.AsyncClient, FakeClock],
) -> None:
    http, clock = clocked
    script = {"provider": "jimmy", "duration_s": 10, "url_ttl_s": 60, "subtitles": True}
    task_id = (await http.post("/_sandbox/tasks", json=script)).json()["id"]
    clock.advance(10)

    async def urls() -> dict[str, Any]:
        data: dict[str, Any] = (await http.get(f"/api/open-api/v1/audios/{task_id}")).json()["data"]
        return data

    data = await urls()
    clock.advance(60)
    assert await urls() == data  # every answer repeats the same URLs
    for field in ("audioUrl", "subtitleFile"):
        assert (await http.get(data[field])).status_code == 200
    clock.advance(1)
    for field in ("audioUrl", "subtitleFile"):
        assert (await http.get(data[field])).status_code == 403
    read = (await http.get(f"/_sandbox/tasks/jimmy/{task_id}")).json()
    assert (read["url_ttl_s"], read["downloads"]) == (60, 2)
