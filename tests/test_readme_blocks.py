"""The README's blocks work when pasted as they stand.

The walk-through runs verbatim in bash, as a newcomer pastes it after the quick start, and its
recorded output must have the shape of a real run. Every other block is either run by a test
too or only sets variables, so a new block that is neither fails here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from app.blobs.stores import open_store
from app.core.config import Settings
from app.webhooks import signing
from tests.helpers import embedded_postgres_running, stop_embedded_postgres

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
WALK_THROUGH_PORTS = (8000, 8900)  # pollhook serve, pollhook sandbox
WALK_THROUGH_TIMEOUT_S = 300  # an install-free run takes 15-30 s
FENCE = re.compile(r"^```(\S*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SHELL = {"sh", "bash", "shell", "console", "zsh"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")
URL_HOST = re.compile(r"\bhttps?://(\[[^\]]*\]|[^/\s:'\"`]+)")
QUICK_START_COMMANDS = ["./scripts/serve", "./scripts/test"]


@dataclass(frozen=True)
class Block:
    heading: str  # the "## " heading the block is under
    lang: str
    text: str


def readme_blocks() -> list[Block]:
    text = README.read_text()
    headings = [(m.start(), m.group(1)) for m in re.finditer(r"^## (.+)$", text, re.MULTILINE)]
    blocks = []
    for fence in FENCE.finditer(text):
        heading = next((h for at, h in reversed(headings) if at < fence.start()), "")
        blocks.append(Block(heading, fence.group(1), fence.group(2)))
    return blocks


def blocks_under(heading: str) -> list[Block]:
    return [b for b in readme_blocks() if b.heading == heading]


def walk_through() -> tuple[str, str]:
    """The walk-through's bash block and the recorded run after it."""
    blocks = blocks_under("Walk-through")
    assert [b.lang for b in blocks] == ["bash", "text"], "one bash block, then its recorded run"
    return blocks[0].text, blocks[1].text


def commands(block: Block) -> list[str]:
    """The block's lines without comments and blank lines."""
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in block.text.splitlines())
    return [line for line in lines if line]


