"""The operator dashboard: server-rendered pages under /dashboard/ of `reminderd serve`.

    overview      counts, rates and lateness per tenant, the backlog; refreshes itself
    upcoming      what fires when: a histogram by hour for 48 h and by minute for the next hour,
                  quiet hours and holidays shaded; a bar lists its messages
    feed          the last 1,000 fires, then each new one as it is recorded (Server-Sent Events)
    messages      search by id, ref or ref prefix; one message's whole story, and its actions
    dead          dead letters by tenant, error and age; requeue one or many
    broadcasts    each broadcast's progress, and a second person's approval or rejection of a big one;
                  one broadcast's waves and a link to its messages; cancel

Who sees what: a sign-in takes an API key. An operator's key (no tenant) sees every tenant; a
tenant's key sees that tenant only, by URL too (another tenant's message answers as one that does
not exist); a read-only key sees no buttons and its POSTs are refused. The session is a signed
cookie (reminderd/sessions.py: HttpOnly, SameSite=Strict, Secure over TLS) that signing out ends
on the server too, every form that changes something carries a CSRF token, every page a
Content-Security-Policy without inline script, and every value from the database is escaped by
the templates. Each action is audited with the key that did it (events.on_behalf_of).

`dashboard_app()` is the sub-application `reminderd serve` mounts at /dashboard/ (the feed's LISTEN
connection opens and closes with it); reminderd.testing runs it on its own for the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_to_bytes, urlencode, urlsplit

import structlog
from aiohttp import web
from multidict import MultiDictProxy

from .apikeys import WRITE, acting_for, digest, prefix_of
from .dashboard_rows import FEED_START, FIRES, FeedCursor, FeedEntry, FireTotals, HourSends, TenantCounts
from .exceptions import DatabaseRefused, DatabaseUnavailable, ReminderdError
from .feed import FeedFilter, FeedHub, entry_json, oldest_first
from .lifecycle import Event, Status
from .pages import ASSETS, render
from .panels import (
    Lateness,
    chart,
    holiday_spans,
    lateness,
    local_days,
    next_fires,
    prefix_range,
    quiet_spans,
    schedule_words,
    share,
    slot_start,
    why,
)
from .rows import BroadcastProgress
from .schedule import Holidays, InvalidSchedule, QuietHours, load_timezone
from .sessions import (
    LOGIN_COOKIE,
    LOGIN_MAX_AGE_S,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    Session,
    Signer,
    is_nonce,
    login_nonce,
    same_token,
)
from .settings import Settings
from .store import Store

log = structlog.get_logger("reminderd")

PREFIX = "/dashboard"
OVERVIEW_CACHE_S = 2.0  # one count of a big queue serves every open overview for this long
FEED_SIZE = 1000
FEED_LOOK_BACK = 10_000  # a status or ref filter reads the newest this many fires, no more
FEED_HEARTBEAT_S = 15.0
# An open stream asks again whether its session still holds (signed out, the key revoked, the
# cookie expired) this often, or after this many events, whichever comes first: one small query
# per stream per interval, and a sign-out ends the stream within it.
SESSION_RECHECK_S = 5.0
SESSION_RECHECK_EVENTS = 200
BAR_MESSAGES = 200
DEAD_PAGE = 100
REQUEUE_AT_MOST = 10_000

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

# The feed's status filter: what the page calls each kind of fire, and the events it stands for.
FEED_KINDS: dict[str, tuple[str, tuple[Event, ...]]] = {
    "delivered": ("delivered", (Event.FIRED,)),
    "retried": ("retried", (Event.RETRY_SCHEDULED,)),
    "dead": ("dead", (Event.DEAD_LETTERED,)),
    "expired": ("expired", (Event.EXPIRED, Event.MISSED_SKIPPED)),
    "deferred": ("deferred (quiet hours)", (Event.DEFERRED,)),
    "moved": ("moved off a holiday", (Event.HOLIDAY_SKIPPED,)),
}
KIND_OF_EVENT = {event: kind for kind, (_, events) in FEED_KINDS.items() for event in events}
assert set(KIND_OF_EVENT) == set(FIRES)

ACTIONS = ("send-now", "pause", "resume", "cancel", "requeue")


# Who is looking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """The signed-in key: whose data it sees and whether it may change any."""

    key_id: int
    prefix: str
    name: str
    tenant_id: str | None  # None: an operator's key, every tenant
    can_write: bool
    csrf: str
    session: Session

    @property
    def operator(self) -> bool:
        return self.tenant_id is None

    @property
    def acting_for(self) -> str:
        return acting_for(self.prefix, self.name)


@dataclass
class Dashboard:
    """What the handlers share: the store, the settings, the cookie signer, the feed."""

    store: Store
    settings: Settings
    signer: Signer
    feed: FeedHub
    base: str
    overview_cache: dict[str | None, tuple[float, dict[str, Any]]]
    session_recheck_s: float = SESSION_RECHECK_S  # tests shorten it
    session_recheck_events: int = SESSION_RECHECK_EVENTS


DASHBOARD = web.AppKey("dashboard", Dashboard)
VIEWER = web.RequestKey("viewer", Viewer)


def dashboard_app(store: Store, settings: Settings, *, database_url: str | None = None,
                  base: str = PREFIX) -> web.Application:
    """The dashboard as a sub-application to mount at `base` (add_subapp(base + "/", ...)).
    `database_url` is where the feed LISTENs (the settings' listen URL by default)."""
    if settings.session_secret:
        signer = Signer(settings.session_secret)
    else:
        signer = Signer.random()
        log.warning("session_secret_random",
                    note="REMINDERD_SESSION_SECRET is not set: dashboard sessions last as long as this process")
    listen_url = database_url or settings.listen_url or settings.database_url
    app = web.Application(middlewares=[_timed_and_guarded, _signed_in])
    state = Dashboard(store, settings, signer, FeedHub(store, listen_url), base, {})
    app[DASHBOARD] = state

    async def feed_lifetime(_app: web.Application) -> AsyncIterator[None]:
        await state.feed.start()
        yield
        await state.feed.stop()

    async def end_streams(_app: web.Application) -> None:
        await state.feed.stop()  # before the server waits for handlers: the streams end now

    app.cleanup_ctx.append(feed_lifetime)
    app.on_shutdown.append(end_streams)
    routes = [
        web.get("/", overview),
        web.get("/upcoming", upcoming),
        web.get("/feed", feed_page),
        web.get("/feed/stream", feed_stream),
        web.get("/messages", search),
        web.get("/messages/{id:[0-9]{1,18}}", message),
        web.post("/messages/{id:[0-9]{1,18}}/{action}", message_action),
        web.get("/dead", dead_letters),
        web.post("/dead/requeue", requeue),
        web.get("/broadcasts", broadcasts_page),
        web.get("/broadcasts/{id:[0-9]{1,18}}", broadcast_page),
        web.post("/broadcasts/{id:[0-9]{1,18}}/{action}", broadcast_action),
        web.get("/login", login_page),
        web.post("/login", login),
        web.post("/logout", logout),
        web.get("/static/{name}", static),
    ]
    app.add_routes(routes)
    return app


def mount(app: web.Application, store: Store, settings: Settings, *, database_url: str | None = None
          ) -> Dashboard:
    """Mount the dashboard at /dashboard/ of `app` (and send / there); what its handlers share."""
    dashboard = dashboard_app(store, settings, database_url=database_url)
    app.add_subapp(PREFIX + "/", dashboard)

    async def to_dashboard(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(PREFIX + "/")

    app.router.add_get(PREFIX, to_dashboard)
    return dashboard[DASHBOARD]


def serves(path: str) -> bool:
    """Whether a request path is the dashboard's (the API's middleware lets those through)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def _state(request: web.Request) -> Dashboard:
    return request.app[DASHBOARD]


def _viewer(request: web.Request) -> Viewer:
    return request[VIEWER]


# Middlewares ----------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _timed_and_guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer, the server time it took (Server-Timing), and errors as
    pages: a database that is away is a 503 saying so, a bug a 500 page and one log line, never
    a traceback."""
    started = time.perf_counter()
    try:
        _check_query(request)
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect: raised on, with the same headers
            _secure(exc.headers, started)
            raise
        response = _error_page(request, exc.status, exc.text or exc.reason)
    except DatabaseUnavailable as exc:
        log.warning("dashboard_database_unavailable", path=request.path, error=str(exc))
        response = _error_page(request, 503, "The database cannot be reached right now; try again shortly.")
    except ReminderdError as exc:
        log.warning("dashboard_refused", path=request.path, error=str(exc))
        response = _error_page(request, 409, str(exc).splitlines()[0])
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug: one line, with where it was raised; no values, so no secrets
        log.error("dashboard_error", method=request.method, path=request.path, error=type(exc).__name__,
                  at=_raised_at(exc))
        response = _error_page(request, 500, "Something went wrong on the server: its log has a "
                                             "dashboard_error line about it.")
    if not response.prepared:  # a stream has sent its own already
        _secure(response.headers, started)
    return response


def _raised_at(exc: BaseException) -> str:
    """Where an exception was raised: "dashboard.py:533 in upcoming"."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


def _check_query(request: web.Request) -> None:
    """A 400 for a query value no page can use: one holding NUL, which PostgreSQL text cannot hold."""
    for name, value in request.query.items():
        if "\x00" in value or "\x00" in name:
            raise web.HTTPBadRequest(text=f"The address's {name or 'query'} holds a NUL character (%00).")


def _secure(headers: Any, started: float) -> None:
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cache-Control", "no-store")
    headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - started):.1f}"


@web.middleware
async def _signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page but the sign-in and the static files needs a session of a key still valid;
    every POST a CSRF token of that session and no foreign Origin."""
    relative = request.path.removeprefix(_state(request).base)
    if relative == "/login" or relative.startswith("/static/"):
        return await handler(request)
    viewer = await _session_viewer(request)
    if viewer is None:
        if request.method == "GET" and not relative.startswith("/feed/stream"):
            base = _state(request).base
            raise web.HTTPSeeOther(f"{base}/login?{urlencode({'next': request.path_qs})}")
        raise web.HTTPUnauthorized(text="Sign in first.")
    request[VIEWER] = viewer
    if request.method == "POST":
        await _check_post(request, viewer)
    return await handler(request)


async def _session_viewer(request: web.Request) -> Viewer | None:
    state = _state(request)
    session = state.signer.session(request.cookies.get(SESSION_COOKIE), time.time())
    if session is None:
        return None
    # Each request reads the key again, and whether this session was signed out: a revoked key's
    # sessions end at once, a signed-out session's copies too.
    found = await state.store.dashboard_session(session.prefix, session.nonce)
    if found is None or found.signed_out:
        return None
    key = found.key
    if key.id != session.key_id or key.revoked_at is not None:
        return None
    return Viewer(key.id, key.prefix, key.name, key.tenant_id, WRITE in key.scopes,
                  state.signer.csrf_token(session.nonce), session)


async def _check_post(request: web.Request, viewer: Viewer) -> None:
    """Refused (403, and a log line with the key's prefix, never a token): a POST from another
    site, without this session's CSRF token, or of a read-only key."""
    if not _same_origin(request):
        _refused(request, viewer, "foreign_origin")
        raise web.HTTPForbidden(text="This form was sent from another site.")
    form = await _form(request)
    token = form.get("csrf")
    if not same_token(viewer.csrf, token if isinstance(token, str) else None):
        _refused(request, viewer, "csrf_token")
        raise web.HTTPForbidden(
            text="The form's security token is missing or stale: reload the page and try again.")
    if not viewer.can_write and not request.path.endswith("/logout"):
        _refused(request, viewer, "read_only")
        raise web.HTTPForbidden(text="This key is read-only: it may look, not change anything.")
    if any(isinstance(value, str) and "\x00" in value for value in form.values()):
        raise web.HTTPBadRequest(text="The form holds a NUL character, which nothing here can hold.")


async def _form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The POSTed form (read once, then kept by aiohttp); a 400 for one that is not UTF-8 text,
    naming the field (aiohttp would put U+FFFD for each percent-encoded byte that is not)."""
    if request.content_type == "application/x-www-form-urlencoded":
        _strict_utf8(await request.read())
    try:
        return await request.post()
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="The form is not UTF-8 text: send it from the page's own form.") from None


def _strict_utf8(body: bytes) -> None:
    """A 400 naming the first field of an urlencoded form whose name or value, percent-decoded,
    is not UTF-8."""
    for pair in body.split(b"&"):
        raw_name, _, raw_value = pair.partition(b"=")
        try:
            name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise web.HTTPBadRequest(text="The form has a field whose name is not UTF-8 text (a field's "
                                          "name must be): send it from the page's own form.") from None
        try:
            unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            shown = name if name.isprintable() and len(name) <= 40 else "a field"
            raise web.HTTPBadRequest(text=f"The form's field “{shown}” is not UTF-8 text: send it from the "
                                          "page's own form.") from None


def _refused(request: web.Request, viewer: Viewer, reason: str) -> None:
    log.info("dashboard_post_refused", reason=reason, method=request.method, path=request.path,
             key=viewer.prefix, tenant=viewer.tenant_id,
             origin=request.headers.get("Origin") or request.headers.get("Referer"))


def _refused_sign_in(request: web.Request, reason: str) -> None:
    """_refused, for a sign-in (no key yet: never the one presented)."""
    log.info("dashboard_post_refused", reason=reason, method=request.method, path=request.path, key=None,
             tenant=None, origin=request.headers.get("Origin") or request.headers.get("Referer"))


def _same_origin(request: web.Request) -> bool:
    """No Origin (or Referer) naming another site than this one: the request's Host, or the
    public origin REMINDERD_DASHBOARD_ORIGIN names (for a proxy that does not pass the browser's
    Host). X-Forwarded-Host is not trusted: anyone can send it."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin != "null"
    given = urlsplit(origin)
    if given.netloc == request.host:
        return True
    public = _state(request).settings.dashboard_origin
    return public is not None and f"{given.scheme}://{given.netloc}".lower() == public


def _error_page(request: web.Request, status: int, text: str) -> web.Response:
    viewer = request.get(VIEWER)
    try:
        body = render("error.html", **_common(request, viewer, "error"), status=status, text=text)
    except Exception as exc:  # the page itself failed: a plain one, still an answer
        log.error("dashboard_error", method=request.method, path=request.path, error=type(exc).__name__,
                  at=_raised_at(exc))
        status, body = 500, "<!doctype html><title>Error</title><p>Something went wrong on the server.</p>"
    return web.Response(status=status, text=body, content_type="text/html")


def _common(request: web.Request, viewer: Viewer | None, page: str) -> dict[str, Any]:
    """What every template gets: who is looking, where the pages are, the static files."""
    state = _state(request)
    return {"viewer": viewer, "base": state.base, "page": page,
            "assets": {name: f"{state.base}/static/{name}?v={asset.version}" for name, asset in ASSETS.items()}}


def _noticed(request: web.Request, path: str, kind: str, text: str, query: str = "") -> str:
    """Where an action sends the browser: `path` (and `query`) with its outcome, `kind` "done" or
    "problem", signed for this session so that the page shows it (_notice)."""
    sig = _state(request).signer.notice_token(_viewer(request).session.nonce, f"{path}.{kind}", text)
    return f"{path}?" + "&".join(part for part in (query, urlencode({kind: text, "sig": sig})) if part)


def _notice(request: web.Request, kind: str) -> str | None:
    """The outcome an action put in this page's URL (_noticed), if this server signed it for this
    session; any other text in ?done= or ?problem= is not shown (a link may say anything)."""
    text = request.query.get(kind)
    if not text:
        return None
    nonce = _viewer(request).session.nonce
    expected = _state(request).signer.notice_token(nonce, f"{request.path}.{kind}", text)
    return text if same_token(expected, request.query.get("sig")) else None


def _page(request: web.Request, template: str, page: str, **context: Any) -> web.Response:
    viewer = _viewer(request)
    body = render(template, **_common(request, viewer, page), **context)
    return web.Response(text=body, content_type="text/html")


def _scope(request: web.Request, viewer: Viewer) -> str | None:
    """The tenant in view: a tenant key's own; for an operator, ?tenant= or every one (None)."""
    if viewer.tenant_id is not None:
        return viewer.tenant_id
    wanted = request.query.get("tenant", "").strip()
    return wanted or None


# Signing in ----------------------------------------------------------------------------------------


def _cookie_options(request: web.Request, max_age_s: int) -> dict[str, Any]:
    return {"httponly": True, "samesite": "Strict", "secure": _over_tls(request), "max_age": max_age_s,
            "path": _state(request).base + "/"}


def _over_tls(request: web.Request) -> bool:
    """Whether the browser reached us over TLS: here, or at a proxy that says so. Trusting the
    header costs nothing: it can only make the cookie stricter."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


async def login_page(request: web.Request, *, problem: str | None = None, status: int = 200) -> web.Response:
    state = _state(request)
    given = request.cookies.get(LOGIN_COOKIE)
    nonce = given if is_nonce(given) else login_nonce()
    target = _safe_next(request, request.query.get("next"))
    body = render("login.html", **_common(request, None, "login"), csrf=state.signer.csrf_token(nonce),
                  next=target, problem=problem)
    response = web.Response(text=body, content_type="text/html", status=status)
    response.set_cookie(LOGIN_COOKIE, nonce, **_cookie_options(request, LOGIN_MAX_AGE_S))
    return response


async def login(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    form = await _form(request)
    nonce = request.cookies.get(LOGIN_COOKIE)
    token = form.get("csrf")
    if not _same_origin(request):
        _refused_sign_in(request, "foreign_origin")
        return await login_page(request, status=403, problem=(
            "This sign-in was sent from another site than this dashboard. If it is this dashboard's own "
            "address, its proxy must pass the browser's Host, or REMINDERD_DASHBOARD_ORIGIN name it."))
    if nonce is None or not isinstance(token, str) or not state.signer.csrf_ok(nonce, token):
        _refused_sign_in(request, "csrf_token")
        return await login_page(request, problem="The sign-in form expired: try again.", status=403)
    presented = form.get("key")
    presented = presented.strip() if isinstance(presented, str) else ""
    prefix = prefix_of(presented)
    key = None if prefix is None else await state.store.api_key(prefix)
    if key is None or key.revoked_at is not None or not hmac.compare_digest(key.key_hash, digest(presented)):
        log.info("dashboard_sign_in_refused", prefix=prefix)
        return await login_page(request, problem="That is not a valid API key (or it was revoked).", status=401)
    log.info("dashboard_signed_in", prefix=key.prefix, key=key.name, tenant=key.tenant_id)
    target = form.get("next")
    response = web.HTTPSeeOther(_safe_next(request, target if isinstance(target, str) else None))
    response.set_cookie(SESSION_COOKIE, state.signer.session_cookie(key.prefix, key.id, time.time()),
                        **_cookie_options(request, SESSION_MAX_AGE_S))
    response.del_cookie(LOGIN_COOKIE, path=state.base + "/")
    raise response


def _safe_next(request: web.Request, target: str | None) -> str:
    """Where to go after signing in: a page of the dashboard, never another site."""
    base = _state(request).base
    if target and target.startswith(base + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return base + "/"


async def logout(request: web.Request) -> web.StreamResponse:
    """Sign out: this session ends on the server (its nonce in reminderd.dashboard_signouts, until
    it would have expired), so a copy of its cookie is no session either; the key's other
    sessions go on. The middleware checked its CSRF token first (a read-only key may sign out)."""
    state = _state(request)
    viewer = _viewer(request)
    session = viewer.session
    done = await state.store.dashboard_sign_out(session.nonce, session.key_id,
                                                datetime.fromtimestamp(session.expires_s, UTC))
    log.info("dashboard_signed_out", prefix=viewer.prefix, key=viewer.name, tenant=viewer.tenant_id,
             pruned=done.pruned)
    response = web.HTTPSeeOther(state.base + "/login")
    response.del_cookie(SESSION_COOKIE, path=_state(request).base + "/")
    raise response


async def static(request: web.Request) -> web.StreamResponse:
    asset = ASSETS.get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound()
    cache = ("public, max-age=31536000, immutable" if request.query.get("v") == asset.version
             else "no-cache")
    return web.Response(body=asset.body, headers={"Content-Type": asset.content_type, "Cache-Control": cache,
                                                  "ETag": f'"{asset.version}"'})


# Overview ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantLine:
    counts: TenantCounts
    last_hour: FireTotals
    last_day: FireTotals
    lateness_hour: Lateness
    lateness_day: Lateness


async def overview(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    scope = _scope(request, viewer)
    numbers = await _overview_numbers(_state(request), scope)
    template = "overview_live.html" if request.query.get("fragment") == "live" else "overview.html"
    choice = await _tenant_choice(request, viewer)
    return _page(request, template, "overview", scope=scope, tenants_choice=choice, **numbers)


async def _overview_numbers(state: Dashboard, scope: str | None) -> dict[str, Any]:
    cached = state.overview_cache.get(scope)
    if cached is not None and time.monotonic() - cached[0] < OVERVIEW_CACHE_S:
        return cached[1]
    store = state.store
    # On separate pool connections at once: the page takes as long as its longest query.
    counts, fired, late, now, daemons = await asyncio.gather(
        store.overview_counts(scope), store.overview_fires(scope), store.overview_lateness(scope),
        store.database_now(), store.daemons(),
    )
    fires = {f.tenant_id: f for f in fired}
    buckets: dict[tuple[str, bool], dict[int, int]] = {}
    for row in late:
        buckets.setdefault((row.tenant_id, row.last_hour), {})[row.bucket] = row.delivered
    lines = []
    total_counts = TenantCounts("all", 0, 0, 0, 0, 0, None)
    total_hour, total_day = FireTotals(), FireTotals()
    all_hour: dict[int, int] = {}
    all_day: dict[int, int] = {}
    for c in counts:
        fired = fires.get(c.tenant_id)
        hour = fired.last_hour if fired else FireTotals()
        day = fired.last_day if fired else FireTotals()
        late_hour, late_day = buckets.get((c.tenant_id, True), {}), buckets.get((c.tenant_id, False), {})
        lines.append(TenantLine(c, hour, day, lateness(late_hour), lateness(late_day)))
        total_counts = total_counts + c
        total_hour, total_day = total_hour + hour, total_day + day
        for source, target in ((late_hour, all_hour), (late_day, all_day)):
            for bucket, n in source.items():
                target[bucket] = target.get(bucket, 0) + n
    numbers = {
        "lines": lines,
        "total": TenantLine(total_counts, total_hour, total_day, lateness(all_hour), lateness(all_day)),
        "now": now,
        "daemons": daemons,
        "alive": [d for d in daemons if d.state == "alive"],
        "last_claim": max((d.last_claim_at for d in daemons if d.last_claim_at is not None), default=None),
        "share": share,
    }
    cache, now_s = state.overview_cache, time.monotonic()
    if len(cache) > 100:  # an operator may ask for any ?tenant=: keep only what is fresh
        for stale in [k for k, (at, _) in cache.items() if now_s - at >= OVERVIEW_CACHE_S]:
            del cache[stale]
    cache[scope] = (now_s, numbers)
    return numbers


async def _tenant_choice(request: web.Request, viewer: Viewer) -> list[str]:
    """The tenants an operator may pick from (a tenant's key has its own only)."""
    if not viewer.operator:
        return [viewer.tenant_id] if viewer.tenant_id else []
    return [t.id for t in await _state(request).store.tenant_rules(None)]


# Upcoming ------------------------------------------------------------------------------------------


async def upcoming(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    state = _state(request)
    scope = _scope(request, viewer)
    store = state.store
    now = await store.database_now()
    rules = (await store.tenant_rules(scope)) if scope is not None else []
    tz_name = request.query.get("tz", "").strip()
    if not tz_name:
        tz_name = (await store.next_timezone(scope) if scope else None) or "UTC"
    problem = None
    try:
        tz = load_timezone(tz_name)
    except InvalidSchedule:
        problem = f'unknown timezone "{tz_name[:100]}": showing UTC'
        tz_name, tz = "UTC", load_timezone("UTC")
    hours_start = slot_start(now, "hour", tz)
    hours_end = hours_start + timedelta(hours=48)
    minutes_start = slot_start(now, "minute", tz)
    minutes_end = minutes_start + timedelta(hours=1)
    spans: list[tuple[datetime, datetime, str]] = []
    rule = rules[0] if rules else None
    if rule is not None:
        if rule.quiet_start is not None and rule.quiet_end is not None and rule.quiet_start != rule.quiet_end:
            spans += quiet_spans(QuietHours(rule.quiet_start, rule.quiet_end), tz, hours_start, hours_end)
        if rule.holiday_rule == "skip":
            first, last = local_days(tz, hours_start, hours_end)
            custom = await store.tenant_holidays_between(rule.id, first, last)
            spans += holiday_spans(Holidays.of(rule.calendar, custom), tz, hours_start, hours_end)
    by_hour = await store.upcoming(scope, start=hours_start, end=hours_end, unit="hour", timezone=tz_name)
    by_minute = await store.upcoming(scope, start=minutes_start, end=minutes_end, unit="minute",
                                     timezone=tz_name)
    hours = chart(((b.starts_at, b.messages) for b in by_hour), start=hours_start, step=timedelta(hours=1),
                  slots=48, tz=tz, spans=spans, tick_every=6)
    minutes = chart(((b.starts_at, b.messages) for b in by_minute), start=minutes_start,
                    step=timedelta(minutes=1), slots=60, tz=tz,
                    spans=[s for s in spans if s[0] < minutes_end and s[1] > minutes_start], tick_every=10)
    listed = None
    bar = _bar(request)
    if bar is not None:
        listed = (bar, await store.upcoming_messages(scope, start=bar[0], end=bar[1], limit=BAR_MESSAGES))
    return _page(request, "upcoming.html", "upcoming", scope=scope, tz_name=tz_name, problem=problem,
                 hours=hours, minutes=minutes, rule=rule, listed=listed, now=now, bar_limit=BAR_MESSAGES,
                 tenants_choice=await _tenant_choice(request, viewer),
                 query=urlencode(([("tenant", scope)] if scope and viewer.operator else [])
                                 + [("tz", tz_name)]))


def _bar(request: web.Request) -> tuple[datetime, datetime] | None:
    """The bar whose messages to list (?from=&to=, as the chart links them); a 400 for instants
    beyond what a message can have (year 1 to 9999 in UTC, the end within two days)."""
    try:
        start = datetime.fromisoformat(request.query["from"])
        end = datetime.fromisoformat(request.query["to"])
    except (KeyError, ValueError):
        return None
    if start.tzinfo is None or end.tzinfo is None:
        return None
    try:
        start.astimezone(UTC), end.astimezone(UTC), start + timedelta(days=2)
    except OverflowError:
        raise web.HTTPBadRequest(text="from and to must be instants from year 1 to 9998.") from None
    if not start < end <= start + timedelta(days=2):
        return None
    return start, end


# The live feed -------------------------------------------------------------------------------------


def _feed_filter(request: web.Request, viewer: Viewer) -> tuple[FeedFilter, list[str]]:
    chosen = [k for k in request.query.getall("status", []) if k in FEED_KINDS]
    kinds = frozenset(e for k in chosen for e in FEED_KINDS[k][1]) if chosen else frozenset(FIRES)
    prefix = request.query.get("ref", "")[:200]
    if prefix:
        _ref_range(prefix, "ref")
    return FeedFilter(_scope(request, viewer), kinds, prefix), chosen


def _ref_range(prefix: str, name: str) -> tuple[str, str]:
    """panels.prefix_range, or a 400 page when the prefix has none."""
    try:
        return prefix_range(prefix)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name}: {exc}.") from None


async def _recent(state: Dashboard, wanted: FeedFilter, after: FeedCursor = FEED_START) -> list[FeedEntry]:
    ref_range: tuple[str, str | None] = prefix_range(wanted.ref_prefix) if wanted.ref_prefix else ("", None)
    return await state.store.feed_recent(
        wanted.tenant_id, after=after, limit=FEED_SIZE, kinds=sorted(wanted.kinds), ref_range=ref_range,
        look_back=FEED_LOOK_BACK if wanted.narrowed else None,
    )


async def feed_page(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    state = _state(request)
    wanted, chosen = _feed_filter(request, viewer)
    # Where the page's stream starts: every fire recorded before the page was read (read first, so
    # a fire recorded in between comes again on the stream rather than not at all; the page's
    # script shows a fire once).
    after = await state.store.feed_newest()
    entries = await _recent(state, wanted)
    stream = f"{state.base}/feed/stream?" + urlencode(
        [("after", str(after))]
        + [(k, v) for k, v in request.query.items()
           if k in ("status", "ref") or (k == "tenant" and viewer.operator)])
    labels = {event: [kind, FEED_KINDS[kind][0]] for event, kind in KIND_OF_EVENT.items()}
    return _page(request, "feed.html", "feed", entries=entries, wanted=wanted, chosen=chosen, kinds=FEED_KINDS,
                 kind_of=KIND_OF_EVENT, labels=labels, stream=stream, size=FEED_SIZE, look_back=FEED_LOOK_BACK,
                 tenants_choice=await _tenant_choice(request, viewer), now=await state.store.database_now())


async def feed_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: each fire the filter takes, as it is recorded (`event: fire`, with the
    feed's cursor once it is had as the SSE id, so a reconnecting browser resumes where it was:
    it gets the fires it missed, none twice). No cursor: from now on. The session is checked
    again every `session_recheck_s` or `session_recheck_events` events, whichever comes first:
    once it is signed out (or its key revoked, its cookie expired) the stream says
    `event: signed-out` and ends, and a browser reconnecting is refused (401)."""
    viewer = _viewer(request)
    state = _state(request)
    wanted, _ = _feed_filter(request, viewer)
    resume = request.headers.get("Last-Event-ID") or request.query.get("after") or ""
    after = FeedCursor.parse(resume)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no", "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
    })
    subscription = state.feed.subscribe(wanted)  # before the catch-up read: nothing falls between
    clock = asyncio.get_running_loop().time
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        sent: set[str] = set()
        if after is None:  # from now on: a reconnect catches up from the newest fires so far
            cursor = await state.store.feed_newest()
        else:
            cursor = after
            for missed in oldest_first(await _recent(state, wanted, after)):
                cursor = cursor.past(missed)
                await response.write(_event(missed, cursor))
                sent.add(missed.key)
        check_at, unchecked = clock() + state.session_recheck_s, 0
        beat_at = clock() + FEED_HEARTBEAT_S
        while True:
            wait_s = max(0.0, min(check_at, beat_at) - clock())
            try:
                entry = await asyncio.wait_for(subscription.queue.get(), wait_s)
            except TimeoutError:
                entry = None  # nothing came
            else:
                if entry is None:  # the server is stopping, or this browser fell behind: it reconnects
                    break
            if clock() >= check_at or (entry is not None and unchecked >= state.session_recheck_events):
                ended = await _session_ended(request, viewer)
                if ended is not None:
                    if ended == "signed-out":  # the page stops listening; any other end, it reconnects
                        await response.write(b"event: signed-out\ndata: {}\n\n")
                    break
                check_at, unchecked = clock() + state.session_recheck_s, 0
            if entry is None:
                if clock() >= beat_at:
                    await response.write(b": keep-alive\n\n")
                    beat_at = clock() + FEED_HEARTBEAT_S
                continue
            if entry.key in sent:
                continue
            cursor = cursor.past(entry)
            await response.write(_event(entry, cursor))
            unchecked, beat_at = unchecked + 1, clock() + FEED_HEARTBEAT_S
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        state.feed.unsubscribe(subscription)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _session_ended(request: web.Request, viewer: Viewer) -> str | None:
    """Why an open stream's session no longer holds ("signed-out": signed out, the key revoked,
    the cookie expired; "unchecked": the database did not answer), or None while it does: the
    check every request makes, made again."""
    try:
        again = await _session_viewer(request)
    except (DatabaseUnavailable, DatabaseRefused) as exc:  # unverified is not signed in: end it
        log.warning("dashboard_stream_ended", reason="unchecked", key=viewer.prefix, error=str(exc))
        return "unchecked"
    if again is not None and again.key_id == viewer.key_id:
        return None
    log.info("dashboard_stream_ended", reason="signed_out", key=viewer.prefix, tenant=viewer.tenant_id)
    return "signed-out"


def _event(entry: FeedEntry, cursor: FeedCursor) -> bytes:
    """One fire as a Server-Sent Event; its id is where the feed is once it is had."""
    return f"id: {cursor}\nevent: fire\ndata: {entry_json(entry)}\n\n".encode()


# Messages ------------------------------------------------------------------------------------------


async def search(request: web.Request) -> web.StreamResponse:
    viewer = _viewer(request)
    state = _state(request)
    scope = _scope(request, viewer)
    query = request.query.get("q", "").strip()[:500]
    results = []
    if query:
        if query.isdecimal() and len(query) <= 18:
            found = await state.store.message_by_id(scope, int(query))
            if found is not None and request.query.get("exact") != "0":
                raise web.HTTPSeeOther(f"{state.base}/messages/{found.id}")
            results = [found] if found else []
        results += [m for m in await state.store.messages_by_ref(scope, _ref_range(query, "Search"), limit=100)
                    if m not in results]
    return _page(request, "messages.html", "messages", query=query, results=results, scope=scope,
                 tenants_choice=await _tenant_choice(request, viewer), now=await state.store.database_now())


async def message(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    state = _state(request)
    message_id = int(request.match_info["id"])
    found = await state.store.message_story(viewer.tenant_id, message_id, backfill=state.settings.backfill,
                                            max_lateness_s=state.settings.max_lateness_s)
    if found is None:  # none, or another tenant's: the same answer
        raise web.HTTPNotFound(text=f"No message {message_id}.")
    story, attempts, trail = found
    now = story.db_now
    actions = _actions(story.status, story.recurring) if viewer.can_write else ()
    return _page(
        request, "message.html", "message", story=story, attempts=attempts, trail=trail, now=now,
        words=schedule_words(story.timing),
        fires=next_fires(story.timing, story.fire_at, now) if story.live else [],
        why=why(story.status, fire_at=story.fire_at, scheduled_for=story.scheduled_for, attempts=story.attempts,
                max_attempts=story.max_attempts, last_error=story.last_error, picked_at=story.picked_at,
                lease_expires_at=story.lease_expires_at, sent_at=story.sent_at, paused_by=story.paused_by,
                tenant_paused=story.tenant_paused, now=now),
        actions=actions, done=_notice(request, "done"),
    )


def _actions(status: Status, recurring: bool) -> tuple[str, ...]:
    """The buttons a message in this status has."""
    if status is Status.PENDING:
        return ("send-now", "pause", "cancel")
    if status is Status.PAUSED:
        return ("send-now", "resume", "cancel")
    if status is Status.PICKED:
        return ("send-now", "cancel") if recurring else ("cancel",)
    if status is Status.DEAD:
        return ("requeue",)
    if status is Status.AWAITING_APPROVAL:
        return ("cancel",)  # approving is a second person's, per broadcast (reminderd broadcasts approve)
    return ()


async def message_action(request: web.Request) -> web.StreamResponse:
    viewer = _viewer(request)
    state = _state(request)
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(text=f"No action {action!r}.")
    message_id = int(request.match_info["id"])
    found = await state.store.message_by_id(viewer.tenant_id, message_id)
    if found is None:
        raise web.HTTPNotFound(text=f"No message {message_id}.")
    store, who = state.store, viewer.acting_for
    if action not in _actions(found.status, found.cron is not None or found.rrule is not None):
        outcome = f"{action} is not possible: the message is {found.status}"
        target = message_id
    elif action == "send-now":
        sent = await store.send_now_as(found.tenant_id, found.ref_id, on_behalf_of=who)
        outcome = "due now" if sent == message_id else f"an extra occurrence goes out now (message {sent})"
        target = sent if sent is not None else message_id
    elif action == "pause":
        paused = await store.pause_as(found.tenant_id, found.ref_id, on_behalf_of=who)
        outcome = "paused" if paused else "not paused"
        target = message_id
    elif action == "resume":
        resumed = await store.resume_as(found.tenant_id, found.ref_id, on_behalf_of=who)
        outcome = "resumed" if resumed else "not resumed (its tenant is paused?)"
        target = message_id
    elif action == "cancel":
        cancelled = await store.cancel_as(found.tenant_id, message_id, on_behalf_of=who)
        outcome = "cancelled" if cancelled else "not cancelled"
        target = message_id
    else:
        done = await store.requeue_dead(found.tenant_id, [message_id], on_behalf_of=who)
        if done.unreadable:
            outcome = ("not requeued: its timezone is one the database server cannot read (correct the "
                       "contact's timezone, or update the server's tzdata)")
        elif done.delivered:
            outcome = ("not requeued: it was delivered before it died, requeueing would send it again "
                       "(reminderd.requeue(id, resend => true) does it on purpose)")
        elif done.onward:
            outcome = "requeued: moved to its next occurrence (its last was delivered before it died)"
        else:
            outcome = "requeued: due now" if done.requeued else "not requeued (its ref has a live message)"
        target = message_id
    log.info("dashboard_action", action=action, message_id=message_id, tenant=found.tenant_id,
             ref=found.ref_id, key=viewer.prefix, outcome=outcome)
    state.overview_cache.clear()
    raise web.HTTPSeeOther(_noticed(request, f"{state.base}/messages/{target}", "done", outcome))


# Dead letters --------------------------------------------------------------------------------------

AGES: dict[str, tuple[str, float]] = {
    "": ("any age", 0.0), "1h": ("1 hour", 3600.0), "6h": ("6 hours", 6 * 3600.0),
    "1d": ("1 day", 86400.0), "7d": ("7 days", 7 * 86400.0),
}
FOREVER_S = 1e10


@dataclass(frozen=True)
class DeadFilter:
    tenant_id: str | None
    error: str | None
    older: str  # a key of AGES: dead for at least this long
    newer: str  # a key of AGES: dead for at most this long

    @property
    def min_age_s(self) -> float:
        return AGES[self.older][1]

    @property
    def max_age_s(self) -> float:
        return AGES[self.newer][1] or FOREVER_S

    def query(self) -> str:
        return urlencode([(k, v) for k, v in (("tenant", self.tenant_id), ("error", self.error),
                                              ("older", self.older), ("newer", self.newer)) if v])


def _dead_filter(values: Mapping[str, Any], viewer: Viewer) -> DeadFilter:
    def text(name: str) -> str:
        value = values.get(name, "")
        return value.strip()[:200] if isinstance(value, str) else ""

    tenant = viewer.tenant_id if viewer.tenant_id is not None else (text("tenant") or None)
    older, newer = text("older"), text("newer")
    return DeadFilter(tenant, text("error") or None, older if older in AGES else "",
                      newer if newer in AGES else "")


async def dead_letters(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    state = _state(request)
    wanted = _dead_filter(request.query, viewer)
    cursor = _cursor(request.query.get("before"))
    before = cursor or (datetime.max.replace(tzinfo=UTC), 0)
    rows = await state.store.dead_letters(wanted.tenant_id, min_age_s=wanted.min_age_s,
                                          max_age_s=wanted.max_age_s, error=wanted.error, before=before,
                                          limit=DEAD_PAGE)
    following = None
    if len(rows) > DEAD_PAGE:
        rows = rows[:DEAD_PAGE]
        following = f"{rows[-1].updated_at.isoformat()}_{rows[-1].id}"
    matching = await state.store.dead_letters_count(wanted.tenant_id, min_age_s=wanted.min_age_s,
                                                    max_age_s=wanted.max_age_s, error=wanted.error)
    return _page(request, "dead.html", "dead", rows=rows, wanted=wanted, matching=matching,
                 following=following, ages=AGES, tenants_choice=await _tenant_choice(request, viewer),
                 done=_notice(request, "done"), now=await state.store.database_now(),
                 first_page=cursor is None)


def _field(form: Mapping[str, Any], name: str) -> str:
    """A form's text field, or "" (absent, or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _cursor(text: str | None) -> tuple[datetime, int] | None:
    if not text:
        return None
    at, _, message_id = text.rpartition("_")
    try:
        when = datetime.fromisoformat(at)
        when.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    fits = message_id.isascii() and message_id.isdecimal() and len(message_id) <= 18  # a bigint
    return (when, int(message_id)) if fits and when.tzinfo is not None else None


async def requeue(request: web.Request) -> web.StreamResponse:
    """Requeue the selected dead letters, or all that the filter matches: first a page saying how
    many, then (confirm=yes) the requeue itself."""
    viewer = _viewer(request)
    state = _state(request)
    form = await _form(request)
    wanted = _dead_filter(form, viewer)
    only = form.get("only")  # one row's own button
    every = form.get("scope") == "matching" and only is None
    given = [only] if isinstance(only, str) else form.getall("id", [])
    ids = sorted({int(v) for v in given if isinstance(v, str) and v.isdecimal() and len(v) <= 18})
    confirmed = form.get("confirm") == "yes"
    at_most = REQUEUE_AT_MOST
    # "All that match": the page counts them and its Yes carries the newest it counted (the mark)
    # and the count; the Yes requeues none newer, and asks again if the count changed meanwhile.
    mark = _cursor(_field(form, "mark")) if every and confirmed else None
    newest: tuple[datetime, int] | None = None
    changed: int | None = None
    if every:
        count, newest = await state.store.dead_letters_mark(
            wanted.tenant_id, min_age_s=wanted.min_age_s, max_age_s=wanted.max_age_s, error=wanted.error,
            upto=mark)
        count = min(count, at_most)
        asked = _field(form, "count")
        if mark is not None and asked != str(count):
            changed = int(asked) if asked.isdecimal() and len(asked) <= 18 else None
            mark = None
        chosen = []
    else:
        chosen = await state.store.dead_letters_selected(viewer.tenant_id, ids)
        count = len(chosen)
    if not confirmed or (every and mark is None):
        return _page(request, "confirm.html", "dead", count=count, every=every, chosen=chosen, wanted=wanted,
                     at_most=at_most, changed=changed,
                     mark=f"{newest[0].isoformat()}_{newest[1]}" if newest is not None else "")
    tenant = viewer.tenant_id
    if every:
        done = await state.store.requeue_dead_matching(
            wanted.tenant_id, min_age_s=wanted.min_age_s, max_age_s=wanted.max_age_s, error=wanted.error,
            limit=at_most, on_behalf_of=viewer.acting_for, upto=mark)
    else:
        done = await state.store.requeue_dead(tenant, [m.id for m in chosen], on_behalf_of=viewer.acting_for)
    log.info("dashboard_requeued", requeued=done.requeued, onward=done.onward, skipped_delivered=done.delivered,
             skipped_unreadable=done.unreadable, blocked=done.blocked, asked=count, key=viewer.prefix,
             tenant=wanted.tenant_id)
    state.overview_cache.clear()
    outcome = f"{done.requeued} requeued"
    if done.onward == 1:
        outcome += ", 1 of them moved to its next occurrence (its last was delivered before it died)"
    elif done.onward:
        outcome += (f", {done.onward} of them moved to their next occurrence "
                    "(their last was delivered before they died)")
    if done.delivered:
        # All that match counts the skipped up to at_most, as it requeues at most that many.
        at_least = "at least " if every and done.delivered >= at_most else ""
        outcome += (f"; {at_least}{done.delivered} skipped: delivered before they died "
                    "(requeueing would send them again)")
    if done.unreadable:
        at_least = "at least " if every and done.unreadable >= at_most else ""
        outcome += f"; {at_least}{done.unreadable} skipped: in a timezone the database server cannot read"
    if done.blocked:
        outcome += f"; {done.blocked} not (their refs have a live message)"
    raise web.HTTPSeeOther(_noticed(request, f"{state.base}/dead", "done", outcome, wanted.query()))


# Broadcasts ----------------------------------------------------------------------------------------

BROADCAST_PAGE = 50
BROADCAST_ACTIONS = ("approve", "reject", "cancel")
NOTE_AT_MOST = 500
NEWEST = 2**63 - 1


def _broadcast_actions(broadcast: BroadcastProgress) -> tuple[str, ...]:
    """The buttons a broadcast in this state has: a second person's decision while it awaits
    approval; cancelling while anything of it is still to be sent or staged."""
    if broadcast.awaiting_approval:
        return ("approve", "reject")
    if not broadcast.done and broadcast.approval != "rejected":
        return ("cancel",)
    return ()


def _messages_of(state: Dashboard, viewer: Viewer, broadcast: BroadcastProgress) -> str:
    """The messages page, searching the broadcast's refs (`prefix:contact_id`; its waves link their
    broadcast.completed callbacks, `prefix#completed`)."""
    query = [("q", f"{broadcast.ref_prefix}:")] + ([("tenant", broadcast.tenant_id)] if viewer.operator else [])
    return f"{state.base}/messages?{urlencode(query)}"


def _hours_by_broadcast(hours: list[HourSends]) -> dict[int, list[HourSends]]:
    by_broadcast: dict[int, list[HourSends]] = {}
    for hour in hours:
        by_broadcast.setdefault(hour.broadcast_id, []).append(hour)
    return by_broadcast


async def broadcasts_page(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    state = _state(request)
    scope = _scope(request, viewer)
    awaiting_only = request.query.get("awaiting") == "1"
    given = request.query.get("before", "")
    before = int(given) if given.isdecimal() and len(given) <= 18 else NEWEST
    rows = await state.store.dashboard_broadcasts(scope, before=before, limit=BROADCAST_PAGE,
                                                  awaiting_only=awaiting_only)
    following = None
    if len(rows) > BROADCAST_PAGE:
        rows = rows[:BROADCAST_PAGE]
        following = rows[-1].id
    waiting = [b.id for b in rows if b.awaiting_approval]
    hours = _hours_by_broadcast(await state.store.awaiting_hours(waiting)) if waiting else {}
    filters = [(k, v) for k, v in (("tenant", scope if viewer.operator else None),
                                   ("awaiting", "1" if awaiting_only else None)) if v]
    return _page(request, "broadcasts.html", "broadcasts", rows=rows, hours=hours, scope=scope,
                 awaiting_only=awaiting_only, following=following, first_page=before == NEWEST,
                 filters=urlencode(filters), tenants_choice=await _tenant_choice(request, viewer),
                 now=await state.store.database_now())


async def broadcast_page(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    state = _state(request)
    broadcast_id = int(request.match_info["id"])
    found = await state.store.dashboard_broadcast(viewer.tenant_id, broadcast_id)
    if found is None:  # none, or another tenant's: the same answer
        raise web.HTTPNotFound(text=f"No broadcast {broadcast_id}.")
    b = found.progress
    waves = await state.store.broadcast_waves(broadcast_id)
    hours = (await state.store.awaiting_hours([broadcast_id])) if b.awaiting_approval else []
    actions = _broadcast_actions(b) if viewer.can_write else ()
    return _page(request, "broadcast.html", "broadcast", detail=found, b=b, waves=waves, hours=hours,
                 actions=actions, messages=_messages_of(state, viewer, b), done=_notice(request, "done"),
                 problem=_notice(request, "problem"), now=await state.store.database_now())


async def broadcast_action(request: web.Request) -> web.StreamResponse:
    """Approve, reject or cancel a broadcast, in the name of the key signed in. What the database
    refuses (the creator approving their own, a decision already taken) comes back as a sentence
    on the broadcast's page."""
    viewer = _viewer(request)
    state = _state(request)
    action = request.match_info["action"]
    if action not in BROADCAST_ACTIONS:
        raise web.HTTPNotFound(text=f"No action {action!r}.")
    broadcast_id = int(request.match_info["id"])
    found = await state.store.dashboard_broadcast(viewer.tenant_id, broadcast_id)
    if found is None:
        raise web.HTTPNotFound(text=f"No broadcast {broadcast_id}.")
    b = found.progress
    form = await _form(request)
    given = form.get("note")
    note = (given.strip()[:NOTE_AT_MOST] or None) if isinstance(given, str) else None
    store, who, tenant = state.store, viewer.acting_for, b.tenant_id
    page = f"{state.base}/broadcasts/{broadcast_id}"
    if action not in _broadcast_actions(b):
        state_words = ("awaiting approval" if b.awaiting_approval else "done" if b.done
                       else b.approval.replace("_", " "))
        outcome = {"problem": f"{action} is not possible: broadcast {broadcast_id} is {state_words}"}
    else:
        try:
            if action == "approve":
                released = await store.approve_broadcast_as(tenant, broadcast_id, on_behalf_of=who, note=note)
                outcome = {"done": f"approved: {released:,} message{'' if released == 1 else 's'} now pending"}
            elif action == "reject":
                cancelled = await store.reject_broadcast_as(tenant, broadcast_id, on_behalf_of=who, note=note)
                outcome = {"done": f"rejected: {cancelled:,} message{'' if cancelled == 1 else 's'} cancelled"}
            else:
                cancelled = await store.cancel_broadcast_as(tenant, broadcast_id, on_behalf_of=who)
                outcome = {"done": f"cancelled: {cancelled:,} message{'' if cancelled == 1 else 's'} cancelled,"
                                   " nothing more is staged"}
        except DatabaseRefused as refused:
            if refused.sqlstate not in BROADCAST_REFUSALS:
                raise
            outcome = {"problem": refused.message + (f". {refused.hint}" if refused.hint else "")}
    log.info("dashboard_broadcast_action", action=action, broadcast_id=broadcast_id, tenant=b.tenant_id,
             ref_prefix=b.ref_prefix, key=viewer.prefix, **outcome)
    state.overview_cache.clear()
    [(kind, text)] = outcome.items()
    raise web.HTTPSeeOther(_noticed(request, page, kind, text))


# What the broadcast functions refuse for a reason the operator can read (docs/audiences.md,
# "Errors"): the creator approving their own (42501, with a HINT), a decision already taken or
# not needed (55000). Anything else is an error page, as elsewhere.
BROADCAST_REFUSALS = ("42501", "55000")
