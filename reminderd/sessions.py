"""The dashboard's session cookie and CSRF tokens, once an API key signed in (reminderd/apikeys.py
checks the key: found by its visible prefix, its SHA-256 compared in constant time). The session
is a signed cookie, never the key:

    v1.<prefix>.<key id>.<issued, unix s>.<nonce>.<HMAC-SHA256 of the rest>

It says which key signed in and when; every request reads that key again (so a revoked key's
sessions end at once, and a key's scopes and tenant are the database's, not the cookie's), and in
the same statement whether this session was signed out: signing out puts the session's nonce in
reminderd.dashboard_signouts until the cookie would have expired anyway (`Session.expires_s`), so
a copy of the cookie is no session either, while the key's other sessions go on. The nonce gives
each session its CSRF token: HMAC(secret, "csrf." + nonce), put in every form that changes
something and compared in constant time. A sign-in form carries the same kind of token, tied to
a short-lived cookie of its own (a login CSRF token).

The secret signing both is `REMINDERD_SESSION_SECRET`; without one, each process draws its own at
start (sessions then last as long as the process, and only on it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TypeGuard

from .apikeys import PREFIX_LENGTH

SESSION_COOKIE = "reminderd_session"
LOGIN_COOKIE = "reminderd_login"
SESSION_MAX_AGE_S = 12 * 3600
LOGIN_MAX_AGE_S = 3600
KEY_PREFIX = re.compile(rf"rk_[a-z2-7]{{{PREFIX_LENGTH}}}")
_VERSION = "v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    """What a valid session cookie says."""

    prefix: str
    key_id: int
    issued_s: int
    nonce: str

    @property
    def expires_s(self) -> int:
        """When the cookie stops being a session whatever the server remembers of it (unix s):
        the last instant Signer.session() takes it. A sign-out need be kept no longer."""
        return self.issued_s + SESSION_MAX_AGE_S


class Signer:
    """Signs and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        if len(raw) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._session_key = hmac.new(raw, b"reminderd session", hashlib.sha256).digest()
        self._csrf_key = hmac.new(raw, b"reminderd csrf", hashlib.sha256).digest()
        self._notice_key = hmac.new(raw, b"reminderd notice", hashlib.sha256).digest()

    @classmethod
    def random(cls) -> Signer:
        return cls(secrets.token_bytes(32))

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self._session_key, text.encode("ascii"), hashlib.sha256).digest())

    def session_cookie(self, prefix: str, key_id: int, now_s: float) -> str:
        body = f"{_VERSION}.{prefix}.{key_id}.{int(now_s)}.{_b64(secrets.token_bytes(16))}"
        return f"{body}.{self._mac(body)}"

    def session(self, cookie: str | None, now_s: float, max_age_s: float = SESSION_MAX_AGE_S) -> Session | None:
        """The session a cookie holds, if it is ours, intact and not expired (ours is ASCII)."""
        if not cookie or len(cookie) > 400 or not cookie.isascii():
            return None
        parts = cookie.split(".")
        if len(parts) != 6 or parts[0] != _VERSION:
            return None
        body, mac = ".".join(parts[:5]), parts[5]
        if not hmac.compare_digest(self._mac(body), mac):
            return None
        _, prefix, key_id, issued, nonce = parts[:5]
        if not (KEY_PREFIX.fullmatch(prefix) and key_id.isdecimal() and issued.isdecimal()):
            return None
        if not -60 <= now_s - int(issued) <= max_age_s:
            return None
        return Session(prefix, int(key_id), int(issued), nonce)

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token of the session (or sign-in form) with this nonce (login_nonce's)."""
        return _b64(hmac.new(self._csrf_key, f"csrf.{nonce}".encode("ascii"), hashlib.sha256).digest())

    def notice_token(self, nonce: str, where: str, text: str) -> str:
        """The signature of a notice the server puts in a page's URL after an action (`where`
        names the page and the notice's kind), for the session with this nonce: a page shows only
        the notices its own server wrote for this session, never one a link makes up."""
        signed = f"notice.{nonce}.{where}.{text}".encode("utf-8", "surrogatepass")
        return _b64(hmac.new(self._notice_key, signed, hashlib.sha256).digest())

    def csrf_ok(self, nonce: str, presented: str | None) -> bool:
        """Whether `presented` is the token of `nonce`: False for a nonce not login_nonce()'s."""
        return is_nonce(nonce) and same_token(self.csrf_token(nonce), presented)


def login_nonce() -> str:
    return _b64(secrets.token_bytes(16))


_NONCE = re.compile(r"[A-Za-z0-9_-]{22}")  # 16 random bytes, base64url


def is_nonce(text: str | None) -> TypeGuard[str]:
    """Whether `text` (a sign-in form's cookie, sent back by the browser) is one login_nonce() made."""
    return text is not None and _NONCE.fullmatch(text) is not None


def same_token(expected: str, presented: str | None) -> bool:
    """Whether a presented token (any text a form holds) is the expected one, compared in
    constant time as bytes: hmac.compare_digest takes only ASCII str."""
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "backslashreplace"))
