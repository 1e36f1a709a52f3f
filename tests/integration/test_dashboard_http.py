"""The dashboard over HTTP, served by the API's app in-process (as `reminderd serve` serves it, as a
login role granted reminderd_api) against a real database: signing in, who sees what, sessions and
CSRF, escaping, the pages' numbers, the actions and their audit trail, the live feed's Server-Sent
Events. (tests/browser drives the same pages in a real browser.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from support import API_ROLE, api_role_url, api_settings, poll_until, row_by_ref, running_api

from reminderd.dashboard import Dashboard
from reminderd.exceptions import DatabaseUnavailable
from reminderd.migrate import upgrade
from reminderd.sessions import SESSION_COOKIE, SESSION_MAX_AGE_S
from reminderd.settings import Settings
from reminderd.testing import Receiver, add_api_key, add_tenant

SECRET = "a-dashboard-session-secret-for-tests"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """A cookie-keeping HTTP client that signs in like a person would (the form, its token)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.session.get(self.url + path, allow_redirects=kwargs.pop("redirects", True),
                                    **kwargs) as answer:
            body = await answer.text()
            if (found := CSRF.search(body)) is not None:
                self.csrf = found[1]
            return answer.status, body

    async def post(self, path: str, data: dict[str, Any] | list[tuple[str, str]], *, csrf: bool = True,
                   headers: dict[str, str] | None = None) -> tuple[int, str, str]:
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        if csrf:
            fields.append(("csrf", self.csrf))
        async with self.session.post(self.url + path, data=fields, allow_redirects=True,
                                     headers=headers or {}) as answer:
            body = await answer.text()
            if (found := CSRF.search(body)) is not None:
                self.csrf = found[1]
            return answer.status, body, str(answer.url)

    async def sign_in(self, key: str) -> tuple[int, str]:
        await self.get("/login")
        status, body, _ = await self.post("/login", {"key": key, "next": "/dashboard/"})
        return status, body


@pytest.fixture
async def settings(db: asyncpg.Connection, database_url: str) -> Settings:
    return api_settings(await api_role_url(db, database_url), session_secret=SECRET)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The API's app with its dashboard, in this process; the dashboard's URL."""
    async with running_api(settings) as http:
        yield str(http.client.make_url("/dashboard"))


@pytest.fixture
async def dashboard(settings: Settings) -> AsyncIterator[str]:
    async with serving(settings) as url:
        yield url


@pytest.fixture
async def browser(dashboard: str) -> AsyncIterator[Browser]:
    client = Browser(dashboard)
    yield client
    await client.close()


async def operator(db: asyncpg.Connection, browser: Browser, *, read_only: bool = False) -> str:
    key = await add_api_key(db, None, name="ops-alice", read_only=read_only)
    status, _ = await browser.sign_in(key)
    assert status == 200
    return key


# Signing in -----------------------------------------------------------------------------------------


async def test_every_page_asks_to_sign_in_first(browser: Browser) -> None:
    for path in ("/", "/upcoming", "/feed", "/messages", "/messages/1", "/dead", "/broadcasts",
                 "/broadcasts/1"):
        async with browser.session.get(browser.url + path, allow_redirects=False) as answer:
            assert answer.status == 303
            assert answer.headers["Location"].startswith("/dashboard/login?next=")
    async with browser.session.get(browser.url + "/feed/stream") as answer:
        assert answer.status == 401


async def test_signing_in_with_a_key_sets_a_strict_httponly_cookie_without_the_key(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    key = await add_api_key(db, None, name="ops-alice")
    await browser.get("/login")
    form = {"key": key, "csrf": browser.csrf, "next": "/dashboard/dead"}
    async with browser.session.post(browser.url + "/login", allow_redirects=False, data=form) as answer:
        assert answer.status == 303 and answer.headers["Location"] == "/dashboard/dead"
        cookie = next(c for c in answer.headers.getall("Set-Cookie") if c.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard/" in cookie
    assert "Secure" not in cookie  # plain HTTP here: Secure when served over TLS
    secret_part = key.split("_", 2)[2]
    assert secret_part not in cookie and key not in cookie
    status, body = await browser.get("/")
    assert status == 200 and "ops-alice" in body and "operator" in body
    # Behind a proxy that ended TLS, the cookie is Secure too.
    await browser.get("/login")
    form = {"key": key, "csrf": browser.csrf, "next": "/dashboard/"}
    async with browser.session.post(browser.url + "/login", allow_redirects=False, data=form,
                                    headers={"X-Forwarded-Proto": "https"}) as answer:
        cookie = next(c for c in answer.headers.getall("Set-Cookie") if c.startswith(SESSION_COOKIE))
    assert "Secure" in cookie


async def test_a_wrong_revoked_or_missing_key_is_refused_with_one_line(
    db: asyncpg.Connection, browser: Browser
) -> None:
    key = await add_api_key(db, None, name="ops")
    altered = key[:-1] + ("a" if key[-1] != "a" else "b")
    for presented in ("rk_abcdefghijkl_" + "x" * 43, altered, "", "nonsense"):
        status, body = await browser.sign_in(presented)
        assert status == 401 and "not a valid API key" in body
    await db.execute("UPDATE reminderd.api_keys SET revoked_at = now()")
    status, _ = await browser.sign_in(key)
    assert status == 401


async def test_a_revoked_key_ends_its_sessions_at_once(db: asyncpg.Connection, browser: Browser) -> None:
    await operator(db, browser)
    assert (await browser.get("/", redirects=False))[0] == 200
    await db.execute("UPDATE reminderd.api_keys SET revoked_at = now()")
    assert (await browser.get("/", redirects=False))[0] == 303


async def with_cookie(url: str, value: str) -> int:
    """The status of the overview asked for with exactly this session cookie."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, session.get(
        url + "/", headers={"Cookie": f"{SESSION_COOKIE}={value}"}, allow_redirects=False
    ) as answer:
        return answer.status


async def test_a_forged_or_foreign_session_cookie_is_not_a_session(
    db: asyncpg.Connection, browser: Browser, settings: Settings
) -> None:
    await operator(db, browser)
    real = next(c.value for c in browser.session.cookie_jar if c.key == SESSION_COOKIE)
    assert await with_cookie(browser.url, real) == 200
    parts = real.split(".")
    other_id = ".".join([*parts[:2], str(int(parts[2]) + 1), *parts[3:]])
    for forged in (other_id, real[:-2] + "xx", "v1.x.1.1.x.x", ""):
        assert await with_cookie(browser.url, forged) == 303
    # Signed with another secret (another deployment): not ours.
    async with serving(replace(settings, session_secret="another-secret-of-16-chars")) as other:
        assert await with_cookie(other, real) == 303


async def test_the_sign_in_form_needs_its_token(db: asyncpg.Connection, browser: Browser) -> None:
    key = await add_api_key(db, None, name="ops")
    await browser.get("/login")
    status, body, _ = await browser.post("/login", {"key": key}, csrf=False)
    assert status == 403 and "expired" in body


# Signing out ----------------------------------------------------------------------------------------


def session_cookie(browser: Browser) -> str:
    return next(c.value for c in browser.session.cookie_jar if c.key == SESSION_COOKIE)


