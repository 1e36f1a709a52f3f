"""reminderd.sessions: the dashboard's signed session cookie and its CSRF tokens."""

from __future__ import annotations

import pytest

from reminderd.apikeys import acting_for
from reminderd.sessions import SESSION_MAX_AGE_S, Signer, is_nonce, login_nonce, same_token

NOW = 1_796_000_000.0
PREFIX = "rk_abcdefghijkl"


def test_a_session_cookie_says_which_key_signed_in_and_when_never_the_key() -> None:
    signer = Signer("a-secret-of-sixteen-chars")
    cookie = signer.session_cookie(PREFIX, 42, NOW)
    session = signer.session(cookie, NOW + 60)
    assert session is not None and (session.prefix, session.key_id, session.issued_s) == (PREFIX, 42, int(NOW))
    assert cookie.startswith(f"v1.{PREFIX}.42.") and len(cookie) < 200
    # Each sign-in is its own session, with its own CSRF token.
    other = signer.session(signer.session_cookie(PREFIX, 42, NOW), NOW)
    assert other is not None and other.nonce != session.nonce
    assert signer.csrf_token(other.nonce) != signer.csrf_token(session.nonce)


def test_a_changed_foreign_or_expired_cookie_is_no_session() -> None:
    signer = Signer("a-secret-of-sixteen-chars")
    cookie = signer.session_cookie(PREFIX, 42, NOW)
    version, prefix, key_id, issued, nonce, mac = cookie.split(".")
    for changed in (
        ".".join((version, prefix, "43", issued, nonce, mac)),
        ".".join((version, "rk_bbbbbbbbbbbb", key_id, issued, nonce, mac)),
        ".".join((version, prefix, key_id, str(int(issued) + 3600), nonce, mac)),
        ".".join(("v2", prefix, key_id, issued, nonce, mac)),
        cookie + "x", cookie[:-1], "", "v1.x", "." * 5, "v1." + "a" * 500,
        cookie[:-1] + "\u00e9", ".".join((version, prefix, key_id, issued, nonce + "\u00e9", mac)),
        "v1.a.1.1.x.\u00e9", "v1.a.1.1.x.\ud800",  # not ASCII: a browser's, never ours
    ):
        assert signer.session(changed, NOW) is None, changed
    assert Signer("another-secret-of-16").session(cookie, NOW) is None
    assert signer.session(cookie, NOW + SESSION_MAX_AGE_S + 1) is None
    assert signer.session(cookie, NOW - 3600) is None  # issued in the future


def test_a_session_expires_at_its_issue_time_plus_the_max_age_whatever_the_server_remembers() -> None:
    """A sign-out is kept until expires_s (reminderd.dashboard_signouts.expires_at): from the next
    second on, the cookie itself is refused, so deleting the sign-out then cannot bring it back."""
    signer = Signer("a-secret-of-sixteen-chars")
    cookie = signer.session_cookie(PREFIX, 42, NOW + 0.75)
    session = signer.session(cookie, NOW)
    assert session is not None and session.expires_s == int(NOW) + SESSION_MAX_AGE_S
    assert signer.session(cookie, session.expires_s) == session
    assert signer.session(cookie, session.expires_s + 1) is None
    assert signer.session(cookie, session.expires_s + 0.001) is None


def test_csrf_tokens_are_checked_in_constant_time_against_the_nonce() -> None:
    signer = Signer(b"0123456789abcdef0123")
    nonce = login_nonce()
    token = signer.csrf_token(nonce)
    assert signer.csrf_ok(nonce, token)
    assert not signer.csrf_ok(nonce, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not signer.csrf_ok(nonce, None) and not signer.csrf_ok(login_nonce(), token)
    assert Signer.random().csrf_token(nonce) != token
    # What a form or a cookie may hold instead: never an error, never a match.
    for presented in ("\u00e9", token + "\u00e9", "\ud800", ""):
        assert not signer.csrf_ok(nonce, presented) and not same_token(token, presented)
    for forged in ("\u00e9" * 22, nonce + "x", "", "a.b"):
        assert not is_nonce(forged) and not signer.csrf_ok(forged, token)
    assert is_nonce(nonce) and same_token(token, token)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer("short")


def test_the_audit_trail_names_the_key_by_its_prefix_and_name() -> None:
    assert acting_for(PREFIX, "ops-alice") == "rk_abcdefghijkl (ops-alice)"
