from __future__ import annotations

import pytest

from app.ui.session import (
    HOME,
    SESSION_TTL_S,
    UiSession,
    csrf_matches,
    new_session,
    safe_next,
    seal,
    unseal,
)

SECRET = b"k" * 32
NOW = 1_800_000_000.0
GOOD = UiSession(key_hash="ab" * 32, issued_at=int(NOW) - 60, csrf="token-1")


def _tampered(value: str) -> str:
    signature = value.partition(".")[2]
    other = seal(UiSession("cd" * 32, GOOD.issued_at, GOOD.csrf), SECRET).partition(".")[0]
    return f"{other}.{signature}"


@pytest.mark.parametrize(
    ("value", "secret", "now", "expected"),
    [
        (seal(GOOD, SECRET), SECRET, NOW, GOOD),
        # Signed with another key.
        (seal(GOOD, b"x" * 32), SECRET, NOW, None),
        # Another payload under GOOD's signature.
        (_tampered(seal(GOOD, SECRET)), SECRET, NOW, None),
        # The signature changed.
        (seal(GOOD, SECRET)[:-1] + "0", SECRET, NOW, None),
        # Expired: at the end of its 12 hours, and long after.
        (seal(GOOD, SECRET), SECRET, GOOD.issued_at + SESSION_TTL_S, None),
        (seal(GOOD, SECRET), SECRET, NOW + 30 * 86_400, None),
        # Just before it expires.
        (seal(GOOD, SECRET), SECRET, GOOD.issued_at + SESSION_TTL_S - 1, GOOD),
        # Issued an hour in the future: not a clock a little off, a forgery.
        (seal(UiSession("ab" * 32, int(NOW) + 3600, "t"), SECRET), SECRET, NOW, None),
        # Not a cookie of ours at all.
        (None, SECRET, NOW, None),
        ("", SECRET, NOW, None),
        ("garbage", SECRET, NOW, None),
        ("ü.ü", SECRET, NOW, None),
        ("a" * 2000, SECRET, NOW, None),
    ],
)
def test_unseal(value: str | None, secret: bytes, now: float, expected: UiSession | None) -> None:
    assert unseal(value, secret, now) == expected


def test_sealed_payload_of_wrong_shape_is_refused() -> None:
    # Signed with the right key, but not the fields a session has (as after a change of
    # format): refused, not an error.
    import base64
    import hashlib
    import hmac

    payload = base64.urlsafe_b64encode(b'{"h": 1, "t": "x", "c": null}').rstrip(b"=")
    signature = hmac.new(SECRET, payload, hashlib.sha256).hexdigest()
    assert unseal(f"{payload.decode()}.{signature}", SECRET, NOW) is None


def test_the_cookie_does_not_hold_the_key_and_each_session_has_its_own_token() -> None:
    first, second = new_session("ab" * 32, NOW), new_session("ab" * 32, NOW)
    assert first.csrf != second.csrf
    assert len(first.csrf) >= 32
    assert unseal(seal(first, SECRET), SECRET, NOW) == first


@pytest.mark.parametrize(
    ("presented", "expected"),
    [("token-1", True), ("token-2", False), ("", False), (None, False), ("token-1 ", False)],
)
def test_csrf_matches(presented: str | None, expected: bool) -> None:
    assert csrf_matches(GOOD, presented) is expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, HOME),
        ("", HOME),
        ("/ui", "/ui"),
        ("/ui/tasks?status=failed", "/ui/tasks?status=failed"),
        ("/ui/tasks/0b6f", "/ui/tasks/0b6f"),
        ("/uix", HOME),
        ("/v1/tasks", HOME),
        ("https://evil.example/ui", HOME),
        ("//evil.example/ui", HOME),
        ("/\\evil.example", HOME),
        ("/ui/\r\nSet-Cookie: x", HOME),
        ("javascript:alert(1)", HOME),
    ],
)
def test_safe_next(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
