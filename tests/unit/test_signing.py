"""Unit tests for reminderd.signing, checked against the reference `standardwebhooks` verifier."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support import TEST_SECRET

from reminderd.signing import SECRET_PREFIX, generate_secret, secret_key, sign, verify

BODY = b'{"id":1,"tenant_id":"acme","ref_id":"r1","payload":{"x":"\xc3\xa9"}}'
WEBHOOK_ID = "msg_1_1767261600000"


def now_s() -> int:
    # The reference verifier checks the timestamp against its own clock (5-minute tolerance), so
    # signatures it must accept are made at the current time.
    return int(time.time())


def headers(webhook_id: str, timestamp_s: int, signature: str) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp_s), "webhook-signature": signature}


# Interoperability with the reference implementation


def test_matches_the_standard_webhooks_test_vector() -> None:
    # The example from the Standard Webhooks reference libraries (same secret as TEST_SECRET).
    assert TEST_SECRET == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign(TEST_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("timestamp_s", [0, 1614265330, 1767261600, 4102444800])
def test_signature_equals_reference_sign(timestamp_s: int) -> None:
    reference = Webhook(TEST_SECRET).sign(WEBHOOK_ID, datetime.fromtimestamp(timestamp_s, UTC), BODY.decode())
    assert sign(TEST_SECRET, WEBHOOK_ID, timestamp_s, BODY) == reference


@pytest.mark.parametrize("secret", [TEST_SECRET, generate_secret()], ids=["test-secret", "generated"])
def test_reference_verifier_accepts_our_signature(secret: str) -> None:
    ts = now_s()
    payload = Webhook(secret).verify(BODY, headers(WEBHOOK_ID, ts, sign(secret, WEBHOOK_ID, ts, BODY)))
    assert payload["payload"] == {"x": "é"}


@pytest.mark.parametrize(
    ("body", "webhook_id", "ts_shift"),
    [
        (BODY.replace(b'"r1"', b'"r2"'), WEBHOOK_ID, 0),
        (BODY + b" ", WEBHOOK_ID, 0),
        (BODY, WEBHOOK_ID, 1),
        (BODY, "msg_1_1767261600001", 0),
    ],
    ids=["tampered-body", "appended-byte", "tampered-timestamp", "tampered-id"],
)
def test_reference_verifier_rejects_tampering(body: bytes, webhook_id: str, ts_shift: int) -> None:
    ts = now_s()
    signature = sign(TEST_SECRET, WEBHOOK_ID, ts, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(TEST_SECRET).verify(body, headers(webhook_id, ts + ts_shift, signature))


def test_reference_verifier_rejects_another_secret() -> None:
    ts = now_s()
    signature = sign(generate_secret(), WEBHOOK_ID, ts, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(TEST_SECRET).verify(BODY, headers(WEBHOOK_ID, ts, signature))


# Our own verify()


def test_verify_accepts_own_signature() -> None:
    assert verify(TEST_SECRET, WEBHOOK_ID, 1700000000, BODY, sign(TEST_SECRET, WEBHOOK_ID, 1700000000, BODY))


@pytest.mark.parametrize(
    ("webhook_id", "timestamp_s", "body"),
    [
        ("msg_other", 1700000000, BODY),
        (WEBHOOK_ID, 1700000001, BODY),
        (WEBHOOK_ID, 1700000000, BODY[:-1]),
    ],
    ids=["id", "timestamp", "body"],
)
def test_verify_rejects_a_changed_field(webhook_id: str, timestamp_s: int, body: bytes) -> None:
    signature = sign(TEST_SECRET, WEBHOOK_ID, 1700000000, BODY)
    assert verify(TEST_SECRET, webhook_id, timestamp_s, body, signature) is False


def test_verify_accepts_any_matching_signature_in_a_space_separated_header() -> None:
    right = sign(TEST_SECRET, WEBHOOK_ID, 1700000000, BODY)
    wrong = sign(generate_secret(), WEBHOOK_ID, 1700000000, BODY)
    assert verify(TEST_SECRET, WEBHOOK_ID, 1700000000, BODY, f"{wrong} {right}") is True
    assert verify(TEST_SECRET, WEBHOOK_ID, 1700000000, BODY, f"{right} {wrong}") is True


@pytest.mark.parametrize("header", ["", " ", "v1,AAAA", "v1a,AAAA v2,BBBB"])
def test_verify_rejects_headers_without_a_matching_signature(header: str) -> None:
    assert verify(TEST_SECRET, WEBHOOK_ID, 1700000000, BODY, header) is False


# Secrets


def test_generated_secret_is_prefixed_base64_of_32_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith(SECRET_PREFIX)
    raw = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    assert len(raw) == 32
    assert secret_key(secret) == raw


def test_generated_secrets_are_unique() -> None:
    secrets = {generate_secret() for _ in range(200)}
    assert len(secrets) == 200


def test_sign_rejects_a_webhook_id_containing_a_dot() -> None:
    with pytest.raises(ValueError, match=r"must not contain '\.'"):
        sign(TEST_SECRET, "msg_1.5", 1700000000, BODY)


@pytest.mark.parametrize(
    "secret",
    ["whsec_not*base64!", "whsec_abc", "whsec_hunter2-hunter2", "whsec_", ""],
    ids=["bad-chars", "bad-padding", "url-alphabet", "empty-after-prefix", "empty"],
)
def test_invalid_secret_raises_value_error_without_echoing_it(secret: str) -> None:
    with pytest.raises(ValueError) as raised:
        sign(secret, WEBHOOK_ID, 1700000000, BODY)
    message = str(raised.value)
    assert "secret" in message
    secret_part = secret.removeprefix(SECRET_PREFIX)
    if secret_part:
        assert secret_part not in message
    # The decoder's own error, which could quote the secret, is not chained onto ours.
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__
