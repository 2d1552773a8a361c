"""Who sent a callback (pure): Standard Webhooks signatures made with PyPI `standardwebhooks`,
tokens, and the secrets that can verify each provider's callbacks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from app.inbound.verification import TOLERANCE_S, Refused, secret_problem, verify
from app.providers.base import CallbackSigning

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_dGhlIG90aGVyIHByb3ZpZGVyIGFjY291bnQ="
TOKEN = "a-token-of-at-least-24-characters"
BODY = b'{"id": "p1", "status": "succeeded"}'
NOW = 1_800_000_000


def signed(
    body: bytes = BODY, *, secret: str = SECRET, at: int = NOW, msg: str = "msg_1"
) -> dict[str, str]:
    signature = Webhook(secret).sign(msg, datetime.fromtimestamp(at, UTC), body.decode())
    return {"webhook-id": msg, "webhook-timestamp": str(at), "webhook-signature": signature}


def test_a_standard_webhooks_signature_verifies_and_names_the_message() -> None:
    key = verify(CallbackSigning.STANDARD_WEBHOOKS, SECRET, signed(), None, BODY, NOW)
    assert key == "id:msg_1"
    # Within the tolerance either way; several signatures (a rotation) and one matching.
    late = signed(at=NOW - TOLERANCE_S)
    assert verify(CallbackSigning.STANDARD_WEBHOOKS, SECRET, late, None, BODY, NOW)
    rotated = signed()
    rotated["webhook-signature"] = (
        signed(secret=OTHER)["webhook-signature"] + " " + rotated["webhook-signature"]
    )
    assert verify(CallbackSigning.STANDARD_WEBHOOKS, SECRET, rotated, None, BODY, NOW)


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (signed(secret=OTHER), BODY, "no valid webhook-signature"),
        (signed(), BODY + b" ", "no valid webhook-signature"),
        ({**signed(), "webhook-id": "msg_2"}, BODY, "no valid webhook-signature"),
        (signed(at=NOW - TOLERANCE_S - 1), BODY, "more than 300 s"),
        (signed(at=NOW + TOLERANCE_S + 1), BODY, "more than 300 s"),
        ({k: v for k, v in signed().items() if k != "webhook-id"}, BODY, "no webhook-id"),
        ({**signed(), "webhook-timestamp": "soon"}, BODY, "no webhook-timestamp"),
        ({**signed(), "webhook-timestamp": "9" * 40}, BODY, "no webhook-timestamp"),
        ({**signed(), "webhook-signature": ""}, BODY, "no valid webhook-signature"),
        ({**signed(), "webhook-id": "é" * 3}, BODY, "no webhook-id"),
        ({}, BODY, "no webhook-id"),
    ],
)
def test_a_forged_or_stale_signed_callback_is_refused(
    headers: dict[str, str], body: bytes, reason: str
) -> None:
    with pytest.raises(Refused, match=reason):
        verify(CallbackSigning.STANDARD_WEBHOOKS, SECRET, headers, None, body, NOW)


def test_a_token_proves_a_callback_by_query_or_header_and_names_its_body() -> None:
    by_query = verify(CallbackSigning.TOKEN, TOKEN, {}, TOKEN, BODY, NOW)
    by_header = verify(CallbackSigning.TOKEN, TOKEN, {"x-pollhook-token": TOKEN}, None, BODY, NOW)
    assert by_query == by_header
    assert by_query.startswith("sha256:")
    assert len(by_query) == len("sha256:") + 64
    assert verify(CallbackSigning.TOKEN, TOKEN, {}, TOKEN, BODY + b"\n", NOW) != by_query


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({}, None),
        ({}, TOKEN[:-1]),
        ({}, TOKEN + "x"),
        ({"x-pollhook-token": "nope"}, None),
        ({}, ""),
    ],
)
def test_a_callback_without_the_token_is_refused(
    headers: dict[str, str], token: str | None
) -> None:
    with pytest.raises(Refused, match="no valid token"):
        verify(CallbackSigning.TOKEN, TOKEN, headers, token, BODY, NOW)


def test_a_provider_that_sends_no_callbacks_verifies_none() -> None:
    with pytest.raises(Refused, match="sends no callbacks"):
        verify(CallbackSigning.NONE, TOKEN, {}, TOKEN, BODY, NOW)


def test_a_secret_that_is_not_whsec_base64_refuses_every_signed_callback() -> None:
    with pytest.raises(Refused, match="not a whsec_ secret"):
        verify(CallbackSigning.STANDARD_WEBHOOKS, "whsec_!!", signed(), None, BODY, NOW)


@pytest.mark.parametrize(
    ("signing", "secret", "problem"),
    [
        (CallbackSigning.TOKEN, TOKEN, None),
        (CallbackSigning.STANDARD_WEBHOOKS, SECRET, None),
        (CallbackSigning.STANDARD_WEBHOOKS, TOKEN, "signing secret"),
        (CallbackSigning.STANDARD_WEBHOOKS, "whsec_!!not-base64!!", "signing secret"),
        (CallbackSigning.NONE, TOKEN, "sends no callbacks"),
    ],
)
def test_which_secrets_can_verify_a_providers_callbacks(
    signing: CallbackSigning, secret: str, problem: str | None
) -> None:
    found = secret_problem(signing, secret)
    assert (found is None) if problem is None else (found is not None and problem in found)
