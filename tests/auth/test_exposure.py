"""Which static keys may guard an API reachable from other machines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.auth.exposure import WELL_KNOWN_KEYS, is_loopback_host, public_key_problem
from app.core.config import StaticApiKey

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.2", False),
        ("2001:db8::1", False),
        ("pollhook.internal", False),
        ("localhost.example", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def _keys(*pairs: tuple[str, str]) -> list[StaticApiKey]:
    return [StaticApiKey(tenant=t, key=SecretStr(k)) for t, k in pairs]


@pytest.mark.parametrize(
    ("host", "keys", "refused"),
    [
        ("0.0.0.0", [], False),
        ("0.0.0.0", [("acme", "a-key-of-their-own-0123")], False),
        ("0.0.0.0", [("default", "dev-key-change-me")], True),
        ("::", [("acme", "a-key-of-their-own-0123"), ("b", "dev-key-change-me")], True),
        ("api.internal", [("default", "dev-key-change-me")], True),
        ("127.0.0.1", [("default", "dev-key-change-me")], False),
        ("::1", [("default", "dev-key-change-me")], False),
    ],
)
def test_public_key_problem(host: str, keys: list[tuple[str, str]], refused: bool) -> None:
    problem = public_key_problem(host, _keys(*keys))
    assert (problem is not None) is refused
    if problem:
        assert "dev-key-change-me" not in problem  # the message names tenants, not keys
        assert "POLLHOOK_API_KEYS=" in problem


def _example_files() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "docker-compose.yml",
        ROOT / "Dockerfile",
    ]


# `POLLHOOK_API_KEYS=...`, `POLLHOOK_API_KEYS: ...` and `${POLLHOOK_API_KEYS:-...}`.
EXAMPLE = re.compile(r"POLLHOOK_API_KEYS(?::-|\s*[=:]\s*)[\"'`]?(?!\$)([^\s\"'`}]+)")


def example_keys(text: str) -> set[str]:
    """The keys in every `tenant:key` example of POLLHOOK_API_KEYS in `text` (placeholders
    too short to be valid keys, and values made by the shell, are not examples of a key)."""
    keys = set()
    for value in EXAMPLE.findall(text):
        for entry in value.split(","):
            _, sep, key = entry.partition(":")
            if sep and len(key) >= 16 and "$" not in key:
                keys.add(key)
    return keys


def test_example_parser_finds_examples() -> None:
    text = (
        "POLLHOOK_API_KEYS=acme:0123456789abcdef0123 x\n"
        "  POLLHOOK_API_KEYS: ${POLLHOOK_API_KEYS:-default:dev-key-change-me}\n"
        "`POLLHOOK_API_KEYS` | `tenant:key,tenant2:key2`\n"
        "POLLHOOK_API_KEYS=acme:$(python3 -c 'import secrets')\n"
    )
    assert example_keys(text) == {"0123456789abcdef0123", "dev-key-change-me"}


def test_every_example_key_in_the_docs_is_well_known() -> None:
    shown = set().union(*(example_keys(path.read_text()) for path in _example_files()))
    assert shown <= WELL_KNOWN_KEYS, f"add these example keys to WELL_KNOWN_KEYS: {shown}"
