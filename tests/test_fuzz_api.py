"""Property-based fuzzing of the API against its own OpenAPI document (schemathesis), over
real HTTP to a real `pollhook api` process: no 5xx, and every response matches the schema,
for valid and for invalid keys."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import ACME_KEY, free_port
from tests.test_cli import _clean_env

# Left out, because the contract says otherwise:
# - positive_data_acceptance: semantically invalid but schema-valid input (an unknown
#   cursor, a MiniMax id that is not numeric, a webhook host that does not resolve here) is
#   rightly a 422;
# - use_after_free: DELETE /v1/tasks/{id} stops tracking a task, which stays readable as
#   `cancelled`; it is not removed.
EXCLUDED = "positive_data_acceptance,use_after_free"


@pytest.fixture
def api_url(database_url: str) -> Iterator[str]:
    port = free_port()
    env = {
        **_clean_env(),
        "POLLHOOK_DATABASE_URL": database_url,
        "POLLHOOK_API_KEYS": f"acme:{ACME_KEY}",
        "POLLHOOK_LOG_LEVEL": "WARNING",
        "POLLHOOK_PORT": str(port),
        # Schemathesis sends hundreds of requests a second; a 429 would only cut its coverage
        # short (tests/core/test_rate_limit.py covers the limit itself).
        "POLLHOOK_API_RATE_LIMIT_PER_S": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


@pytest.mark.parametrize("key", [ACME_KEY, "not-a-valid-key-at-all"], ids=["valid", "invalid"])
def test_schemathesis(api_url: str, key: str, engine: object) -> None:
    st = shutil.which("st", path=os.path.dirname(sys.executable)) or shutil.which("st")
    assert st is not None, "schemathesis is a dev dependency"
    result = subprocess.run(
        [
            st,
            "run",
            f"{api_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            "all",
            "--exclude-checks",
            EXCLUDED,
            "--max-examples",
            "25",
            "--seed",
            "1",
            # One worker: CPython 3.11.7's ast keeps one recursion counter per interpreter
            # (python/cpython#106905), so with two worker threads the parsing Hypothesis does
            # while generating failed at random with "AST constructor recursion depth
            # mismatch", an error of the fuzzer, not of pollhook.
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:]
