"""End-to-end fixtures: the sandbox and `pollhook worker` as real processes over real HTTP,
on the suite's real Postgres."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import DEFAULT_INSTANCES, Settings
from app.sandbox.state import PROVIDERS
from tests.helpers import ACME_KEY, ADMIN_KEYS, free_port

SANDBOX_KEY = "e2e-sandbox-key"
FAST_PROVIDER = {
    "first_poll_delay_s": 0,
    "min_poll_interval_s": 0.2,
    "max_poll_interval_s": 0.5,
    "request_timeout_s": 3,
}
FAST_ENGINE = {"tick_s": 0.1, "lease_s": 3, "auth_retry_s": 1, "shutdown_grace_s": 1}


class Sandbox:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=10)

    def task(self, **script: Any) -> dict[str, Any]:
        response = self.http.post("/_sandbox/tasks", json=script)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def fault(self, **fault: Any) -> str:
        response = self.http.post("/_sandbox/faults", json=fault)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def clear_faults(self) -> None:
        self.http.delete("/_sandbox/faults").raise_for_status()

    def stats(self, provider: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/_sandbox/stats").json()[provider]
        return body

    def info(self, provider: str, task_id: object) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"/_sandbox/tasks/{provider}/{task_id}").json()
        return body

    def set_rates(self, **rates: float) -> None:
        self.http.patch("/_sandbox/config", json=rates).raise_for_status()


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("sandbox") / "sandbox.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "sandbox", "--port", str(port), "--seed", "7"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(base), within_s=30, what="sandbox to start")
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/_sandbox/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def sandbox(sandbox_server: str) -> Iterator[Sandbox]:
    box = Sandbox(sandbox_server)
    box.http.post("/_sandbox/reset").raise_for_status()
    box.http.patch(
        "/_sandbox/config", json={"rates": dict.fromkeys(PROVIDERS, 0)}
    ).raise_for_status()
    yield box
    box.http.close()


def provider_settings(sandbox_base: str, **minimax: Any) -> dict[str, dict[str, Any]]:
    """Every built-in instance at the sandbox, with its key and the fast schedule; `minimax`
    overrides the minimax instance's settings."""
    instances: dict[str, dict[str, Any]] = {
        name: {
            "kind": kind.value,
            "base_url": sandbox_base,
            "api_key": SANDBOX_KEY,
            "rate_limit_per_s": 0,
            **FAST_PROVIDER,
        }
        for name, kind in DEFAULT_INSTANCES.items()
    }
    instances["minimax"].update(minimax)
    return instances


@pytest.fixture
def settings(database_url: str, sandbox_server: str) -> Settings:
    """The in-process API registers with the same schedule settings the workers use."""
    return Settings(
        database_url=database_url,
        api_keys=[{"tenant": "acme", "key": ACME_KEY}],
        admin_keys=ADMIN_KEYS,
        providers=provider_settings(sandbox_server),
        engine=FAST_ENGINE,
    )


def _env(database_url: str, providers: dict[str, dict[str, Any]]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLHOOK_")}
    env.update(
        {
            "POLLHOOK_DATABASE_URL": database_url,
            "POLLHOOK_LOG_FORMAT": "json",
        }
    )
    for name, fields in providers.items():
        for field, value in fields.items():
            env[f"POLLHOOK_PROVIDERS__{name.upper()}__{field.upper()}"] = str(value)
    for field, value in FAST_ENGINE.items():
        env[f"POLLHOOK_ENGINE__{field.upper()}"] = str(value)
    return env


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@pytest.fixture
def start_worker(
    database_url: str, sandbox_server: str, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(
        *, db_url: str | None = None, extra_env: dict[str, str] | None = None, **minimax: Any
    ) -> Worker:
        """`db_url` replaces the database URL (a proxy in front of it); `extra_env` adds
        POLLHOOK_* settings; the rest are settings of the minimax instance."""
        log_path = tmp_path / f"worker-{len(workers)}.log"
        env = _env(db_url or database_url, provider_settings(sandbox_server, **minimax))
        env.update(extra_env or {})
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        worker = Worker(proc, log_path)
        workers.append(worker)
        wait_until(lambda: "engine_started" in worker.log(), within_s=30, what="worker to start")
        return worker

    yield start
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(timeout=10)


def wait_until(predicate: Callable[[], Any], *, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