# ---------------------------------------------------------------------------------------------
# The walk-through, run as pasted


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _end_group(pgid: int) -> None:
    """SIGTERM what is left of the process group, then SIGKILL it after a bounded wait."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(pgid):
            return
        os.killpg(pgid, sig)
        deadline = time.monotonic() + 20
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    left_running: bool  # a process of the block's, or its embedded database, outlived it


@pytest.fixture(scope="module")
def walk_through_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The walk-through block run once by bash from the repository root, in a clean
    environment (a fresh data dir, no KEY), in a process group of its own."""
    assert shutil.which("curl"), "the README's walk-through needs curl on PATH"
    taken = [port for port in WALK_THROUGH_PORTS if _port_taken(port)]
    assert not taken, (
        f"port(s) {taken} are taken: the README's walk-through listens on 8000 and 8900; "
        "stop what listens there and run again"
    )
    check = subprocess.run([ROOT / "scripts" / "bootstrap", "--check"], check=False)
    assert check.returncode == 0, (
        "the install in .venv is not current, so the walk-through's scripts/bootstrap would "
        "install from the network: run scripts/bootstrap --dev first"
    )
    block, _ = walk_through()
    data_dir = tmp_path_factory.mktemp("walk-through") / "data"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ["HOME"],
        "POLLHOOK_DATA_DIR": str(data_dir),
    }
    proc = subprocess.Popen(
        ["bash", "-c", block],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            out, err = proc.communicate(timeout=WALK_THROUGH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _end_group(proc.pid)
            out, err = proc.communicate()
            err += f"\n(the walk-through did not end within {WALK_THROUGH_TIMEOUT_S} s)"
        # The block stops what it started: by now nothing of it may be left.
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _group_alive(proc.pid) or embedded_postgres_running(data_dir)
        yield Run(proc.returncode, out, err, left)
    finally:
        _end_group(proc.pid)
        stop_embedded_postgres(data_dir)


def _log_tail() -> str:
    logs = (ROOT / ".pollhook" / name for name in ("serve.log", "sandbox.log"))
    return "\n".join(f"{p}:\n{p.read_text()[-3000:]}" for p in logs if p.exists())


def _lines(output: str) -> dict[str, str]:
    """The walk-through's labelled lines ("register: ...") by label."""
    return dict(
        (m.group(1), m.group(2)) for m in re.finditer(r"^(\w+):\s+(.*)$", output, re.MULTILINE)
    )


def _json_in(line: str) -> Any:
    return json.loads(line[line.index("{") : line.rindex("}") + 1])


def test_walk_through_runs_as_pasted(walk_through_run: Run) -> None:
    run = walk_through_run
    assert run.code == 0, f"{run.out}\n{run.err}\n{_log_tail()}"
    assert not run.left_running, "the walk-through must stop its servers and database"
    lines = _lines(run.out)

    registered = re.fullmatch(r"201 id=(\S+) status=pending", lines["register"])
    assert registered, lines["register"]
    assert lines["again"] == f"200 id={registered.group(1)} status=pending"
    assert lines["read"] == '200 status=pending polls=0 metadata={"order": 42}'
    assert lines["cancel"] == "200 status=cancelled"
    assert lines["list"] == "200 ['cancelled', 'pending']"
    assert lines["batch"] == "200 ['existing', 'error', 'created']"

    assert _statuses(run.out) == ["pending", "processing", "succeeded"]
    result = _json_in(lines["result"])
    assert result["kind"] == "minimax_t2a"
    assert result["download_url"].startswith("http://127.0.0.1:8900/_sandbox/files/")
    assert result["filename"].endswith(".tar")

    assert lines["jimmy"].startswith("succeeded result=")
    jimmy = _json_in(lines["jimmy"])
    assert jimmy["kind"] == "jimmy_soundclone"
    assert jimmy["audio_url"].startswith("http://127.0.0.1:8900/_sandbox/files/")

    assert lines["fails"].startswith("failed error=")
    assert _json_in(lines["fails"])["code"] == "failed"


def _statuses(output: str) -> list[str]:
    """The watched task's statuses, one per change."""
    watched = re.findall(r"^(\w+) +sequence=\d+ polls=\d+$", output, re.MULTILINE)
    return [s for i, s in enumerate(watched) if i == 0 or watched[i - 1] != s]


def shape(output: str) -> list[str]:
    """The output with its values reduced to what every run shares: each JSON object to its
    keys, ids and counts to placeholders, and the watched task's repeated polls of one
    status to one line."""
    lines: list[str] = []
    for line in output.splitlines():
        if "{" in line:
            obj = _json_in(line)
            start, end = line.index("{"), line.rindex("}") + 1
            line = line[:start] + "{" + ", ".join(obj) + "}" + line[end:]
        line = re.sub(r"\bid=\S+", "id=<id>", line)
        line = re.sub(r"=\d+", "=<n>", line)
        line = " ".join(line.split())
        if line and (not lines or lines[-1] != line):
            lines.append(line)
    return lines


def test_recorded_walk_through_has_the_shape_of_a_real_run(walk_through_run: Run) -> None:
    assert walk_through_run.code == 0, walk_through_run.err
    _, recorded = walk_through()
    assert shape(recorded) == shape(walk_through_run.out)
    ids = re.findall(r"\bid=(\S+)", recorded)
    assert len(set(ids)) == 1, "register and again show the same task"
    assert all(re.fullmatch(r"[0-9a-f]{4}…", i) for i in ids), "ids trimmed with …, nothing else"


def test_shape_keeps_statuses_and_result_keys() -> None:
    run = (
        "pending    sequence=0 polls=0\n"
        "processing sequence=1 polls=1\n"
        "processing sequence=1 polls=2\n"  # an extra poll while it runs: the same shape
    )
    assert shape(run) == ["pending sequence=<n> polls=<n>", "processing sequence=<n> polls=<n>"]
    assert shape('result: {"kind": "x", "url": "http://…"}') == ["result: {kind, url}"]
    assert shape("again: 200 id=0b9a… status=pending") == ["again: 200 id=<id> status=pending"]


# ---------------------------------------------------------------------------------------------
# Every other block


def test_every_runnable_block_is_run_by_a_test_or_only_sets_variables() -> None:
    for block in readme_blocks():
        if block.lang in SHELL:
            if block.heading == "Walk-through":
                continue  # test_walk_through_runs_as_pasted
            if block.text == seaweedfs_recipe().text:
                continue  # test_the_seaweedfs_recipe_serves_the_archive
            if block.heading == "Quick start":
                # Neither can run inside the suite as written (serve runs until Ctrl-C, test
                # is the suite): ./scripts/test is CI's own test step, and the walk-through
                # runs ./scripts/serve.
                assert commands(block) == QUICK_START_COMMANDS, block.text
                assert "\nscripts/test\n" in (ROOT / ".ci" / "run").read_text()
                assert "./scripts/serve " in walk_through()[0]
                continue
            lines = commands(block)
            assert lines, block.text
            assert all(ASSIGNMENT.fullmatch(line) for line in lines), (
                f"the sh block under '## {block.heading}' is neither run by a test "
                f"(tests/test_readme_blocks.py) nor only variable assignments:\n{block.text}"
            )
        elif block.lang in {"python", "py"}:
            assert block.heading == "Webhooks", block.text  # test_webhook_snippet_works_as_pasted
        elif block.lang == "json":
            # Data, not commands: tests/test_readme.py validates the webhook and archive
            # examples.
            assert block.heading in {"Webhooks", "Archive"}, block.text
        else:
            assert block.lang in {"", "text"}, f"a {block.lang} block: run it in a test here"


def test_runnable_blocks_reach_only_loopback() -> None:
    """Assignment blocks configure real providers; a block that runs talks to 127.0.0.0/8."""
    for block in readme_blocks():
        runnable = block.lang in SHELL | {"python", "py"} and not all(
            ASSIGNMENT.fullmatch(line) for line in commands(block)
        )
        if not runnable:
            continue
        for host in URL_HOST.findall(block.text):
            assert _is_loopback(host), f"the block under '## {block.heading}' reaches {host}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False


def test_webhook_snippet_works_as_pasted(capsys: pytest.CaptureFixture[str]) -> None:
    (block,) = [b for b in blocks_under("Webhooks") if b.lang == "python"]
    snippet: dict[str, Any] = {}
    exec(block.text, snippet)  # the README's own code, as a reader pastes it
    receive = snippet["receive"]

    secret = signing.generate_secret()
    task = {"id": "3f0c5a", "status": "succeeded", "sequence": 2}
    body = json.dumps({"type": "task.succeeded", "timestamp": "…", "data": task}).encode()
    headers = signing.headers([secret], "evt_1", int(time.time()), body)
    receive(secret, body, headers)
    assert capsys.readouterr().out == "task.succeeded 3f0c5a succeeded\n"

    receive(secret, body, headers)  # the same event again: stale, dropped
    older = json.dumps({"type": "task.processing", "data": {**task, "sequence": 1}}).encode()
    receive(secret, older, signing.headers([secret], "evt_0", int(time.time()), older))
    assert capsys.readouterr().out == ""

    with pytest.raises(WebhookVerificationError):
        receive(signing.generate_secret(), body, headers)


# ---------------------------------------------------------------------------------------------
# The Archive section's SeaweedFS recipe, run as pasted

SEAWEEDFS_PORTS = (8333, 9333, 8080, 8888)  # s3, master, volume, filer (gRPC: each + 10000)


def seaweedfs_recipe() -> Block:
    [recipe] = [b for b in blocks_under("Archive") if b.lang in SHELL and "weed server" in b.text]
    return recipe


def s3_settings() -> dict[str, str]:
    """The Archive section's S3 settings block, as variables."""
    [block] = [
        b for b in blocks_under("Archive") if b.lang in SHELL and "AWS_ENDPOINT_URL" in b.text
    ]
    return dict(line.split("=", 1) for line in commands(block))


def _stop_seaweedfs() -> None:
    subprocess.run(["pkill", "-KILL", "-f", "weed server -dir=.pollhook/seaweedfs"], check=False)
    # A first paste, every time: the bucket the recipe creates does not exist yet.
    shutil.rmtree(ROOT / ".pollhook" / "seaweedfs", ignore_errors=True)


async def test_the_seaweedfs_recipe_serves_the_archive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The recipe starts SeaweedFS and creates the bucket; pollhook's S3 store, configured
    by the section's settings block, then stores a file and hands out a link that serves it."""
    taken = [port for port in SEAWEEDFS_PORTS if _port_taken(port)]
    assert not taken, f"port(s) {taken} are taken: the README's recipe listens there"
    _stop_seaweedfs()
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", seaweedfs_recipe().text],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        for name, value in s3_settings().items():
            monkeypatch.setenv(name, value)
        store = open_store(Settings())
        assert store is not None
        assert store.backend == "s3"
        source = tmp_path / "hello.txt"
        source.write_bytes(b"kept past the provider's URL")
        await store.put_file("acme/readme/hello.txt", source, content_type="text/plain")
        link = await store.link("acme/readme/hello.txt", expires_in_s=60, content_type="text/plain")
        async with httpx.AsyncClient() as http:
            served = await http.get(link)
        assert served.status_code == 200
        assert served.content == source.read_bytes()
    finally:
        _stop_seaweedfs()
