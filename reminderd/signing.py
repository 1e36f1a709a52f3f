"""Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over id.timestamp.body."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from functools import lru_cache

SECRET_PREFIX = "whsec_"


def generate_secret() -> str:
    """A new signing secret: `whsec_` followed by 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_…` secret. Never echoes the secret in its error."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signing secret is not base64 after the whsec_ prefix") from None
    if not key:
        raise ValueError("signing secret is empty")
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
