"""The dashboard's session cookie and CSRF token: pure, no I/O, table-tested.

The cookie holds `base64url(json).hex(hmac)`: the SHA-256 of the API key the user signed in
with (never the key), when it was issued, and a random CSRF token, signed with HMAC-SHA256.
The key hash is looked up again on every request, so a revoked key stops working at once;
the signature only proves the cookie was issued here, and the issue time bounds its life.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

COOKIE_NAME = "pollhook_session"
# The cookie is sent only to the dashboard's own paths.
COOKIE_PATH = "/ui"
SESSION_TTL_S = 12 * 3600
# The form field and header that carry the CSRF token of every POST under /ui.
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
# Where a signed-in user lands when no (acceptable) `next` was given.
HOME = "/ui"


@dataclass(frozen=True)
class UiSession:
    key_hash: str
    issued_at: int
    csrf: str


def new_session(key_hash: str, now: float) -> UiSession:
    return UiSession(key_hash=key_hash, issued_at=int(now), csrf=secrets.token_urlsafe(32))


def _signature(payload: bytes, secret: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def seal(session: UiSession, secret: bytes) -> str:
    """The cookie value of `session`."""
    raw = json.dumps(
        {"h": session.key_hash, "t": session.issued_at, "c": session.csrf},
        separators=(",", ":"),
    ).encode()
    payload = base64.urlsafe_b64encode(raw).rstrip(b"=")
    return f"{payload.decode()}.{_signature(payload, secret)}"


def unseal(value: str | None, secret: bytes, now: float) -> UiSession | None:
    """The session in a cookie value, or None when it is missing, malformed, signed with
    another key, expired or issued in the future."""
    if not value or len(value) > 1024:
        return None
    payload, _, signature = value.partition(".")
    try:
        expected = _signature(payload.encode("ascii"), secret)
    except UnicodeEncodeError:
        return None
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        session = UiSession(key_hash=fields["h"], issued_at=fields["t"], csrf=fields["c"])
    except (ValueError, TypeError, KeyError, binascii.Error):
        return None
    if not isinstance(session.issued_at, int) or not isinstance(session.key_hash, str):
        return None
    if not isinstance(session.csrf, str):
        return None
    # A clock a little behind another replica's is not a forgery; an hour ahead is.
    if not (now - SESSION_TTL_S < session.issued_at <= now + 60):
        return None
    return session


def csrf_matches(session: UiSession, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(session.csrf.encode(), presented.encode())


def safe_next(target: str | None) -> str:
    """Where to go after signing in: `target` when it is a path of the dashboard on this
    site, else HOME. Anything else (another host, `//host`, a scheme, backslashes) could send
    a user who trusts this page somewhere else."""
    if not target or "\\" in target or any(ord(ch) < 0x20 for ch in target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return HOME
    if parts.path != HOME and not parts.path.startswith(HOME + "/"):
        return HOME
    return target
