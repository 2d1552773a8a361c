"""Verify a pollhook webhook without a Standard Webhooks library (Python standard library)."""

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

TOLERANCE_S = 5 * 60


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Raise ValueError unless pollhook signed `body` with `secret` within the last 5 minutes.

    `headers` maps lower-case header names to values; `body` is the raw request body.
    """
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > TOLERANCE_S:
        raise ValueError("webhook-timestamp is outside the 5-minute tolerance")
    key = base64.b64decode(secret.removeprefix("whsec_"))  # the bytes after whsec_
    signed = f"{msg_id}.{timestamp}.".encode() + body  # id.timestamp.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in headers["webhook-signature"].split(" "):  # one v1,<sig> per valid secret
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return
    raise ValueError("no webhook-signature entry matches")
