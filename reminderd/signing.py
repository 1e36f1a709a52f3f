"""Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over id.timestamp.body."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from functools import lru_cache

SECRET_PREFIX = "whsec_"
# A secret the daemon signs with: whsec_, then the base64 of at least one byte, padded as base64 is.
# reminderd.is_signing_secret (reminderd/sql/schema.sql) is the same expression, so the database
# refuses what this would (tests/integration/test_signing_secrets.py compares them).
SECRET_FORMAT = re.compile(
    r"whsec_(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})"
)


def generate_secret() -> str:
    """A new signing secret: `whsec_` followed by 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def is_signing_secret(secret: str) -> bool:
    """Whether `secret` may be written as a tenant's secret: SECRET_FORMAT, the rule the database
    holds new and changed secrets to (reminderd.is_signing_secret)."""
    return SECRET_FORMAT.fullmatch(secret) is not None


@lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_…` secret. Never echoes the secret in its error. Laxer than
    is_signing_secret on purpose: a secret written before migration 0025 without the prefix, or
    padded loosely, still signs as it did."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "signing secret is not whsec_ followed by base64: rotate it (reminderd tenant rotate-secret)"
        ) from None
    if not key:
        raise ValueError("signing secret is empty: rotate it (reminderd tenant rotate-secret)")
    return key


def sign(secret: str, webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>`."""
    if "." in webhook_id:
        raise ValueError("webhook-id must not contain '.' (the signed content is dot-separated)")
    signed = b"%s.%d.%s" % (webhook_id.encode(), timestamp_s, body)
    digest = hmac.digest(secret_key(secret), signed, "sha256")  # one-shot: OpenSSL's, no HMAC object
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, webhook_id: str, timestamp_s: int, body: bytes, header: str) -> bool:
    """True when any `v1,` signature in the space-separated header matches, compared in constant time."""
    expected = sign(secret, webhook_id, timestamp_s, body).encode()
    matched = False
    for candidate in header.split():
        # Compare every candidate so the time taken does not reveal which one matched.
        matched |= hmac.compare_digest(candidate.encode(), expected)
    return matched
