from __future__ import annotations

import json
import logging

import httpx
import pytest

from app.core.logging import LogFormat, configure_logging, get_logger
from tests.helpers import ACME_KEY, OTHER_KEY

pytestmark = pytest.mark.usefixtures("restore_logging")


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_one_line_per_request_without_secrets(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "INFO")
    await client.post("/v1/tasks", json={"provider": "minimax", "external_id": 7})
    await client.get("/v1/tasks?limit=5", headers={"Authorization": f"Bearer {OTHER_KEY}"})
    await client.get("/v1/tasks", headers={"Authorization": "Bearer wrong-key-secret-123"})
    err = capsys.readouterr().err
    requests = [line for line in json_lines(err) if line.get("event") == "request"]
    assert [(r["method"], r["path"], r["status"]) for r in requests] == [
        ("POST", "/v1/tasks", 201),
        ("GET", "/v1/tasks", 200),
        ("GET", "/v1/tasks", 401),
    ]
    assert all(isinstance(r["duration_ms"], float) and r["request_id"] for r in requests)
    assert [r["tenant"] for r in requests] == ["acme", "other", None]
    for secret in (ACME_KEY, OTHER_KEY, "wrong-key-secret-123"):
        assert secret not in err


def test_secret_fields_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    get_logger("t").info("thing", api_key="sk-live-123", authorization="Bearer x", secret="whsec_y")
    line = json_lines(capsys.readouterr().err)[-1]
    assert line["api_key"] == line["authorization"] == line["secret"] == "[redacted]"


def test_console_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "INFO")
    get_logger("t").info("hello", n=1)
    err = capsys.readouterr().err
    assert "hello" in err
    assert "n=1" in err
    assert not err.lstrip().startswith("{")


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_configured_secrets_never_reach_a_line(
    capsys: pytest.CaptureFixture[str], log_format: LogFormat
) -> None:
    """Whatever field, spelling or traceback carries them (stdlib loggers too)."""
    secret = "sk-live/prov1der"
    configure_logging(log_format, "INFO", secrets=[secret])
    try:
        raise ValueError(f"upstream said: invalid key {secret}")
    except ValueError:
        get_logger("t").exception("poll_failed", detail='{"key":"sk-live\\/prov1der"}')
        logging.getLogger("uvicorn.error").exception("quoted sk%2Dlive%2Fprov1der")
    err = capsys.readouterr().err
    assert "prov1der" not in err
    assert err.count("[redacted]") == 4  # two fields, two tracebacks
