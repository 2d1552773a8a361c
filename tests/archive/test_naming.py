from __future__ import annotations

import uuid

import pytest

from app.archive.naming import (
    MAX_NAME_CHARS,
    content_type,
    member_kind,
    object_key,
    safe_name,
    unique_name,
    url_name,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("content-1.mp3", "content-1.mp3"),
        ("dir/sub/content-1.titles", "content-1.titles"),
        ("..\\..\\evil.mp3", "evil.mp3"),
        ("/etc/passwd", "passwd"),
        (".hidden", "hidden"),
        ("...", "fallback"),
        ("", "fallback"),
        ("a b?c*.mp3", "a_b_c_.mp3"),
        ("語音.wav", "wav"),
        ("x" * 300 + ".mp3", "x" * (MAX_NAME_CHARS - 4) + ".mp3"),
    ],
)
def test_safe_name(raw: str, expected: str) -> None:
    assert safe_name(raw, "fallback") == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.example/a/95157322514496.tar?Expires=1&Signature=x", "95157322514496.tar"),
        ("https://cdn.example/a/b%20c.mp3", "b_c.mp3"),
        ("https://cdn.example/", "audio"),
        ("https://cdn.example/dir/..", "audio"),
    ],
)
def test_url_name(url: str, expected: str) -> None:
    assert url_name(url, "audio") == expected


def test_unique_name_prefixes_repeats() -> None:
    taken = {"a.mp3", "2-a.mp3"}
    assert unique_name("a.mp3", taken) == "3-a.mp3"
    assert unique_name("b.mp3", taken) == "b.mp3"


def test_object_key_is_per_tenant_and_task() -> None:
    task = uuid.UUID(int=1)
    assert object_key("acme", task, "a.mp3") == f"acme/{task}/a.mp3"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("content-1.mp3", "audio"),
        ("content-1.WAV", "audio"),
        ("content-1.titles", "subtitle"),
        ("sub.srt", "subtitle"),
        ("content-1.extra", "extra"),
        ("readme", "extra"),
    ],
)
def test_member_kind(name: str, kind: str) -> None:
    assert member_kind(name) == kind


@pytest.mark.parametrize(
    ("name", "declared", "expected"),
    [
        ("a.mp3", "application/octet-stream", "audio/mpeg"),
        ("a.titles", None, "application/json"),
        ("a.bin", "Audio/Ogg; charset=binary", "audio/ogg"),
        ("a.bin", "text/plain; charset=utf-8", "text/plain"),
        # A type a browser would run as a page is never kept.
        ("a.bin", "text/html", "application/octet-stream"),
        ("a.bin", "image/svg+xml", "application/octet-stream"),
        ("a.bin", "text/html\r\nx: y", "application/octet-stream"),
        ("a.bin", "not a type", "application/octet-stream"),
        ("a.bin", None, "application/octet-stream"),
    ],
)
def test_content_type(name: str, declared: str | None, expected: str) -> None:
    assert content_type(name, declared) == expected