async def sign_out(browser: Browser, form: dict[str, str], *,
                   headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """POST /logout as the page's Sign out button does: the status, Location and session Set-Cookie."""
    async with browser.session.post(browser.url + "/logout", data=form, allow_redirects=False,
                                    headers=headers or {}) as answer:
        cleared = [c for c in answer.headers.getall("Set-Cookie", []) if c.startswith(SESSION_COOKIE)]
        return answer.status, answer.headers.get("Location", ""), "".join(cleared)


async def as_copy(url: str, cookie: str, method: str, path: str,
                  form: dict[str, str] | None = None) -> tuple[int, str]:
    """One request made with exactly this session cookie (a copy of it: another browser, a thief):
    its status and Location."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, session.request(
        method, url + path, headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}, data=form, allow_redirects=False
    ) as answer:
        return answer.status, answer.headers.get("Location", "")


async def signed_out(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await db.fetch(
        "SELECT nonce, key_id, expires_at FROM reminderd.dashboard_signouts ORDER BY expires_at, nonce")]


async def test_signing_out_ends_the_session_on_the_server_so_a_copy_of_its_cookie_is_no_session(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    from structlog.testing import capture_logs

    await db.execute("SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour')")
    later = (await row_by_ref(db, "later"))["id"]
    key = await operator(db, browser)
    copied = session_cookie(browser)
    _, _, key_id, issued, nonce, _ = copied.split(".")
    status, page = await browser.get(f"/messages/{later}")
    assert status == 200 and "Pause" in page
    token = browser.csrf
    assert await as_copy(browser.url, copied, "GET", f"/messages/{later}") == (200, "")

    with capture_logs() as logs:
        status, location, cleared = await sign_out(browser, {"csrf": token})
    assert (status, location) == (303, "/dashboard/login")
    assert "Max-Age=0" in cleared and "Path=/dashboard/" in cleared  # the browser's copy dropped
    # The server's: the session's nonce, until it would have expired anyway (never the cookie).
    assert await signed_out(db) == [
        (nonce, int(key_id), datetime.fromtimestamp(int(issued) + SESSION_MAX_AGE_S, UTC))]
    [line] = [e for e in logs if e["event"] == "dashboard_signed_out"]
    assert line["prefix"] == key[:15] and line["key"] == "ops-alice"
    assert nonce not in repr(logs) and token not in repr(logs) and copied not in repr(logs)

    # The copy: every page asks to sign in, every POST is refused, the feed's stream too.
    status, location = await as_copy(browser.url, copied, "GET", f"/messages/{later}")
    assert status == 303 and location.startswith("/dashboard/login?next=")
    assert (await as_copy(browser.url, copied, "GET", "/"))[0] == 303
    assert (await as_copy(browser.url, copied, "GET", "/feed/stream"))[0] == 401
    for action in ("pause", "cancel"):
        status, _ = await as_copy(browser.url, copied, "POST", f"/messages/{later}/{action}", {"csrf": token})
        assert status == 401
    assert (await as_copy(browser.url, copied, "POST", "/logout", {"csrf": token}))[0] == 401
    assert (await row_by_ref(db, "later"))["status"] == "pending"
    assert len(await signed_out(db)) == 1
    # The browser itself has no session left; the key signs in again, to a new session.
    assert (await browser.get("/", redirects=False))[0] == 303
    assert (await browser.sign_in(key))[0] == 200
    assert session_cookie(browser).split(".")[4] != nonce
    assert (await browser.get(f"/messages/{later}", redirects=False))[0] == 200


async def test_signing_out_leaves_the_keys_other_sessions_signed_in(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    """Signing out on one laptop does not sign out another: the same key, signed in twice."""
    await db.execute("SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour')")
    later = (await row_by_ref(db, "later"))["id"]
    key = await operator(db, browser)
    laptop = Browser(browser.url)
    try:
        assert (await laptop.sign_in(key))[0] == 200
        assert session_cookie(laptop) != session_cookie(browser)
        await browser.get("/")
        assert (await sign_out(browser, {"csrf": browser.csrf}))[0] == 303
        assert (await browser.get("/", redirects=False))[0] == 303
        status, page = await laptop.get(f"/messages/{later}", redirects=False)
        assert status == 200 and "Pause" in page
        status, _, _ = await laptop.post(f"/messages/{later}/pause", {})
        assert status == 200 and (await row_by_ref(db, "later"))["status"] == "paused"
    finally:
        await laptop.close()


async def test_a_sign_out_without_the_sessions_csrf_token_signs_nobody_out(
    db: asyncpg.Connection, browser: Browser
) -> None:
    """Refused as any POST without it (403, the page says why), so another site cannot sign a
    person out; the session goes on and nothing is written."""
    await operator(db, browser)
    await browser.get("/")
    other = Browser(browser.url)
    try:
        await operator(db, other)
        await other.get("/")
        for form, headers in (({}, None), ({"csrf": "forged"}, None), ({"csrf": other.csrf}, None),
                              ({"csrf": browser.csrf}, {"Origin": "https://evil.example"})):
            status, _, cleared = await sign_out(browser, form, headers=headers)
            assert status == 403 and cleared == "", form
        status, body, _ = await browser.post("/logout", {}, csrf=False)
        assert status == 403 and "security token" in body
    finally:
        await other.close()
    assert await signed_out(db) == []
    assert (await browser.get("/", redirects=False))[0] == 200


async def test_a_read_only_key_may_sign_out_and_its_session_ends(
    db: asyncpg.Connection, browser: Browser
) -> None:
    await operator(db, browser, read_only=True)
    copied = session_cookie(browser)
    await browser.get("/")
    status, location, _ = await sign_out(browser, {"csrf": browser.csrf})
    assert (status, location) == (303, "/dashboard/login")
    assert (await as_copy(browser.url, copied, "GET", "/"))[0] == 303
    assert len(await signed_out(db)) == 1


MARGIN, LIVE = "within-the-margin-xxxx", "still-a-session-xxxxxx"


async def test_each_sign_out_deletes_up_to_100_sign_outs_an_hour_past_their_sessions_expiry(
    db: asyncpg.Connection, browser: Browser
) -> None:
    """No housekeeping: the sign-outs themselves keep the table to the sessions that could still be
    presented (plus an hour's margin for clocks)."""
    await operator(db, browser)
    key_id = await db.fetchval("SELECT id FROM reminderd.api_keys")
    await db.execute(
        "INSERT INTO reminderd.dashboard_signouts (nonce, key_id, signed_out_at, expires_at)"
        " SELECT lpad(i::text, 22, 'x'), $1, now() - interval '13 hours',"
        "        now() - interval '2 hours' - i * interval '1 s'"
        " FROM generate_series(1, 150) AS i", key_id)
    await db.execute(
        "INSERT INTO reminderd.dashboard_signouts (nonce, key_id, expires_at) VALUES"
        " ($2, $1, now() - interval '30 minutes'), ($3, $1, now() + interval '6 hours')", key_id, MARGIN, LIVE)
    await browser.get("/")
    assert (await sign_out(browser, {"csrf": browser.csrf}))[0] == 303
    left = [nonce for nonce, _, _ in await signed_out(db)]
    # The 100 longest expired went; the 50 others, the one within the margin, the live one and the
    # new one stay.
    assert left[:50] == [f"{i:x>22}" for i in range(50, 0, -1)]
    assert left[50:52] == [MARGIN, LIVE] and len(left) == 53
    await operator(db, browser)
    await browser.get("/")
    assert (await sign_out(browser, {"csrf": browser.csrf}))[0] == 303
    assert [nonce for nonce, _, _ in await signed_out(db)][:2] == [MARGIN, LIVE]
    assert len(await signed_out(db)) == 4


async def test_the_sign_outs_migration_upgrades_a_database_with_keys_and_messages(
    empty_database_url: str
) -> None:
    """Keys and messages written before it stay as they were; only reminderd_api may touch the new
    table; a key made before signs in and out, and the signed-out session's copy is no session."""
    await asyncio.to_thread(upgrade, empty_database_url, "0019")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme", "https://example.com/cb")
        key = await add_api_key(db, None, name="ops-alice")
        await add_api_key(db, "acme", name="booking", read_only=True)
        message_id = await db.fetchval("SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour')")
        keys, messages = ("SELECT * FROM reminderd.api_keys ORDER BY id",
                          "SELECT id, ref_id, status, fire_at FROM reminderd.scheduled_messages ORDER BY id")
        async def rows() -> list[list[tuple[Any, ...]]]:
            return [[tuple(r) for r in await db.fetch(query)] for query in (keys, messages)]

        before = await rows()
        assert await db.fetchval("SELECT to_regclass('reminderd.dashboard_signouts')") is None

        await asyncio.to_thread(upgrade, empty_database_url)

        assert await rows() == before
        privileges = {
            role: [p for p in ("SELECT", "INSERT", "UPDATE", "DELETE") if await db.fetchval(
                "SELECT has_table_privilege($1, 'reminderd.dashboard_signouts', $2)", role, p)]
            for role in ("reminderd_api", "reminderd_app", "reminderd_readonly", "reminderd_daemon")
        }
        assert privileges == {"reminderd_api": ["SELECT", "INSERT", "DELETE"], "reminderd_app": [],
                              "reminderd_readonly": [], "reminderd_daemon": []}
        settings = api_settings(await api_role_url(db, empty_database_url), session_secret=SECRET)
        async with serving(settings) as url:
            browser = Browser(url)
            try:
                assert (await browser.sign_in(key))[0] == 200
                copied = session_cookie(browser)
                assert (await browser.get(f"/messages/{message_id}", redirects=False))[0] == 200
                assert (await sign_out(browser, {"csrf": browser.csrf}))[0] == 303
                assert (await as_copy(url, copied, "GET", f"/messages/{message_id}"))[0] == 303
            finally:
                await browser.close()
        assert len(await signed_out(db)) == 1
    finally:
        await db.close()


# Headers and escaping ------------------------------------------------------------------------------


async def test_pages_carry_a_csp_without_inline_script_and_no_store(db: asyncpg.Connection, browser: Browser,
                                                                     tenant: str) -> None:
    await operator(db, browser)
    for path in ("/", "/upcoming", "/feed", "/messages", "/dead", "/broadcasts", "/login"):
        async with browser.session.get(browser.url + path) as answer:
            policy = answer.headers["Content-Security-Policy"]
            body = await answer.text()
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert answer.headers["Cache-Control"] == "no-store" and answer.headers["X-Frame-Options"] == "DENY"
        assert re.search(r"app;dur=[0-9.]+", answer.headers["Server-Timing"])
        assert not re.search(r"<script(?![^>]*\bsrc=)", body)  # no inline script anywhere
        assert " style=" not in body and "<style" not in body  # no inline style either


async def test_a_script_in_a_ref_reason_or_payload_is_shown_as_text(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    evil = "<script>alert(1)</script>"
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, payload, last_error)"
        " VALUES ('acme', $1, now(), 'dead', jsonb_build_object('x', $1::text), $1)", evil,
    )
    message_id = (await row_by_ref(db, evil))["id"]
    await db.execute(
        "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, reason, actor)"
        " VALUES ($1, 'acme', $2, 'dead_lettered', 'dead', $2, current_user)", message_id, evil,
    )
    await operator(db, browser)
    for path in (f"/messages/{message_id}", "/messages?q=%3Cscript", "/dead", "/feed"):
        status, body = await browser.get(path)
        assert status == 200, path
        assert "<script>alert" not in body, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, path


# Who sees what -------------------------------------------------------------------------------------


def main(page: str, message_id: int) -> str:
    """A page's <main>, the message id in it replaced."""
    found = re.search(r"<main>(.*)</main>", page, re.S)
    assert found is not None
    return re.sub(rf"\b{message_id}\b", "N", found[1])


async def test_a_tenant_key_sees_its_tenant_only_even_by_url(db: asyncpg.Connection, browser: Browser) -> None:
    await add_tenant(db, "acme")
    await add_tenant(db, "globex")
    await db.execute(
        "SELECT reminderd.schedule('acme', 'acme:1', now() + interval '1 hour');"
        "SELECT reminderd.schedule('globex', 'globex:1', now() + interval '1 hour');"
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
        " VALUES ('globex', 'globex:dead', now(), 'dead')"
    )
    theirs = (await row_by_ref(db, "globex:1"))["id"]
    theirs_dead = (await row_by_ref(db, "globex:dead"))["id"]
    key = await add_api_key(db, "acme", name="booking")
    assert (await browser.sign_in(key))[0] == 200

    nowhere = await browser.get("/messages/999999")
    other = await browser.get(f"/messages/{theirs}")
    assert other[0] == nowhere[0] == 404
    assert main(other[1], theirs) == main(nowhere[1], 999999)  # the same answer
    for path in ("/", "/?tenant=globex", "/upcoming?tenant=globex", "/dead?tenant=globex",
                 "/feed?tenant=globex", f"/messages?q={theirs}&exact=0"):
        status, body = await browser.get(path)
        assert status == 200 and "globex" not in body, path
    status, body = await browser.get("/messages?q=globex")  # the search box says what was asked
    assert status == 200 and "No message has that id" in body and "globex:1" not in body
    for action in ("cancel", "pause", "send-now"):
        status, _, _ = await browser.post(f"/messages/{theirs}/{action}", {})
        assert status == 404
    status, body, _ = await browser.post("/dead/requeue", [("id", str(theirs_dead)), ("confirm", "yes")])
    assert (await row_by_ref(db, "globex:1"))["status"] == "pending"
    assert (await row_by_ref(db, "globex:dead"))["status"] == "dead"
    assert "0 requeued" in body or "Nothing to requeue" in body


async def test_a_read_only_key_sees_no_buttons_and_its_posts_are_refused(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await db.execute(
        "SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour');"
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
        " VALUES ('acme', 'gone', now(), 'dead')"
    )
    later, gone = (await row_by_ref(db, "later"))["id"], (await row_by_ref(db, "gone"))["id"]
    await operator(db, browser, read_only=True)
    _, page = await browser.get(f"/messages/{later}")
    assert "/cancel" not in page and "Send now" not in page and "Pause" not in page
    _, dead = await browser.get("/dead")
    assert "Requeue" not in dead and 'name="id"' not in dead
    for path, data in ((f"/messages/{later}/cancel", {}), (f"/messages/{gone}/requeue", {}),
                       ("/dead/requeue", {"id": str(gone), "confirm": "yes"})):
        status, body, _ = await browser.post(path, data)
        assert status == 403 and "read-only" in body
    assert (await row_by_ref(db, "later"))["status"] == "pending"
    assert (await row_by_ref(db, "gone"))["status"] == "dead"


async def test_a_post_without_the_csrf_token_or_from_another_site_is_refused(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour')")
    later = (await row_by_ref(db, "later"))["id"]
    await operator(db, browser)
    await browser.get(f"/messages/{later}")
    status, body, _ = await browser.post(f"/messages/{later}/cancel", {}, csrf=False)
    assert status == 403 and "security token" in body
    status, _, _ = await browser.post(f"/messages/{later}/cancel", {"csrf": "forged"}, csrf=False)
    assert status == 403
    status, body, _ = await browser.post(f"/messages/{later}/cancel", {}, headers={"Origin": "https://evil.example"})
    assert status == 403 and "another site" in body
    assert (await row_by_ref(db, "later"))["status"] == "pending"
    status, _, _ = await browser.post(f"/messages/{later}/cancel", {})
    assert status == 200 and (await row_by_ref(db, "later"))["status"] == "cancelled"


def _latin1(text: str) -> str:
    """`text` as its UTF-8 bytes in a header: what a browser sends for a non-ASCII cookie or field."""
    return text.encode().decode("latin-1")


async def test_a_cookie_that_is_not_ascii_is_no_session_and_signing_in_still_works(
    db: asyncpg.Connection, browser: Browser
) -> None:
    for value in ("v1.a.1.1.x.\u00e9", "\u00e9", "v1.rk_abcdefghijkl.1.1.\u00e9.x"):
        assert await with_cookie(browser.url, _latin1(value)) == 303  # as for any bad session: sign in
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, session.get(
        browser.url + "/login", headers={"Cookie": "reminderd_login=" + _latin1("n\u00e9")}
    ) as answer:
        assert answer.status == 200 and CSRF.search(await answer.text())  # a fresh sign-in form
        assert "n\u00e9" not in answer.headers["Set-Cookie"]
    await operator(db, browser)


async def test_a_csrf_token_that_is_not_ascii_is_refused_as_any_wrong_one(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour')")
    later = (await row_by_ref(db, "later"))["id"]
    await operator(db, browser)
    for token in ("\u00e9", browser.csrf + "\u00e9"):
        status, body, _ = await browser.post(f"/messages/{later}/cancel", {"csrf": token}, csrf=False)
        assert status == 403 and "security token" in body
    await browser.get("/login")
    status, body, _ = await browser.post("/login", {"key": "rk_x", "csrf": "\u00e9"}, csrf=False)
    assert status == 403 and "expired" in body
    assert (await row_by_ref(db, "later"))["status"] == "pending"


SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options")


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/upcoming?from=9999-12-31T00:00:00%2B00:00&to=9999-12-31T01:00:00%2B00:00", "from and to"),
        ("/upcoming?from=9999-12-31T20:00:00-14:00&to=9999-12-31T21:00:00-14:00", "from and to"),
        ("/messages?q=%F4%8F%BF%BF", "U+10FFFF"),
        ("/feed?ref=%F4%8F%BF%BF", "U+10FFFF"),
        ("/messages?q=a%00b", "NUL"),
        ("/dead?error=%00", "NUL"),
    ],
    ids=["upcoming-overflow", "upcoming-utc-overflow", "search", "feed", "nul", "nul-filter"],
)
async def test_query_values_no_page_can_use_are_a_400_page_with_the_security_headers(
    db: asyncpg.Connection, browser: Browser, path: str, says: str
) -> None:
    await operator(db, browser)
    async with browser.session.get(browser.url + path) as answer:
        body = await answer.text()
        assert answer.status == 400 and answer.headers["Content-Type"].startswith("text/html"), body
        assert all(name in answer.headers for name in SECURITY_HEADERS)
    assert says in body


async def test_a_form_that_is_not_utf8_is_a_400_page(db: asyncpg.Connection, browser: Browser) -> None:
    await operator(db, browser)
    form = b"csrf=" + browser.csrf.encode() + b"&key=\xff"  # raw bytes, not percent-encoded
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/login", "/dead/requeue"):
        async with browser.session.post(browser.url + path, data=form, headers=headers) as answer:
            body = await answer.text()
            assert answer.status == 400 and all(name in answer.headers for name in SECURITY_HEADERS), body
        assert "not UTF-8" in body


async def test_a_bug_is_a_500_page_with_the_security_headers_and_one_log_line_without_its_values(
    db: asyncpg.Connection, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    from reminderd.store import Store

    async def broken(self: Store, *args: Any, **kwargs: Any) -> list[Any]:
        raise RuntimeError("something secret-ish: rk_abcdefghijkl_s3cr3t")

    await operator(db, browser)
    monkeypatch.setattr(Store, "messages_by_ref", broken)
    with capture_logs() as logs:
        async with browser.session.get(browser.url + "/messages?q=booking") as answer:
            body = await answer.text()
    assert answer.status == 500 and answer.headers["Content-Type"].startswith("text/html")
    assert all(name in answer.headers for name in SECURITY_HEADERS) and "Traceback" not in body
    errors = [entry for entry in logs if entry["event"] == "dashboard_error"]
    assert len(errors) == 1 and errors[0]["error"] == "RuntimeError"
    assert errors[0]["path"] == "/dashboard/messages"
    assert errors[0]["at"].endswith("in broken")
    assert "s3cr3t" not in repr(logs)


async def test_a_forged_dead_letters_cursor_is_the_first_page_not_a_refusal(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
                     " VALUES ('acme', 'gone:1', now(), 'dead')")
    await operator(db, browser)
    for before in ("2026-01-01T00:00:00%2B00:00_99999999999999999999999", "9999-12-31T23:00:00-14:00_1"):
        status, body = await browser.get(f"/dead?before={before}")
        assert status == 200 and "The database refused" not in body
        assert "gone:1" in body  # not a cursor: the first page


async def test_refused_posts_are_logged_with_the_keys_prefix_never_a_token(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    from structlog.testing import capture_logs

    await db.execute("SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour')")
    later = (await row_by_ref(db, "later"))["id"]
    await operator(db, browser)
    await browser.get(f"/messages/{later}")
    token = browser.csrf
    with capture_logs() as logs:
        await browser.post(f"/messages/{later}/cancel", {"csrf": "forged-token-value"}, csrf=False)
        await browser.post(f"/messages/{later}/cancel", {}, headers={"Origin": "https://evil.example"})
    reader = Browser(browser.url)
    try:
        await operator(db, reader, read_only=True)
        await reader.get(f"/messages/{later}")
        with capture_logs() as read_only_logs:
            await reader.post(f"/messages/{later}/cancel", {})
    finally:
        await reader.close()
    refused = [e for e in logs + read_only_logs if e["event"] == "dashboard_post_refused"]
    assert [e["reason"] for e in refused] == ["csrf_token", "foreign_origin", "read_only"]
    assert all(e["key"].startswith("rk_") for e in refused)
    assert {e["path"] for e in refused} == {f"/dashboard/messages/{later}/cancel"}
    assert refused[1]["origin"] == "https://evil.example"
    assert "forged-token-value" not in repr(refused) and token not in repr(refused)
    assert reader.csrf not in repr(refused)


# The pages' numbers and actions --------------------------------------------------------------------


async def test_the_overview_counts_are_what_sql_counts(db: asyncpg.Connection, browser: Browser, tenant: str,
                                                       database_url: str, receiver: Receiver) -> None:
    await add_tenant(db, "globex")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
        " SELECT t, t || ':' || s || ':' || g, now() + CASE WHEN g % 3 = 0 THEN interval '-1 minute'"
        "        ELSE interval '1 hour' END, s"
        " FROM unnest(ARRAY['acme', 'globex']) t, unnest(ARRAY['pending', 'paused', 'dead', 'sent']) s,"
        "      generate_series(1, 7) g WHERE NOT (t = 'globex' AND s = 'dead')"
    )
    await operator(db, browser)
    _, body = await browser.get("/")
    expected = await db.fetch(
        "SELECT tenant_id, count(*) FILTER (WHERE status = 'pending') AS pending,"
        " count(*) FILTER (WHERE status = 'paused') AS paused, count(*) FILTER (WHERE status = 'dead') AS dead,"
        " count(*) FILTER (WHERE status = 'pending' AND fire_at <= now()) AS due"
        " FROM reminderd.scheduled_messages GROUP BY 1"
    )
    for row in expected:
        for column in ("pending", "paused", "dead", "due"):
            cell = re.search(
                rf'data-tenant="{row["tenant_id"]}" data-count="{column}"[^>]*>(?:<a[^>]*>)?([0-9,]+)', body)
            assert cell is not None and int(cell[1].replace(",", "")) == row[column], (row["tenant_id"], column)


async def test_the_overview_shows_the_registrys_daemons_alive_or_not_and_their_last_claim(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    """Which daemons are alive comes from reminderd.daemons (migration 0008), read by the API's
    role: an operator sees each with its state, what it holds and its last claim; a tenant's key
    only how many are alive and the latest claim (the hosts are the operator's business)."""
    await operator(db, browser)
    _, body = await browser.get("/")
    assert re.search(r'data-total="daemons">0<', body) and "none: nothing is sent" in body
    assert "No daemon registered" in body
    alive, dead = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000d"
    await db.execute(
        "INSERT INTO reminderd.daemons"
        " (id, host, pid, version, started_at, heartbeat_at, settings, last_claim_at) VALUES"
        " ($1, 'host-a', 101, '0.1.0', now() - interval '1 hour', now(), $3, now() - interval '30 minutes'),"
        " ($2, 'host-d', 404, '0.0.9', now() - interval '2 hours', now() - interval '1 minute', $3, NULL)",
        alive, dead, '{"heartbeat": 5, "dead_after": 15}',
    )
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, attempts, picked_at,"
        " picked_by) SELECT 'acme', 'held-' || n, now(), 'picked', 1, now(), $1 FROM generate_series(1, 3) n",
        alive,
    )
    _, body = await browser.get("/?fragment=live&tenant=acme")  # another scope: not the cached count
    assert re.search(r'data-total="daemons">1<', body)
    assert re.search(r'data-total="last_claim">last claim 30 min ago<', body)
    rows = dict(re.findall(r'<tr data-daemon="([0-9a-f-]+)">(.*?)</tr>', body, re.S))
    assert set(rows) == {alive, dead}
    assert "host-a" in rows[alive] and re.search(r"data-daemon-state>alive<", rows[alive])
    assert re.search(r'<td class="n">3</td>', rows[alive])  # the rows it holds
    assert "host-d" in rows[dead] and re.search(r"data-daemon-state>dead<", rows[dead])
    assert "none yet" in rows[dead]

    key = await add_api_key(db, "acme", name="acme-ops")
    other = Browser(browser.url)
    try:
        assert (await other.sign_in(key))[0] == 200
        _, body = await other.get("/")
        assert re.search(r'data-total="daemons">1<', body) and "last claim" in body
        assert "host-a" not in body and "data-daemon=" not in body
    finally:
        await other.close()


async def test_message_page_tells_the_whole_story_and_its_actions_are_audited_with_the_key(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule_cron('acme', 'digest', '0 9 * * 1-5', 'Europe/London')")
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() + interval '1 day'")
    digest = (await row_by_ref(db, "digest"))["id"]
    key = await operator(db, browser)
    prefix = key[:15]
    status, body = await browser.get(f"/messages/{digest}")
    assert status == 200
    assert "At 09:00, Monday through Friday" in body and "Europe/London" in body
    assert body.count("<li") >= 5  # the next fires
    assert "Waiting: due" in body

    status, body, url = await browser.post(f"/messages/{digest}/pause", {})
    assert f"/messages/{digest}?done=paused&sig=" in url and "Paused, not sent" in body
    status, body, _ = await browser.post(f"/messages/{digest}/resume", {})
    assert "resumed" in body
    trail = await db.fetch("SELECT event, on_behalf_of FROM reminderd.events WHERE message_id = $1 ORDER BY id",
                           digest)
    assert [(r["event"], r["on_behalf_of"]) for r in trail][-2:] == [
        ("paused", f"{prefix} (ops-alice)"), ("resumed", f"{prefix} (ops-alice)")]
    _, body = await browser.get(f"/messages/{digest}")
    assert f"{prefix} (ops-alice)" in body  # the trail shows who


async def test_a_message_of_a_broadcast_awaiting_approval_says_so_and_its_trail_shows_the_approval(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    # Audiences (migration 0009): a big broadcast's messages wait, live, for a second person.
    contacts = [{"contact_id": "ann", "timezone": "Asia/Tokyo"},
                {"contact_id": "bo", "timezone": "Europe/Berlin"}]
    await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)", json.dumps(contacts))
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 1 WHERE id = 'acme'")
    day = datetime.now(UTC).date() + timedelta(days=3)
    broadcast_id = await db.fetchval(
        "SELECT reminderd.broadcast('acme', 'bf', $1, everyone => true, actor => 'alice')",
        datetime(day.year, day.month, day.day, 9))
    first = await db.fetchval("SELECT min(id) FROM reminderd.scheduled_messages WHERE broadcast_id = $1",
                              broadcast_id)
    key = await operator(db, browser)
    status, body = await browser.get(f"/messages/{first}")
    assert status == 200 and "st-awaiting_approval" in body
    assert "awaits a second person&#39;s approval" in body
    assert f"/messages/{first}/cancel" in body and f"/messages/{first}/pause" not in body
    assert 'id="fires"' in body  # live: its next fire is shown
    assert f'<a id="broadcast-link" href="/dashboard/broadcasts/{broadcast_id}">' in body  # decided there
    assert await db.fetchval("SELECT reminderd.approve_broadcast('acme', $1, 'bob')", broadcast_id) == 2
    _, body = await browser.get(f"/messages/{first}")
    assert "Waiting: due" in body and ">approved<" in body  # the approval is in its trail
    # Neither staging nor approving is a fire: the aggregates and the feed have nothing.
    assert await db.fetchval("SELECT count(*) FROM reminderd.fire_counts") == 0
    _, body = await browser.get("/feed?tenant=acme")
    # (in the page's <main>: the header shows the key's random prefix, which may hold "bf")
    shown = re.search(r"<main>(.*)</main>", body, re.S)
    assert shown is not None and "bf" not in re.sub(r"<(script|head)\b.*?</\1>", "", shown[1], flags=re.S)
    status, body, _ = await browser.post(f"/messages/{first}/cancel", {})
    assert status == 200
    assert await db.fetchval("SELECT on_behalf_of FROM reminderd.events WHERE message_id = $1"
                             " AND event = 'cancelled'", first) == f"{key[:15]} (ops-alice)"


async def test_searching_by_id_ref_and_prefix(db: asyncpg.Connection, browser: Browser, tenant: str) -> None:
    await db.execute(
        "SELECT reminderd.schedule('acme', 'booking:b7d2:24h', now() + interval '1 day');"
        "SELECT reminderd.schedule('acme', 'booking:b7d2:1h', now() + interval '1 day');"
        "SELECT reminderd.schedule('acme', 'booking:c9', now() + interval '1 day')"
    )
    one = (await row_by_ref(db, "booking:c9"))["id"]
    await operator(db, browser)
    _, body = await browser.get("/messages?q=booking:b7d2")
    assert "booking:b7d2:24h" in body and "booking:b7d2:1h" in body and "booking:c9" not in body
    status, body = await browser.get(f"/messages?q={one}")  # an id: straight to it
    assert status == 200 and "<span id=\"ref\">booking:c9</span>" in body
    _, body = await browser.get("/messages?q=nothing-like-it")
    assert "No message has that id" in body


async def test_requeue_from_the_dead_letters_page_says_how_many_first(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, last_error, updated_at)"
        " SELECT 'acme', 'gone:' || g, now(), 'dead', CASE WHEN g <= 3 THEN 'HTTP 410' ELSE 'timeout' END,"
        "        now() - interval '2 hours' FROM generate_series(1, 5) g"
    )
    await operator(db, browser)
    _, body = await browser.get("/dead?error=410")
    assert '<span id="matching">3</span>' in body
    status, asked, _ = await browser.post("/dead/requeue", {"scope": "matching", "error": "410"})
    assert status == 200 and "Requeue 3 dead letters?" in asked
    # What requeue skips, said before it is done.
    assert "Those delivered before they died are not sent again" in " ".join(asked.split())
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'dead'") == 5
    assert ("confirm", "yes") in hidden_fields(asked)  # the Yes: the page's form, as a browser sends it
    status, body, url = await browser.post("/dead/requeue", hidden_fields(asked))
    assert "3 requeued" in body and "error=410" in url
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'dead'") == 2
    chosen = [str(r["id"]) for r in await db.fetch(
        "SELECT id FROM reminderd.scheduled_messages WHERE status = 'dead' ORDER BY id")]
    status, body, _ = await browser.post("/dead/requeue", [("scope", "selected"), ("id", chosen[0])])
    assert "Requeue 1 dead letter?" in body
    status, body, _ = await browser.post("/dead/requeue", [("only", chosen[1]), ("confirm", "yes")])
    assert "1 requeued" in body
    acted = await db.fetch("SELECT DISTINCT on_behalf_of FROM reminderd.events WHERE event = 'requeued'")
    assert [r["on_behalf_of"].endswith("(ops-alice)") for r in acted] == [True]


async def test_the_dashboards_requeue_skips_dead_letters_that_died_delivered_and_says_how_many(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await db.execute(  # two delivered in their last claim (sent_at after picked_at), then dead; one failed
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, last_error, updated_at,"
        "                                          picked_at, sent_at)"
        " SELECT 'acme', 'odd:' || g, now(), 'dead', 'boom', now() - interval '2 hours',"
        "        now() - interval '3 hours', CASE WHEN g <= 2 THEN now() - interval '2 hours' END"
        " FROM generate_series(1, 3) g"
    )
    await operator(db, browser)
    status, asked, _ = await browser.post("/dead/requeue", {"scope": "matching", "error": "boom"})
    assert status == 200 and "Requeue 3 dead letters?" in asked
    _, _, url = await browser.post("/dead/requeue", hidden_fields(asked))
    assert parse_qs(urlsplit(url).query)["done"] == [
        "1 requeued; 2 skipped: delivered before they died (requeueing would send them again)"]
    dead = await db.fetch("SELECT ref_id FROM reminderd.scheduled_messages WHERE status = 'dead' ORDER BY 1")
    assert [r["ref_id"] for r in dead] == ["odd:1", "odd:2"]
    one = await db.fetchval("SELECT id FROM reminderd.scheduled_messages WHERE ref_id = 'odd:1'")
    _, _, url = await browser.post("/dead/requeue", [("only", str(one)), ("confirm", "yes")])
    assert parse_qs(urlsplit(url).query)["done"] == [
        "0 requeued; 1 skipped: delivered before they died (requeueing would send them again)"]
    _, _, url = await browser.post(f"/messages/{one}/requeue", {})  # the message page's button
    assert parse_qs(urlsplit(url).query)["done"] == [
        "not requeued: it was delivered before it died, requeueing would send it again "
        "(reminderd.requeue(id, resend => true) does it on purpose)"]
    assert await db.fetchval("SELECT status FROM reminderd.scheduled_messages WHERE id = $1", one) == "dead"


async def test_requeue_all_matching_reaches_past_more_skipped_than_it_requeues_at_once(
    db: asyncpg.Connection, browser: Browser, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("reminderd.dashboard.REQUEUE_AT_MOST", 2)
    await db.execute(  # three delivered before they died, at the lowest ids; then two that failed
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, last_error, updated_at,"
        "                                          picked_at, sent_at)"
        " SELECT 'acme', 'odd:' || g, now(), 'dead', 'boom', now() - interval '2 hours',"
        "        now() - interval '3 hours', CASE WHEN g <= 3 THEN now() - interval '2 hours' END"
        " FROM generate_series(1, 5) g ORDER BY g"
    )
    await operator(db, browser)
    status, asked, _ = await browser.post("/dead/requeue", {"scope": "matching", "error": "boom"})
    assert status == 200 and "Requeue 2 dead letters?" in asked and "(at most 2 at once)" in asked
    _, _, url = await browser.post("/dead/requeue", hidden_fields(asked))
    assert parse_qs(urlsplit(url).query)["done"] == [  # skipped counted up to the limit too
        "2 requeued; at least 2 skipped: delivered before they died (requeueing would send them again)"]
    dead = await db.fetch("SELECT ref_id FROM reminderd.scheduled_messages WHERE status = 'dead' ORDER BY 1")
    assert [r["ref_id"] for r in dead] == ["odd:1", "odd:2", "odd:3"]
    status, asked, _ = await browser.post("/dead/requeue", {"scope": "matching", "error": "boom"})
    _, _, url = await browser.post("/dead/requeue", hidden_fields(asked))
    assert parse_qs(urlsplit(url).query)["done"] == [
        "0 requeued; at least 2 skipped: delivered before they died (requeueing would send them again)"]
    monkeypatch.setattr("reminderd.dashboard.REQUEUE_AT_MOST", 5)
    status, asked, _ = await browser.post("/dead/requeue", {"scope": "matching", "error": "boom"})
    _, _, url = await browser.post("/dead/requeue", hidden_fields(asked))
    assert parse_qs(urlsplit(url).query)["done"] == [
        "0 requeued; 3 skipped: delivered before they died (requeueing would send them again)"]


async def _recurring_died_delivered(db: asyncpg.Connection, ref: str) -> int:
    """A daily message dead after its receiver accepted it (sent_at after picked_at), as the daemon
    leaves one: the schema's guards of picked_at and sent_at are triggers, not run here."""
    message_id: int = await db.fetchval("SELECT reminderd.schedule_cron('acme', $1, '0 9 * * *')", ref)
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(
            "UPDATE reminderd.scheduled_messages SET status = 'dead', last_event = 'dead_lettered',"
            " picked_at = now() - interval '1 minute', sent_at = now(), last_error = 'boom: delivered',"
            " scheduled_for = fire_at, updated_at = now() - interval '2 hours' WHERE id = $1", message_id)
    return message_id


async def test_requeueing_a_recurring_one_that_died_delivered_says_it_moved_to_its_next_occurrence(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    daily = await _recurring_died_delivered(db, "daily")
    await operator(db, browser)
    _, _, url = await browser.post(f"/messages/{daily}/requeue", {})  # the message page's button
    assert parse_qs(urlsplit(url).query)["done"] == [
        "requeued: moved to its next occurrence (its last was delivered before it died)"]
    row = await db.fetchrow("SELECT status, fire_at FROM reminderd.scheduled_messages WHERE id = $1", daily)
    assert (row["status"], row["fire_at"]) == ("pending", None)

    await _recurring_died_delivered(db, "weekly")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, last_error, updated_at)"
        " VALUES ('acme', 'failed', now(), 'dead', 'boom: HTTP 500', now() - interval '2 hours')")
    status, asked, _ = await browser.post("/dead/requeue", {"scope": "matching", "error": "boom"})
    assert status == 200 and "Requeue 2 dead letters?" in asked
    _, _, url = await browser.post("/dead/requeue", hidden_fields(asked))
    assert parse_qs(urlsplit(url).query)["done"] == [
        "2 requeued, 1 of them moved to its next occurrence (its last was delivered before it died)"]
    rows = await db.fetch("SELECT ref_id, status, fire_at IS NULL AS onward FROM reminderd.scheduled_messages"
                          " WHERE ref_id IN ('weekly', 'failed') ORDER BY ref_id")
    assert [tuple(r) for r in rows] == [("failed", "pending", False), ("weekly", "pending", True)]

    ticked = [str(await _recurring_died_delivered(db, ref)) for ref in ("monthly", "yearly")]
    _, _, url = await browser.post("/dead/requeue", [("id", ticked[0]), ("id", ticked[1]), ("confirm", "yes")])
    assert parse_qs(urlsplit(url).query)["done"] == [
        "2 requeued, 2 of them moved to their next occurrence (their last was delivered before they died)"]


async def test_upcoming_draws_48_hourly_and_60_minute_bars_and_a_bar_lists_its_messages(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await db.execute("UPDATE reminderd.tenants SET quiet_start = '21:00', quiet_end = '07:00', calendar = 'GB'")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " SELECT 'acme', 'soon:' || g, now() + interval '3 hours' FROM generate_series(1, 4) g"
    )
    await operator(db, browser)
    _, body = await browser.get("/upcoming?tenant=acme&tz=Europe/London")
    assert body.count('class="bar-link"') == 48 + 60
    assert 'class="span quiet"' in body
    link = re.search(r'href="(/dashboard/upcoming\?[^"]*)"[^>]*data-messages="4"', body)
    assert link is not None
    _, listed = await browser.get(link[1].replace("&amp;", "&").removeprefix("/dashboard"))
    assert listed.count("soon:") == 4


async def test_the_feed_streams_each_fire_as_it_is_recorded(
    db: asyncpg.Connection, browser: Browser, tenant: str, database_url: str
) -> None:
    await operator(db, browser)
    got: list[str] = []

    async def listen() -> None:
        async with browser.session.get(browser.url + "/feed/stream?tenant=acme") as answer:
            assert answer.headers["Content-Type"].startswith("text/event-stream")
            async for line in answer.content:
                got.append(line.decode().rstrip("\n"))

    reader = asyncio.create_task(listen())
    try:
        await poll_until(lambda: _have(got, "retry: 2000"))
        await db.execute(
            "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, reason, actor)"
            " VALUES (1, 'acme', 'r1', 'fired', 'sent', NULL, current_user),"
            "        (2, 'globex', 'r2', 'fired', 'sent', NULL, current_user),"
            "        (3, 'acme', 'r3', 'created', 'pending', NULL, current_user)"
        )
        await poll_until(lambda: _have(got, "event: fire"))
        fired = await db.fetchval("SELECT id FROM reminderd.events WHERE ref_id = 'r1'")
        await asyncio.sleep(0)  # let anything else queued arrive before asserting there is nothing else
    finally:
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
    data = [line for line in got if line.startswith("data: ")]
    assert len(data) == 1 and '"ref_id": "r1"' in data[0]  # not globex's, not a non-fire
    assert f'"id": "e{fired}"' in data[0]
    # The SSE id is the feed's cursor once it has that event (and no delivery yet).
    assert f"id: {fired}.0" in got


@asynccontextmanager
async def fires_streamed(browser: Browser, last_event_id: str | None = None
                         ) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    """acme's feed as a browser reads it: each fire's SSE id and data, as they arrive."""
    fires: list[tuple[str, dict[str, Any]]] = []
    lines: list[str] = []

    async def listen() -> None:
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        async with browser.session.get(browser.url + "/feed/stream?tenant=acme", headers=headers) as answer:
            sse_id = ""
            async for raw in answer.content:
                line = raw.decode().rstrip("\n")
                lines.append(line)
                if line.startswith("id: "):
                    sse_id = line.removeprefix("id: ")
                elif line.startswith("data: "):
                    fires.append((sse_id, json.loads(line.removeprefix("data: "))))

    reader = asyncio.create_task(listen())
    try:
        await poll_until(lambda: _have(lines, "retry: 2000"))
        yield fires
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _fire(db: asyncpg.Connection, ref: str, *, table: str, tenant: str = "acme") -> None:
    """A fire as the write path records it: an attempt's change in deliveries, a held row's in events."""
    if table == "deliveries":
        await db.execute(
            "INSERT INTO reminderd.deliveries (message_id, tenant_id, ref_id, webhook_id, attempt,"
            " scheduled_for, status_code, duration_ms, event, status)"
            " VALUES (1, $1, $2, 'w', 1, now(), 200, 3, 'fired', 'sent')",
            tenant, ref,
        )
    else:
        await db.execute(
            "INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor)"
            " VALUES (1, $1, $2, 'deferred', 'pending', current_user)", tenant, ref,
        )


async def test_a_feed_reconnecting_with_its_last_event_id_gets_exactly_what_it_missed(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    """Fires come from both tables of the trail; the SSE id is a cursor over both, and a browser
    that reconnects with the last one it got (Last-Event-ID) gets every fire recorded meanwhile,
    in order, none it had, none twice, then the live ones."""
    await operator(db, browser)
    async with fires_streamed(browser) as first:
        await _fire(db, "a", table="events")
        await _fire(db, "b", table="deliveries")
        await poll_until(lambda: at_least(first, 2))
    assert [f["ref_id"] for _, f in first] == ["a", "b"]
    after_a, after_b = (sse_id for sse_id, _ in first)

    # Disconnected: fires of both tables, another tenant's, a non-fire.
    await _fire(db, "c", table="events")
    await _fire(db, "d", table="deliveries")
    await _fire(db, "x", table="deliveries", tenant="globex")
    await db.execute("INSERT INTO reminderd.events (message_id, tenant_id, ref_id, event, status, actor)"
                     " VALUES (1, 'acme', 'n', 'created', 'pending', current_user)")
    async with fires_streamed(browser, after_b) as resumed:
        await poll_until(lambda: at_least(resumed, 2))
        await _fire(db, "e", table="deliveries")  # live, after the catch-up
        await poll_until(lambda: at_least(resumed, 3))
        await _fire(db, "f", table="events")
        await poll_until(lambda: at_least(resumed, 4))
    assert [f["ref_id"] for _, f in resumed] == ["c", "d", "e", "f"]
    assert len({f["id"] for _, f in resumed}) == 4
    # Cut off earlier, in the middle of two tables' fires: from there on, exactly.
    async with fires_streamed(browser, after_a) as again:
        await poll_until(lambda: at_least(again, 5))
        await _fire(db, "g", table="events")
        await poll_until(lambda: at_least(again, 6))
    assert [f["ref_id"] for _, f in again] == ["b", "c", "d", "e", "f", "g"]
    assert [sse_id for sse_id, _ in again][-2] == [sse_id for sse_id, _ in resumed][-1]


async def at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


async def _have(lines: list[str], wanted: str) -> bool:
    return wanted in lines


# An open feed and its session ----------------------------------------------------------------------


@asynccontextmanager
async def rechecking(settings: Settings, *, every_s: float, every_events: int = 10_000
                     ) -> AsyncIterator[tuple[Browser, Dashboard]]:
    """A browser on a dashboard whose open streams check their session again this often, and
    what the dashboard's handlers share."""
    async with running_api(settings) as http:
        state = http.api.dashboard
        assert state is not None
        state.session_recheck_s, state.session_recheck_events = every_s, every_events
        client = Browser(str(http.client.make_url("/dashboard")))
        try:
            yield client, state
        finally:
            await client.close()


@asynccontextmanager
async def open_stream(browser: Browser) -> AsyncIterator[tuple[list[str], asyncio.Task[int]]]:
    """acme's feed, read line by line as it arrives; the task ends (with the status) when the
    server ends the stream."""
    lines: list[str] = []

    async def listen() -> int:
        async with browser.session.get(browser.url + "/feed/stream?tenant=acme") as answer:
            async for raw in answer.content:
                lines.append(raw.decode().rstrip("\n"))
            return answer.status

    reader = asyncio.create_task(listen())
    try:
        await poll_until(lambda: _have(lines, "retry: 2000"))
        yield lines, reader
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def ended(reader: asyncio.Task[int]) -> bool:
    return reader.done()


async def test_signing_out_ends_a_feed_open_in_that_session_within_the_recheck(
    db: asyncpg.Connection, settings: Settings, tenant: str
) -> None:
    async with rechecking(settings, every_s=0.05) as (browser, _):
        await operator(db, browser)
        copied = session_cookie(browser)
        await browser.get("/")
        async with open_stream(browser) as (lines, reader):
            await _fire(db, "before", table="events")
            await poll_until(lambda: _have(lines, "event: fire"))
            assert not reader.done()  # checked again many times meanwhile: still a session
            assert (await sign_out(browser, {"csrf": browser.csrf}))[0] == 303
            await poll_until(lambda: ended(reader))
            assert reader.result() == 200 and "event: signed-out" in lines
            await _fire(db, "after", table="events")
        assert not any('"ref_id": "after"' in line for line in lines)
        # The browser reconnecting (EventSource does, by itself) is refused.
        assert (await as_copy(browser.url, copied, "GET", "/feed/stream"))[0] == 401


async def test_revoking_the_key_ends_its_open_feeds_within_the_recheck(
    db: asyncpg.Connection, settings: Settings, tenant: str
) -> None:
    async with rechecking(settings, every_s=0.05) as (browser, _):
        await operator(db, browser)
        async with open_stream(browser) as (lines, reader):
            await db.execute("UPDATE reminderd.api_keys SET revoked_at = now()")
            await poll_until(lambda: ended(reader))
            assert "event: signed-out" in lines and "event: fire" not in lines


async def test_a_busy_feed_checks_its_session_every_n_events_too(
    db: asyncpg.Connection, settings: Settings, tenant: str
) -> None:
    """However fast fires come, no more than N go out unchecked: here N = 2, and no time passes
    for the interval to matter."""
    async with rechecking(settings, every_s=3600, every_events=2) as (browser, _):
        await operator(db, browser)
        async with open_stream(browser) as (lines, reader):
            for ref in ("a", "b", "c"):  # checked again before the third: still a session
                await _fire(db, ref, table="events")
            await poll_until(lambda: fires_in(lines, 3))
            await db.execute("UPDATE reminderd.api_keys SET revoked_at = now()")
            for ref in ("d", "e", "f"):
                await _fire(db, ref, table="events")
            await poll_until(lambda: ended(reader))
        refs = [json.loads(line.removeprefix("data: "))["ref_id"] for line in lines if '"ref_id"' in line]
        assert refs == ["a", "b", "c", "d"] and lines[-3:] == ["event: signed-out", "data: {}", ""]


async def test_a_feed_whose_session_cannot_be_checked_ends_and_the_browser_reconnects(
    db: asyncpg.Connection, settings: Settings, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database not answering the check is no reason to keep streaming: the stream ends
    without `signed-out` (so the page reconnects, and is checked as any request is)."""
    from structlog.testing import capture_logs

    async with rechecking(settings, every_s=0.05) as (browser, state):
        await operator(db, browser)
        async with open_stream(browser) as (lines, reader):
            async def unreachable(prefix: str, nonce: str) -> None:
                raise DatabaseUnavailable("the database did not answer")

            with capture_logs() as logs:
                monkeypatch.setattr(state.store, "dashboard_session", unreachable)
                await poll_until(lambda: ended(reader))
        assert "event: signed-out" not in lines
        [line] = [e for e in logs if e["event"] == "dashboard_stream_ended"]
        assert line["reason"] == "unchecked" and line["key"].startswith("rk_")


async def fires_in(lines: list[str], count: int) -> bool:
    return lines.count("event: fire") >= count


# Broadcasts (issue 14 in the dashboard) ------------------------------------------------------------


async def awaiting_broadcast(db: asyncpg.Connection, *, created_by: str = "alice", prefix: str = "bf",
                             payload: str = '{"offer": "BF30"}') -> int:
    """A broadcast of acme's to two contacts in Tokyo and one in Berlin, three days ahead at 09:00
    on each contact's clock, over the tenant's approval threshold: awaiting approval."""
    contacts = [{"contact_id": "ann", "timezone": "Asia/Tokyo"},
                {"contact_id": "aki", "timezone": "Asia/Tokyo"},
                {"contact_id": "bo", "timezone": "Europe/Berlin"}]
    await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)", json.dumps(contacts))
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 1 WHERE id = 'acme'")
    broadcast_id: int = await db.fetchval(
        "SELECT reminderd.broadcast('acme', $1, $2, everyone => true, payload => $3::jsonb, actor => $4)",
        prefix, nine_am_in_three_days(), payload, created_by)
    return broadcast_id


def nine_am_in_three_days() -> datetime:
    day = datetime.now(UTC).date() + timedelta(days=3)
    return datetime(day.year, day.month, day.day, 9)


async def statuses_of(db: asyncpg.Connection, broadcast_id: int) -> list[str]:
    found: list[str] = await db.fetchval(
        "SELECT array_agg(DISTINCT status ORDER BY status) FROM reminderd.scheduled_messages"
        " WHERE broadcast_id = $1", broadcast_id)
    return found


async def test_the_broadcasts_page_shows_each_broadcasts_progress_and_what_one_awaiting_approval_would_send(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    waiting = await awaiting_broadcast(db)
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = NULL WHERE id = 'acme'")
    weekly = await db.fetchval("SELECT reminderd.broadcast('acme', 'weekly', cron => '0 9 * * 1',"
                               " contact_ids => ARRAY['bo'], category => 'news', actor => 'carol')")
    await operator(db, browser)
    status, body = await browser.get("/broadcasts")
    assert status == 200 and 'aria-current="page">Broadcasts<' in body
    rows = dict(re.findall(r'<tr data-broadcast="([0-9]+)">(.*?)</tr>', body, re.S))
    assert list(rows) == [str(weekly), str(waiting)]  # newest first
    row = rows[str(waiting)]
    assert ">bf<" in row and "on each contact&#39;s clock" in row and "everyone" in row and "alice" in row
    assert "marketing" in row and "awaiting approval" in row
    view = await db.fetchrow("SELECT * FROM reminderd.broadcasts WHERE id = $1", waiting)
    for column in ("staged", "sent", "held", "failed", "cancelled"):
        assert re.search(rf'data-count="{column}">{view[column]}<', row), column
    assert view["held"] == 3 and "3 messages would go out" in row
    # Its sends per UTC hour: 09:00 in Tokyo and in Berlin, as zoneinfo has them.
    local = nine_am_in_three_days()
    for zone, sends in (("Asia/Tokyo", 2), ("Europe/Berlin", 1)):
        hour = local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
        assert re.search(rf"{hour:%Y-%m-%d %H}:00 UTC</span> <span class=\"n\">{sends}<", row), zone
    other = rows[str(weekly)]
    assert 'cron &#34;0 9 * * 1&#34;' in other and "1 contacts" in other
    assert "news" in other and "carol" in other
    assert "would go out" not in other and ">live<" in other
    # Only those awaiting approval; a tenant's key sees its own tenant's only.
    _, body = await browser.get("/broadcasts?awaiting=1")
    assert re.findall(r'<tr data-broadcast="([0-9]+)">', body) == [str(waiting)]
    await add_tenant(db, "globex")
    key = await add_api_key(db, "globex", name="globex-ops")
    other_browser = Browser(browser.url)
    try:
        assert (await other_browser.sign_in(key))[0] == 200
        _, body = await other_browser.get("/broadcasts?tenant=acme")
        assert "data-broadcast=" not in body and "No broadcasts" in body
        nowhere = await other_browser.get("/broadcasts/999999")
        theirs = await other_browser.get(f"/broadcasts/{waiting}")
        assert theirs[0] == nowhere[0] == 404
        assert main(theirs[1], waiting) == main(nowhere[1], 999999)  # the same answer
        for action in ("approve", "reject", "cancel"):
            status, _, _ = await other_browser.post(f"/broadcasts/{waiting}/{action}", {})
            assert status == 404
    finally:
        await other_browser.close()
    assert await statuses_of(db, waiting) == ["awaiting_approval"]


async def test_the_overview_counts_messages_awaiting_approval_and_calls_to_action(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await operator(db, browser)
    _, body = await browser.get("/")
    assert 'id="awaiting-cta"' not in body and re.search(r'data-total="awaiting">0<', body)
    waiting = await awaiting_broadcast(db)
    _, body = await browser.get("/?fragment=live&tenant=acme")  # another scope: not the cached count
    assert re.search(r'data-total="awaiting">3<', body)
    cta = re.search(r'<p class="notice cta" id="awaiting-cta"><a href="([^"]+)">(.*?)</a>', body, re.S)
    assert cta is not None
    assert re.sub(r"<[^>]+>", "", cta[2]) == "1 broadcast awaiting approval"
    assert cta[1] == "/dashboard/broadcasts?awaiting=1&amp;tenant=acme"
    _, body = await browser.get("/?tenant=acme")
    counted = await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages"
                                " WHERE tenant_id = 'acme' AND status = 'awaiting_approval'")
    cell = re.search(r'data-tenant="acme" data-count="awaiting"><a href="[^"]+">([0-9,]+)<', body)
    assert cell is not None and int(cell[1]) == counted == 3
    assert re.search(r'data-tenant="acme" data-count="pending">0<', body)  # not pending: nothing fires
    await browser.get(f"/broadcasts/{waiting}")
    await browser.post(f"/broadcasts/{waiting}/approve", {})  # an action: the overview counts again
    _, body = await browser.get("/?fragment=live&tenant=acme")
    assert 'id="awaiting-cta"' not in body and re.search(r'data-total="awaiting">0<', body)
    assert re.search(r'data-total="pending">3<', body)


async def test_approving_from_the_page_makes_the_rows_pending_audited_with_the_key(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    waiting = await awaiting_broadcast(db)
    key = await operator(db, browser)
    who = f"{key[:15]} (ops-alice)"
    status, body = await browser.get(f"/broadcasts/{waiting}")
    assert status == 200 and 'id="approve"' in body and 'id="reject"' in body and 'id="cancel"' not in body
    assert f"You act as <span class=\"actor\">{who}</span>" in body
    status, body, url = await browser.post(f"/broadcasts/{waiting}/approve", {"note": "copy checked"})
    assert status == 200 and urlsplit(url).path == f"/dashboard/broadcasts/{waiting}"
    query = parse_qs(urlsplit(url).query)
    assert query.keys() == {"done", "sig"} and query["done"] == ["approved: 3 messages now pending"]
    assert "approved: 3 messages now pending" in body and 'id="approve"' not in body
    assert 'id="cancel"' in body  # now it is running: it can be cancelled
    assert await statuses_of(db, waiting) == ["pending"]
    decided = await db.fetchrow("SELECT approval, decided_by FROM reminderd.broadcasts WHERE id = $1", waiting)
    assert tuple(decided) == ("approved", who)
    assert re.search(rf"approved by <span class=\"actor\">{re.escape(who)}</span>.*: copy checked", body)
    events = await db.fetch("SELECT actor, on_behalf_of, reason FROM reminderd.events e"
                            " JOIN reminderd.scheduled_messages m ON m.id = e.message_id"
                            " WHERE m.broadcast_id = $1 AND e.event = 'approved'", waiting)
    assert len(events) == 3
    assert {(e["on_behalf_of"], e["reason"]) for e in events} == {
        (who, f"broadcast {waiting} approved by {who}: copy checked")}
    assert {e["actor"] for e in events} == {API_ROLE}  # the role that did it, beside the key


async def test_the_creator_approving_their_own_broadcast_gets_the_refusal_as_a_sentence(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    key = await add_api_key(db, None, name="ops-alice")
    waiting = await awaiting_broadcast(db, created_by=f"{key[:15]} (ops-alice)")  # created with this key
    assert (await browser.sign_in(key))[0] == 200
    await browser.get(f"/broadcasts/{waiting}")
    status, body, url = await browser.post(f"/broadcasts/{waiting}/approve", {})
    assert status == 200 and "problem=" in url  # the broadcast's page, not an error page
    problem = re.search(r'<p class="notice bad" role="alert" id="problem">(.*?)</p>', body, re.S)
    assert problem is not None
    assert problem[1] == (f"broadcast {waiting} was created by {key[:15]} (ops-alice): another person must "
                          "approve it. High volumes need a second person: ask someone else to approve it.")
    assert await statuses_of(db, waiting) == ["awaiting_approval"]
    assert await db.fetchval("SELECT approval FROM reminderd.broadcasts WHERE id = $1", waiting) == "awaiting"
    # Rejecting one's own is allowed (it stops a send, it does not start one).
    status, body, _ = await browser.post(f"/broadcasts/{waiting}/reject", {})
    assert "rejected: 3 messages cancelled" in body


async def test_rejecting_from_the_page_cancels_every_row_audited_with_the_key(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    waiting = await awaiting_broadcast(db)
    key = await operator(db, browser)
    who = f"{key[:15]} (ops-alice)"
    await browser.get(f"/broadcasts/{waiting}")
    status, body, _ = await browser.post(f"/broadcasts/{waiting}/reject", {"note": "wrong offer"})
    assert status == 200 and "rejected: 3 messages cancelled" in body
    assert await statuses_of(db, waiting) == ["cancelled"]
    shown = await db.fetchrow(
        "SELECT approval, decided_by, cancelled, done FROM reminderd.broadcasts WHERE id = $1", waiting)
    assert tuple(shown) == ("rejected", who, 3, True)
    assert 'id="approve"' not in body and 'id="cancel"' not in body  # decided: nothing more to do
    events = await db.fetch("SELECT e.on_behalf_of, e.reason FROM reminderd.events e"
                            " JOIN reminderd.scheduled_messages m ON m.id = e.message_id"
                            " WHERE m.broadcast_id = $1 AND e.event = 'rejected'", waiting)
    assert len(events) == 3 and {tuple(e) for e in events} == {
        (who, f"broadcast {waiting} rejected by {who}: wrong offer")}
    # Decided once: approving it now is refused with the reason, on the page.
    status, body, _ = await browser.post(f"/broadcasts/{waiting}/approve", {})
    assert status == 200 and "approve is not possible: broadcast" in body and "rejected" in body


async def test_cancelling_a_running_broadcast_from_the_page(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    waiting = await awaiting_broadcast(db)
    await db.execute("SELECT reminderd.approve_broadcast('acme', $1, 'bob')", waiting)
    key = await operator(db, browser)
    status, body = await browser.get(f"/broadcasts/{waiting}")
    assert 'id="cancel"' in body and "data-confirm=" in body
    status, body, _ = await browser.post(f"/broadcasts/{waiting}/cancel", {})
    assert status == 200 and "cancelled: 3 messages cancelled" in body
    assert await statuses_of(db, waiting) == ["cancelled"]
    cancelled = await db.fetch(
        "SELECT e.on_behalf_of FROM reminderd.events e"
        " JOIN reminderd.scheduled_messages m ON m.id = e.message_id"
        " WHERE m.broadcast_id = $1 AND e.event = 'cancelled'", waiting)
    assert len(cancelled) == 3 and {r["on_behalf_of"] for r in cancelled} == {f"{key[:15]} (ops-alice)"}
    assert await db.fetchval("SELECT done FROM reminderd.broadcasts WHERE id = $1", waiting)


async def test_broadcast_actions_need_the_csrf_token_and_a_key_that_may_write(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    waiting = await awaiting_broadcast(db)
    await operator(db, browser)
    await browser.get(f"/broadcasts/{waiting}")
    status, body, _ = await browser.post(f"/broadcasts/{waiting}/approve", {}, csrf=False)
    assert status == 403 and "security token" in body
    status, _, _ = await browser.post(f"/broadcasts/{waiting}/approve", {"csrf": "forged"}, csrf=False)
    assert status == 403
    status, body, _ = await browser.post(f"/broadcasts/{waiting}/reject", {},
                                         headers={"Origin": "https://evil.example"})
    assert status == 403 and "another site" in body
    assert await statuses_of(db, waiting) == ["awaiting_approval"]

    reader = Browser(browser.url)
    try:
        await operator(db, reader, read_only=True)
        _, page = await reader.get(f"/broadcasts/{waiting}")
        assert "/approve" not in page and "/reject" not in page and 'id="approve"' not in page
        for action in ("approve", "reject", "cancel"):
            status, body, _ = await reader.post(f"/broadcasts/{waiting}/{action}", {})
            assert status == 403 and "read-only" in body
    finally:
        await reader.close()
    assert await statuses_of(db, waiting) == ["awaiting_approval"]
    assert await db.fetchval("SELECT approval FROM reminderd.broadcasts WHERE id = $1", waiting) == "awaiting"


async def test_a_broadcasts_page_shows_its_waves_and_links_to_its_messages(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    waiting = await awaiting_broadcast(db)
    await operator(db, browser)
    _, body = await browser.get(f"/broadcasts/{waiting}")
    waves = re.search(r'<table class="grid" id="waves">.*?<tbody>(.*?)</tbody>', body, re.S)
    assert waves is not None
    wave = await db.fetchrow("SELECT * FROM reminderd.broadcast_occurrences WHERE broadcast_id = $1", waiting)
    assert f"{wave['occurrence']:%Y-%m-%d %H:%M}" in waves[1]
    assert re.search(r'<td class="n">3</td>', waves[1])  # its contacts
    assert f"{wave['first_fire_at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" in waves[1]
    assert '<pre class="payload" id="payload">{&#34;offer&#34;: &#34;BF30&#34;}</pre>' in body
    link = re.search(r'<a id="messages-link" href="([^"]+)"', body)
    assert link is not None and link[1] == "/dashboard/messages?q=bf%3A&amp;tenant=acme"
    _, listed = await browser.get(link[1].replace("&amp;", "&").removeprefix("/dashboard"))
    refs = set(re.findall(r'class="ref" href="[^"]+">([^<]+)<', listed))
    assert refs == {"bf:ann", "bf:aki", "bf:bo"}


async def test_a_script_in_a_broadcasts_prefix_or_payload_is_shown_as_text(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    evil = "<script>alert(1)</script>"
    waiting = await awaiting_broadcast(db, prefix=evil, payload=json.dumps({"x": evil}),
                                       created_by=evil)
    await operator(db, browser)
    for path in ("/broadcasts", f"/broadcasts/{waiting}", f"/messages?q={evil}&tenant=acme", "/"):
        status, body = await browser.get(path)
        assert status == 200, path
        assert "<script>alert" not in body, path
        if path != "/":
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, path
    status, body, _ = await browser.post(f"/broadcasts/{waiting}/approve", {"note": evil})
    assert status == 200 and "<script>alert" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


# What a review in a real browser found ---------------------------------------------------------------

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def hidden_fields(body: str) -> list[tuple[str, str]]:
    """The hidden inputs of the page's forms but the CSRF token (Browser.post adds its own)."""
    import html
    return [(name, html.unescape(value)) for name, value in HIDDEN.findall(body) if name != "csrf"]


async def test_requeue_yes_requeues_only_the_dead_letters_the_page_counted(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await add_tenant(db, "globex")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, last_error, updated_at)"
        " SELECT 'acme', 'boom:' || g, now(), 'dead', 'boomx', now() - interval '1 hour'"
        " FROM generate_series(1, 3) g")
    await operator(db, browser)
    status, asked, _ = await browser.post("/dead/requeue", {"scope": "matching", "error": "boomx"})
    assert status == 200 and "Requeue 3 dead letters?" in asked
    await db.execute(  # they die after the page was drawn
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, last_error)"
        " SELECT 'globex', 'boom:' || g, now(), 'dead', 'boomx' FROM generate_series(1, 4) g")
    status, body, url = await browser.post("/dead/requeue", hidden_fields(asked))
    assert status == 200 and parse_qs(urlsplit(url).query)["done"] == ["3 requeued"]
    left = await db.fetch("SELECT tenant_id, status FROM reminderd.scheduled_messages ORDER BY id")
    assert [tuple(r) for r in left] == [("acme", "pending")] * 3 + [("globex", "dead")] * 4

    # Fewer than confirmed (one requeued meanwhile): the page says so and asks again.
    status, asked, _ = await browser.post("/dead/requeue", {"scope": "matching", "error": "boomx"})
    assert "Requeue 4 dead letters?" in asked
    await db.execute(
        "SELECT reminderd.requeue(max(id)) FROM reminderd.scheduled_messages WHERE status = 'dead'")
    status, body, _ = await browser.post("/dead/requeue", hidden_fields(asked))
    assert status == 200 and "Requeue 3 dead letters?" in body
    assert "4 were counted when you asked; 3 match now" in body
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'dead'") == 3
    # A Yes without the page's mark (a form made elsewhere) only asks.
    status, body, _ = await browser.post("/dead/requeue",
                                         {"scope": "matching", "error": "boomx", "confirm": "yes"})
    assert status == 200 and "Requeue 3 dead letters?" in body
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'dead'") == 3


async def test_a_sign_in_from_another_origin_says_so_and_is_logged(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    from structlog.testing import capture_logs

    key = await add_api_key(db, None, name="ops-alice")
    for origin in ("https://reminderd.example.com", "http://evil.example"):
        await browser.get("/login")
        with capture_logs() as logs:
            status, body, _ = await browser.post("/login", {"key": key}, headers={
                "Origin": origin, "X-Forwarded-Proto": "https"})
        assert status == 403 and "sent from another site" in body and "expired" not in body
        assert "REMINDERD_DASHBOARD_ORIGIN" in body
        [line] = [e for e in logs if e["event"] == "dashboard_post_refused"]
        assert line["reason"] == "foreign_origin" and line["origin"] == origin
        assert line["path"] == "/dashboard/login"
        assert key not in repr(logs) and browser.csrf not in repr(logs)
    await browser.get("/login")
    with capture_logs() as logs:
        status, body, _ = await browser.post("/login", {"key": key, "csrf": "stale"}, csrf=False)
    assert status == 403 and "The sign-in form expired: try again." in body
    [line] = [e for e in logs if e["event"] == "dashboard_post_refused"]
    assert line["reason"] == "csrf_token" and "stale" not in repr(logs)


async def test_a_configured_public_origin_lets_a_proxy_pass_its_own_host(
    db: asyncpg.Connection, settings: Settings, tenant: str
) -> None:
    public = replace(settings, dashboard_origin="https://reminderd.example.com")
    async with serving(public) as url:
        client = Browser(url)
        try:
            key = await add_api_key(db, None, name="ops-alice")
            await client.get("/login")
            status, body, _ = await client.post("/login", {"key": key, "next": "/dashboard/"}, headers={
                "Origin": "https://reminderd.example.com"})
            assert status == 200 and "ops-alice" in body
            await client.get("/dead")
            status, _, _ = await client.post("/logout", {}, headers={"Origin": "https://evil.example"})
            assert status == 403
            status, _, _ = await client.post("/logout", {}, headers={
                "Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"})
            assert status == 403  # X-Forwarded-Host is not trusted
        finally:
            await client.close()


def test_the_public_origin_setting_is_an_origin() -> None:
    from reminderd.exceptions import ConfigError

    given = {"REMINDERD_DATABASE_URL": "postgresql://u@127.0.0.1/db"}
    ok = Settings.from_env({**given, "REMINDERD_DASHBOARD_ORIGIN": "https://Reminderd.example.com:8443/"})
    assert ok.dashboard_origin == "https://reminderd.example.com:8443"
    for bad in ("reminderd.example.com", "ftp://x.example", "https://x.example/dashboard", "https://"):
        with pytest.raises(ConfigError, match="REMINDERD_DASHBOARD_ORIGIN"):
            Settings.from_env({**given, "REMINDERD_DASHBOARD_ORIGIN": bad})


@pytest.mark.parametrize(("given", "origin"), [
    ("https://dash.example.com:443", "https://dash.example.com"),
    ("http://Dash.example.com:80/", "http://dash.example.com"),
    ("https://[::1]:443", "https://[::1]"),
    ("http://dash.example.com:443", "http://dash.example.com:443"),  # not http's default
    ("https://dash.example.com:08443", "https://dash.example.com:8443"),
])
def test_the_public_origin_is_spelt_as_a_browser_sends_it(given: str, origin: str) -> None:
    """A browser's Origin leaves a scheme's default port out: one configured with it matches too."""
    settings = Settings.from_env({"REMINDERD_DATABASE_URL": "postgresql://u@127.0.0.1/db",
                                  "REMINDERD_DASHBOARD_ORIGIN": given})
    assert settings.dashboard_origin == origin


async def test_a_notice_in_the_url_shows_only_when_this_server_wrote_it(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    waiting = await awaiting_broadcast(db)
    await db.execute("SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour')")
    later = (await row_by_ref(db, "later"))["id"]
    await operator(db, browser)
    phish = "Your session has expired. Sign in again at https://evil.example"
    for path in (f"/broadcasts/{waiting}?problem={phish}", f"/broadcasts/{waiting}?done={phish}",
                 f"/messages/{later}?done={phish}", f"/dead?done={phish}"):
        status, body = await browser.get(path)
        assert status == 200 and "evil.example" not in body and 'role="alert"' not in body, path
    # The server's own notice shows (its URL signed for this session), and only in this session.
    await browser.get(f"/messages/{later}")
    status, body, url = await browser.post(f"/messages/{later}/pause", {})
    assert status == 200 and "paused" in parse_qs(urlsplit(url).query)["done"]
    assert re.search(r'id="done"[^>]*>paused<', body)
    forged = url.replace("done=paused", "done=cancelled")
    assert not re.search(r'id="done"', (await browser.get(forged[len(browser.url):]))[1])
    other = Browser(browser.url)
    try:
        await operator(db, other)
        assert not re.search(r'id="done"', (await other.get(url[len(browser.url):]))[1])
    finally:
        await other.close()


async def test_a_form_that_is_not_utf8_is_a_400_naming_the_field(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    waiting = await awaiting_broadcast(db)
    await db.execute("SELECT reminderd.schedule('acme', 'later', now() + interval '1 hour')")
    later = (await row_by_ref(db, "later"))["id"]
    await operator(db, browser)
    await browser.get(f"/broadcasts/{waiting}")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    token = browser.csrf.replace("-", "%2D")
    for path, body, field in ((f"/broadcasts/{waiting}/reject", f"csrf={token}&note=caf%E9+cr%E8me", "note"),
                              (f"/messages/{later}/pause", f"csrf={token}&x=%FF", "x"),
                              (f"/messages/{later}/pause", f"csrf={token}&%FF=1", "a field's name")):
        async with browser.session.post(browser.url + path, data=body.encode(), headers=form,
                                        allow_redirects=False) as answer:
            import html
            text = html.unescape(await answer.text())
            assert answer.status == 400 and f"{field}" in text and "UTF-8" in text, (path, text)
    assert await statuses_of(db, waiting) == ["awaiting_approval"]
    assert (await row_by_ref(db, "later"))["status"] == "pending"


async def test_an_unknown_clock_on_upcoming_says_so(
    db: asyncpg.Connection, browser: Browser, tenant: str
) -> None:
    await operator(db, browser)
    status, body = await browser.get("/upcoming?tenant=acme&tz=Europe/Pariss")
    import html
    assert status == 200 and 'unknown timezone "Europe/Pariss": showing UTC' in html.unescape(body)
    status, body = await browser.get("/upcoming?tenant=acme&tz=Europe/Paris")
    assert status == 200 and "unknown timezone" not in body


async def test_every_page_names_its_icon_and_the_icon_is_served(db: asyncpg.Connection, browser: Browser,
                                                               tenant: str) -> None:
    await operator(db, browser)
    _, body = await browser.get("/")
    found = re.search(r'<link rel="icon" href="(/dashboard/static/[^"]+)"', body)
    assert found is not None
    async with browser.session.get(browser.url[:-len("/dashboard")] + found[1].replace("&amp;", "&")) as answer:
        assert answer.status == 200 and answer.content_type == "image/svg+xml"
