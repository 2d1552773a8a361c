"""Who sent a provider callback: the checks of `POST /v1/inbound/{instance}` (pure).

A callback proves itself with the instance's `callback_secret`, in the provider's own
scheme where it has one: Replicate signs as Standard Webhooks specifies (`webhook-id`,
`webhook-timestamp`, `webhook-signature` over `{id}.{timestamp}.{body}`), with a timestamp
within TOLERANCE_S of ours; the others carry the secret as a token in the URL pollhook
hands out (or the `X-Pollhook-Token` header, where the provider can send one). Both are
compared in constant time. A message is known again by its `webhook-id`, or else by the
SHA-256 of its body, so a replay, and the provider's own retry, change nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from app.providers.base import CallbackSigning
from app.webhooks.signing import SECRET_PREFIX, sign

# Standard Webhooks' recommended tolerance: a signed message older (or newer) than this is
# refused, so its id needs remembering only this long on either side.
TOLERANCE_S = 300
TOKEN_HEADER = "x-pollhook-token"
MAX_SIGNATURES = 10


class Refused(Exception):
    """The callback does not prove it came from the provider; the message says why."""


def verify(
    signing: CallbackSigning,
    secret: str,
    headers: Mapping[str, str],
    token: str | None,
    body: bytes,
    now: float,
) -> str:
    """The key the message is remembered by, once it proves itself; raises Refused."""
    if signing is CallbackSigning.STANDARD_WEBHOOKS:
        return "id:" + _standard_webhooks(secret, headers, body, now)
    if signing is CallbackSigning.TOKEN:
        given = token if token is not None else headers.get(TOKEN_HEADER)
        if given is None or not hmac.compare_digest(given.encode(), secret.encode()):
            raise Refused("no valid token")
        return "sha256:" + hashlib.sha256(body).hexdigest()
    raise Refused("the provider sends no callbacks")


def _standard_webhooks(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> str:
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not msg_id or len(msg_id) > 256 or not msg_id.isascii():
        raise Refused("no webhook-id")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise Refused("no webhook-timestamp")
    if abs(now - int(stamp)) > TOLERANCE_S:
        raise Refused(f"webhook-timestamp is more than {TOLERANCE_S} s from now")
    if not _is_signing_secret(secret):
        raise Refused(f"the instance's callback_secret is not a {SECRET_PREFIX} secret")
    expected = sign(secret, msg_id, int(stamp), body).encode()
    given = signatures.split(" ")[:MAX_SIGNATURES]
    if not any(hmac.compare_digest(expected, candidate.encode()) for candidate in given):
        raise Refused("no valid webhook-signature")
    return msg_id


def secret_problem(signing: CallbackSigning, secret: str) -> str | None:
    """Why `secret` cannot verify this provider's callbacks; None when it can."""
    if signing is CallbackSigning.NONE:
        return "the provider sends no callbacks: unset callback_secret"
    if signing is CallbackSigning.STANDARD_WEBHOOKS and not _is_signing_secret(secret):
        return f"must be the provider's signing secret ({SECRET_PREFIX} and base64), as it gives it"
    return None


def _is_signing_secret(secret: str) -> bool:
    """`whsec_` and the base64 of at least 16 bytes (the key), strictly: a lenient decoder
    would turn a mistyped secret into an empty key that verifies nothing."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(key) >= 16
