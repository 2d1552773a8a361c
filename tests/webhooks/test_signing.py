"""Standard Webhooks signing (app/webhooks/signing.py), verified by the reference library:
tampering, rotation with both secrets, stale timestamps."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.webhooks import signing


def _verify(secret: str, msg_id: str, timestamp: int, body: bytes, header: str) -> object:
    return Webhook(secret).verify(
        body,
        {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": header},
    )


def test_signatures_verify_with_standardwebhooks() -> None:
    secret = signing.generate_secret()
    assert secret.startswith("whsec_")
    body = json.dumps({"type": "task.succeeded", "data": {"id": "x"}}).encode()
    now = int(time.time())
    headers = signing.headers([secret], "evt_1", now, body)
    assert _verify(secret, "evt_1", now, body, headers["webhook-signature"]) == {
        "type": "task.succeeded",
        "data": {"id": "x"},
    }


@pytest.mark.parametrize(
    ("secret_is_other", "msg_id", "timestamp_shift", "body"),
    [
        (False, "evt_2", 0, b'{"type":"task.succeeded"}'),  # body altered
        (False, "evt_2", 1, b'{"type":"task.failed"}'),  # timestamp altered
        (True, "evt_2", 0, b'{"type":"task.failed"}'),  # another secret
        (False, "evt_3", 0, b'{"type":"task.failed"}'),  # another id
    ],
)
def test_tampering_fails_verification(
    secret_is_other: bool, msg_id: str, timestamp_shift: int, body: bytes
) -> None:
    secret, other = signing.generate_secret(), signing.generate_secret()
    now = int(time.time())
    header = signing.signature_header([secret], "evt_2", now, b'{"type":"task.failed"}')
    with pytest.raises(WebhookVerificationError):
        _verify(other if secret_is_other else secret, msg_id, now + timestamp_shift, body, header)


def test_rotation_signs_with_both_secrets() -> None:
    old, new = signing.generate_secret(), signing.generate_secret()
    body, now = b"{}", int(time.time())
    header = signing.signature_header([new, old], "evt_4", now, body)
    assert len(header.split(" ")) == 2
    for secret in (old, new):
        assert _verify(secret, "evt_4", now, body, header) == {}


def test_stale_timestamps_are_rejected_by_consumers() -> None:
    secret = signing.generate_secret()
    old = int(time.time()) - 3600
    header = signing.signature_header([secret], "evt_5", old, b"{}")
    with pytest.raises(WebhookVerificationError):
        _verify(secret, "evt_5", old, b"{}", header)
