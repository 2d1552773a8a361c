"""Properties of Standard Webhooks signing (app/webhooks/signing.py), checked against the
reference implementation on PyPI (`standardwebhooks`)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.webhooks import signing
from tests.properties import PROPERTY

# The spec asks for 24-64 random bytes; pollhook always generates its own secrets.
secrets_ = st.binary(min_size=24, max_size=64).map(
    lambda key: signing.SECRET_PREFIX + base64.b64encode(key).decode()
)
msg_ids = st.text(min_size=1, max_size=40)
# The reference library decodes the body as UTF-8 before verifying.
bodies = st.text(max_size=200).map(str.encode)
# It also refuses timestamps more than 5 minutes from its clock: stay well inside that.
offsets = st.integers(min_value=-120, max_value=120)
any_timestamps = st.integers(min_value=0, max_value=253_402_300_799)  # up to year 9999


def verify(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


@settings(PROPERTY, max_examples=150)
@given(st.lists(secrets_, min_size=1, max_size=3), msg_ids, offsets, bodies, st.data())
def test_every_listed_secret_verifies_with_the_reference_library(
    keys: list[str], msg_id: str, offset: int, body: bytes, data: st.DataObject
) -> None:
    headers = signing.headers(keys, msg_id, int(time.time()) + offset, body)
    assert verify(data.draw(st.sampled_from(keys)), body, headers)


@settings(PROPERTY, max_examples=150)
@given(secrets_, msg_ids, offsets, bodies, secrets_, msg_ids, offsets, bodies)
def test_changing_body_id_timestamp_or_secret_breaks_verification(
    secret: str,
    msg_id: str,
    offset: int,
    body: bytes,
    other_secret: str,
    other_id: str,
    other_offset: int,
    other_body: bytes,
) -> None:
    timestamp = int(time.time()) + offset
    headers = signing.headers([secret], msg_id, timestamp, body)
    if other_body != body:
        assert not verify(secret, other_body, headers)
    if other_id != msg_id:
        forged = signing.headers([secret], other_id, timestamp, body)
        assert not verify(secret, body, {**forged, "webhook-id": msg_id})
        assert not verify(secret, body, {**headers, "webhook-id": other_id})
    if other_offset != offset:
        moved = str(int(time.time()) + other_offset)
        assume(moved != headers["webhook-timestamp"])
        assert not verify(secret, body, {**headers, "webhook-timestamp": moved})
    if other_secret != secret:
        assert not verify(other_secret, body, headers)


@settings(PROPERTY, max_examples=200)
@given(secrets_, msg_ids, any_timestamps, bodies)
def test_signature_matches_the_reference_for_any_timestamp(
    secret: str, msg_id: str, timestamp: int, body: bytes
) -> None:
    expected = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())
    assert signing.sign(secret, msg_id, timestamp, body) == expected


@settings(PROPERTY, max_examples=200)
@given(st.lists(secrets_, max_size=4), msg_ids, any_timestamps, st.binary(max_size=200))
def test_header_carries_one_v1_signature_per_secret_in_order(
    keys: list[str], msg_id: str, timestamp: int, body: bytes
) -> None:
    """Any body bytes (not only UTF-8) are signed: one well-formed entry per secret."""
    headers = signing.headers(keys, msg_id, timestamp, body)
    assert headers["webhook-id"] == msg_id
    assert headers["webhook-timestamp"] == str(timestamp)
    entries = headers["webhook-signature"].split(" ") if keys else []
    assert entries == [signing.sign(key, msg_id, timestamp, body) for key in keys]
    for entry in entries:
        version, _, encoded = entry.partition(",")
        assert version == "v1"
        assert len(base64.b64decode(encoded, validate=True)) == 32


@settings(PROPERTY, max_examples=50)
@given(msg_ids, offsets, bodies)
def test_generated_secrets_verify(msg_id: str, offset: int, body: bytes) -> None:
    secret = signing.generate_secret()
    assert secret.startswith(signing.SECRET_PREFIX)
    assert len(base64.b64decode(secret.removeprefix(signing.SECRET_PREFIX))) == 32
    assert verify(secret, body, signing.headers([secret], msg_id, int(time.time()) + offset, body))
