"""The CLI as a user runs it: real processes, the embedded Postgres, real HTTP."""

from __future__ import annotations

import asyncio
import json
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
from sqlalchemy.engine import URL, make_url

from app.core.config import DEFAULT_INSTANCES, ProviderKind
from tests.helpers import (
    PgServer,
    embedded_postgres_running,
    free_port,
    refusing_postgres,
    stop_embedded_postgres,
)

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


class Serve:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
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
    stop_embedded_postgres(path)  # never leave a server behind, whatever the test did


def test_serve_quick_start_and_clean_shutdown(data_dir: Path) -> None:
    serve = Serve(data_dir)
    serve.start()
    try:
        assert serve.proc is not None
        assert serve.proc.stdout is not None
        # The quick-start key is printed before the server starts listening.
        banner = "".join(serve.proc.stdout.readline() for _ in range(8))
        keys = re.findall(r"(ph_[A-Za-z0-9_-]+)", banner)
        assert len(keys) == 2, banner
        key, operator_key = keys
        assert f"{serve.base}/ui" in banner
        headers = {"Authorization": f"Bearer {key}"}
        created = httpx.post(
            f"{serve.base}/v1/tasks",
            json={"provider": "jimmy", "external_id": "audio_abc"},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        listed = httpx.get(f"{serve.base}/v1/tasks", headers=headers).json()
        assert [t["external_id"] for t in listed["items"]] == ["audio_abc"]
        # The operator key signs in to the dashboard and sees the tenant's task.
        with httpx.Client(base_url=serve.base) as browser:
            signed_in = browser.post("/ui/signin", data={"key": operator_key})
            assert signed_in.status_code == 303, signed_in.text
            assert "audio_abc" in browser.get("/ui/tasks").text
    finally:
        code, _, err = serve.stop(signal.SIGINT)
    assert code == 0, err
    assert not embedded_postgres_running(data_dir), "Ctrl-C must stop the embedded database"
    assert key not in err  # the keys are printed to stdout once, never logged
    assert operator_key not in err

    # A second start keeps the data and prints no new key.
    serve = Serve(data_dir)
    serve.start()
    code, out, err = serve.stop(signal.SIGTERM)
    assert code == 0, err
    assert "ph_" not in out
    assert not embedded_postgres_running(data_dir)


def test_killed_run_does_not_break_the_next(data_dir: Path) -> None:
    first = Serve(data_dir)
    first.start()
    first.stop(signal.SIGKILL)
    assert embedded_postgres_running(data_dir), (
        "a SIGKILL leaves the server running (adopted next time)"
    )

    second = Serve(data_dir)
    second.start()
    code, _, err = second.stop(signal.SIGINT)
    assert code == 0, err
    assert not embedded_postgres_running(data_dir), "the dead PID must not keep the server alive"


def test_keys_and_migrate_commands(data_dir: Path) -> None:
    env = {**_clean_env(), "POLLHOOK_DATA_DIR": str(data_dir)}
    migrated = pollhook("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "database schema at" in migrated.stdout

    created = pollhook("keys", "create", "--tenant", "acme", "--name", "ci", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"ph_[A-Za-z0-9_-]{43}", key)

    operator = pollhook("keys", "create", "--operator", "alice", "--read-only", env=env)
    assert operator.returncode == 0, operator.stderr
    assert "operator_read alice" in operator.stderr

    listed = pollhook("keys", "list", env=env)
    assert f"{operator.stdout.strip()[:10]}…  operator_read=alice" in listed.stdout
    assert key[:10] in listed.stdout
    assert key not in listed.stdout
    assert "active" in listed.stdout

    both = pollhook("keys", "create", "--tenant", "a", "--operator", "b", env=env)
    assert both.returncode == 2
    assert "exactly one of" in both.stderr
    assert pollhook("keys", "create", "--tenant", "a", "--read-only", env=env).returncode == 2

    bad = pollhook("keys", "create", "--tenant", "no spaces", env=env)
    assert bad.returncode == 2
    assert "--tenant" in bad.stderr

    revoked = pollhook("keys", "revoke", key[:10], env=env)
    assert revoked.returncode == 0
    assert "revoked 1" in revoked.stdout
    assert pollhook("keys", "revoke", key[:10], env=env).returncode == 1
    assert not embedded_postgres_running(data_dir)


def test_api_refuses_an_unmigrated_database(pg_url_unmigrated: str) -> None:
    env = {
        **_clean_env(),
        "POLLHOOK_DATABASE_URL": pg_url_unmigrated,
        "POLLHOOK_PORT": str(free_port()),
    }
    result = pollhook("api", env=env, timeout=30)
    assert result.returncode == 1
    assert "run `pollhook migrate`" in result.stderr


DATABASE_COMMANDS = [
    ["serve"],
    ["api"],
    ["worker"],
    ["migrate"],
    ["keys", "create", "--tenant", "acme"],
    ["keys", "list"],
    ["keys", "revoke", "ph_abcdefg"],
]
PASSWORD = "hunter2-not-to-be-printed"


def _database_env(url: URL) -> dict[str, str]:
    return {
        **_clean_env(),
        "POLLHOOK_DATABASE_URL": url.render_as_string(hide_password=False),
        "POLLHOOK_PORT": str(free_port()),
    }


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_missing_database_is_one_line(pg_server: PgServer, command: list[str]) -> None:
    url = make_url(pg_server.url_for("pollhook_no_such_db")).set(password=PASSWORD)
    result = pollhook(*command, env=_database_env(url))
    assert_one_line_error(
        result, "POLLHOOK_DATABASE_URL", 'database "pollhook_no_such_db" does not exist'
    )


def test_unknown_role_is_one_line(pg_server: PgServer) -> None:
    url = make_url(pg_server.url_for("postgres")).set(username="no_such_role", password=PASSWORD)
    result = pollhook("migrate", env=_database_env(url))
    assert_one_line_error(result, "POLLHOOK_DATABASE_URL", 'role "no_such_role" does not exist')


def test_refused_connection_is_one_line() -> None:
    url = make_url(f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:{free_port()}/x")
    result = pollhook("api", env=_database_env(url))
    assert_one_line_error(result, "POLLHOOK_DATABASE_URL", "connection refused")


def test_unresolvable_host_is_one_line() -> None:
    url = make_url(f"postgresql+asyncpg://postgres:{PASSWORD}@no-such-host.invalid/x")
    result = pollhook("worker", env=_database_env(url))
    assert_one_line_error(result, "POLLHOOK_DATABASE_URL", "cannot resolve the host")


async def test_wrong_password_is_one_line() -> None:
    # The suite's servers trust every connection, so a fake one refuses it as Postgres does.
    refusal = 'password authentication failed for user "pollhook"'
    async with refusing_postgres("28P01", refusal) as port:
        url = make_url(f"postgresql+asyncpg://pollhook:{PASSWORD}@127.0.0.1:{port}/pollhook")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.cli",
            "migrate",
            env=_database_env(url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    result = subprocess.CompletedProcess(["migrate"], proc.returncode, out.decode(), err.decode())
    assert_one_line_error(result, "POLLHOOK_DATABASE_URL", refusal)


def test_unknown_variable_warns_with_the_nearest_name() -> None:
    env = {
        **_database_env(make_url(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")),
        "POLLHOOK_PROVIDER__MINIMAX__API_KEY": "sk-typo",
    }
    result = pollhook("migrate", env=env)
    warnings = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {
        "event": "unknown_setting",
        "setting": "POLLHOOK_PROVIDER__MINIMAX__API_KEY",
        "did_you_mean": "POLLHOOK_PROVIDERS__MINIMAX__API_KEY",
        "source": "environment",
    }.items() <= warnings[0].items()
    assert "sk-typo" not in result.stderr


def test_instance_without_kind_is_one_line() -> None:
    env = {**_clean_env(), "POLLHOOK_PROVIDERS__ACME__API_KEY": "x"}
    result = pollhook("worker", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: invalid setting POLLHOOK_PROVIDERS__ACME__KIND: required for a new provider "
        f"instance (one of: {', '.join(kind.value for kind in ProviderKind)})"
    )


def test_missing_provider_key_warns_once_per_instance(pg_url_unmigrated: str) -> None:
    env = {
        **_database_env(make_url(pg_url_unmigrated)),
        "POLLHOOK_PROVIDERS__MINIMAX__API_KEY": "sk-set",
    }
    result = pollhook("worker", env=env, timeout=30)
    assert "run `pollhook migrate`" in result.stderr  # the warning comes before the schema check
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    missing = [line for line in lines if line["event"] == "provider_key_missing"]
    assert [(m["instance"], m["variable"]) for m in missing] == [
        (name, f"POLLHOOK_PROVIDERS__{name.upper()}__API_KEY")
        for name in DEFAULT_INSTANCES
        if name != "minimax"
    ]


@pytest.mark.parametrize("command", ["serve", "api"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "pollhook.example"])
def test_well_known_key_is_refused_on_a_public_address(command: str, host: str) -> None:
    env = {
        **_database_env(make_url(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")),
        "POLLHOOK_API_KEYS": "ops:0123456789abcdef0123,default:dev-key-change-me",
        "POLLHOOK_HOST": host,
    }
    result = pollhook(command, env=env)
    assert_one_line_error(
        result, f"refusing to listen on {host}", "tenant default", "POLLHOOK_API_KEYS=default:"
    )


def test_well_known_key_is_allowed_on_loopback() -> None:
    env = {
        **_database_env(make_url(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")),
        "POLLHOOK_API_KEYS": "default:dev-key-change-me",
    }
    result = pollhook("api", "--host", "127.0.0.1", env=env)
    assert_one_line_error(result, "connection refused")  # it got past the key check


def test_api_closes_a_connection_whose_headers_dawdle(database_url: str, engine: object) -> None:
    """`pollhook api` bounds a request's headers (slowloris), not only its body."""
    port = free_port()
    env = {
        **_clean_env(),
        "POLLHOOK_DATABASE_URL": database_url,
        "POLLHOOK_PORT": str(port),
        "POLLHOOK_REQUEST_READ_TIMEOUT_S": "0.5",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "api"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "pollhook api did not start"
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            # Closed by the server, with no answer (without the bound: a timeout error).
            assert sock.recv(1024) == b""
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
