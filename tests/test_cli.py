"""The CLI as a user runs it: real processes, the embedded Postgres, real HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

COMMANDS = [
    [],
    ["serve"],
    ["api"],
    ["worker"],
    ["migrate"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
]


def pollhook(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help(command: list[str]) -> None:
    result = pollhook(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: " in result.stdout


def test_invalid_setting_is_named(tmp_path: Path) -> None:
    env = {**_clean_env(), "POLLHOOK_PORT": "eighty", "POLLHOOK_DATA_DIR": str(tmp_path)}
    result = pollhook("serve", env=env)
    assert result.returncode != 0
    assert "invalid setting POLLHOOK_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLHOOK_")}
    env["POLLHOOK_LOG_FORMAT"] = "json"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _postgres_running(data_dir: Path) -> bool:
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Serve:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.env = {
            **_clean_env(),
            "POLLHOOK_DATA_DIR": str(data_dir),
            "POLLHOOK_PORT": str(self.port),
        }
        self.proc: subprocess.Popen[str] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("pollhook serve did not become ready")

    def stop(self, sig: signal.Signals = signal.SIGINT) -> tuple[int, str, str]:
        assert self.proc is not None
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    # Never leave a server behind, whatever the test did.
    if _postgres_running(path):
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from app.core.embedded import start_embedded; "
                "start_embedded(__import__('pathlib').Path(sys.argv[1])).stop()",
                str(path),
            ],
            check=False,
            timeout=60,
        )


def test_serve_quick_start_and_clean_shutdown(data_dir: Path) -> None:
    serve = Serve(data_dir)
    serve.start()
    try:
        assert serve.proc is not None
        assert serve.proc.stdout is not None
        # The quick-start key is printed before the server starts listening.
        banner = "".join(serve.proc.stdout.readline() for _ in range(4))
        match = re.search(r"(ph_[A-Za-z0-9_-]+)", banner)
        assert match, banner
        key = match.group(1)
        headers = {"Authorization": f"Bearer {key}"}
        created = httpx.post(
            f"{serve.base}/v1/tasks",
            json={"provider": "jimmy", "external_id": "audio_abc"},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        listed = httpx.get(f"{serve.base}/v1/tasks", headers=headers).json()
        assert [t["external_id"] for t in listed["items"]] == ["audio_abc"]
    finally:
        code, _, err = serve.stop(signal.SIGINT)
    assert code == 0, err
    assert not _postgres_running(data_dir), "Ctrl-C must stop the embedded database"
    assert key not in err  # the key is printed to stdout once, never logged

    # A second start keeps the data and prints no new key.
    serve = Serve(data_dir)
    serve.start()
    code, out, err = serve.stop(signal.SIGTERM)
    assert code == 0, err
    assert "ph_" not in out
    assert not _postgres_running(data_dir)


def test_killed_run_does_not_break_the_next(data_dir: Path) -> None:
    first = Serve(data_dir)
    first.start()
    first.stop(signal.SIGKILL)
    assert _postgres_running(data_dir), "a SIGKILL leaves the server running (adopted next time)"

    second = Serve(data_dir)
    second.start()
    code, _, err = second.stop(signal.SIGINT)
    assert code == 0, err
    assert not _postgres_running(data_dir), "the dead PID must not keep the server alive"


def test_keys_and_migrate_commands(data_dir: Path) -> None:
    env = {**_clean_env(), "POLLHOOK_DATA_DIR": str(data_dir)}
    migrated = pollhook("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "database schema at" in migrated.stdout

    created = pollhook("keys", "create", "--tenant", "acme", "--name", "ci", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"ph_[A-Za-z0-9_-]{43}", key)

    listed = pollhook("keys", "list", env=env)
    assert key[:10] in listed.stdout
    assert key not in listed.stdout
    assert "active" in listed.stdout

    bad = pollhook("keys", "create", "--tenant", "no spaces", env=env)
    assert bad.returncode == 2
    assert "--tenant" in bad.stderr

    revoked = pollhook("keys", "revoke", key[:10], env=env)
    assert revoked.returncode == 0
    assert "revoked 1" in revoked.stdout
    assert pollhook("keys", "revoke", key[:10], env=env).returncode == 1
    assert not _postgres_running(data_dir)


def test_api_refuses_an_unmigrated_database(pg_url_unmigrated: str) -> None:
    env = {
        **_clean_env(),
        "POLLHOOK_DATABASE_URL": pg_url_unmigrated,
        "POLLHOOK_PORT": str(_free_port()),
    }
    result = pollhook("api", env=env, timeout=30)
    assert result.returncode == 1
    assert "run `pollhook migrate`" in result.stderr
