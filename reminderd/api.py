"""The HTTP API of `reminderd serve`: its routes (all registered in `Api.routes`), their handlers,
and the middleware every request goes through (timeout, errors as RFC 9457 problems, metrics,
one log line).

Handlers know HTTP, not SQL: they check their input with reminderd/validation.py (the rules the
CLI uses), call the Store (which calls the SQL functions) and say the result in JSON. The wire
format is reminderd/openapi.yaml; tests keep the two equal.

Every /v1 request is authenticated by its API key (apikeys.KeyCache: no database round trip for
a key seen in the last REMINDERD_API_KEY_CACHE seconds) and acts for that key's tenant only.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, cached_property
from importlib.resources import files
from typing import Any

import structlog
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from . import dashboard, refusals, wire
from .api_audiences import Recipients
from .apikeys import Caller, KeyCache
from .batching import Batcher
from .exceptions import DatabaseRefused, DatabaseUnavailable, SchemaMissing
from .lifecycle import Status
from .limits import RequestLimits, too_long
from .logs import LEVELS
from .metrics import ApiMetrics
from .problems import CONTENT_TYPE as PROBLEM_JSON
from .problems import FieldError, Problem, invalid, pointer
from .ratelimit import RateLimiter, retry_after_header
from .rows import DueNow, ItemScheduled, MessageView, StoredAnswer, TenantCalendar, TenantView
from .schedule import InvalidSchedule, hold, iso_utc
from .settings import Settings
from .store import Store
from .validation import (
    API_NAMES,
    HOLIDAY_RULES,
    InvalidInput,
    PreviewRequest,
    ScheduleRequest,
    checked_calendar,
    checked_callback_url,
    checked_category,
    checked_choice,
    checked_quiet,
    parse_duration,
    parse_instant,
    parse_payload,
    parse_wall_time,
)

log = structlog.get_logger("reminderd.api")

JSON = "application/json"
MAX_BATCH = 1000
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
ALL_STATUSES = tuple(status.value for status in Status)
SOONEST_STATUSES = ("pending", "picked", "paused", "dead")  # scheduled_messages_overview holds these
SOONEST_DEFAULT = ("pending", "picked", "paused")
TOO_LATE_OR_TOO_FAR = "22008"  # datetime_field_overflow: beyond the horizon, or dead on arrival
LIVE = frozenset({Status.PENDING, Status.PICKED, Status.PAUSED})
MAX_BIGINT = 2**63 - 1
NEVER = datetime.min.replace(tzinfo=UTC)
FOREVER = datetime.max.replace(tzinfo=UTC)
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# What an Idempotency-Key keeps of an answer holding a secret (a rotation's): that it was given, not
# the answer (reminderd.idempotency_keys.content_type; its response_body is empty).
SHOWN_ONCE = "reminderd/shown-once"
WWW_AUTHENTICATE = 'Bearer realm="reminderd"'
# aiohttp's HTTP parser answers a longer request line or header itself, in plain text, before any
# middleware: room for the longest query the document allows (2,000 characters, percent-encoded).
SERVER_LIMITS: dict[str, Any] = {"max_line_size": 65536, "max_field_size": 16384}

# The fields of a message to schedule, by the JSON type each must have.
_STRING_FIELDS = (
    "ref_id",
    "fire_at",
    "local_time",
    "cron",
    "every",
    "rrule",
    "timezone",
    "callback_url",
    "category",
    "backfill",
    "calendar",
    "holiday_rule",
    "until",
    "contact_id",
)
_DURATION_FIELDS = ("fire_in", "max_lateness")
_INTEGER_FIELDS = ("max_attempts", "max_runs")
SCHEDULE_FIELDS = frozenset((*_STRING_FIELDS, *_DURATION_FIELDS, *_INTEGER_FIELDS, "payload"))
# The type each field's value has in the usual item (a duration as text; the payload any JSON, so
# it is left to the fields' own checks when it is not an object), and an item with none of them.
_FIELD_TYPES: dict[str, type] = {
    **dict.fromkeys((*_STRING_FIELDS, *_DURATION_FIELDS), str), **dict.fromkeys(_INTEGER_FIELDS, int),
    "payload": dict,
}
_NO_VALUES: dict[str, Any] = dict.fromkeys(SCHEDULE_FIELDS)

Handler = Callable[[web.Request, Caller, Store], Awaitable[web.Response]]
REQUEST_ID = web.RequestKey("request_id", str)
CALLER = web.RequestKey("caller", Caller)


def openapi_document() -> dict[str, Any]:
    """reminderd/openapi.yaml, parsed: each caller gets its own copy of it."""
    return copy.deepcopy(_parsed_openapi_document())


@cache
def _parsed_openapi_document() -> dict[str, Any]:
    """Parsed once per process, with libyaml where PyYAML has it: the pure-Python parser took
    0.37 s of every `reminderd serve` start (and of every test's API), libyaml 0.06 s, a copy 5 ms."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    text = files("reminderd").joinpath("openapi.yaml").read_text("utf-8")
    document: dict[str, Any] = yaml.load(text, Loader=loader)  # a safe loader, C or Python
    return document


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as the OpenAPI document writes it
    handler: Any  # a Handler, or for a public route a plain aiohttp handler
    writes: bool = False  # needs the write scope; takes an Idempotency-Key
    batched: bool = False  # a write that opens no transaction of its own: reminderd/batching.py's call does
    public: bool = False  # no API key (probes, metrics, the document)
    streamed: bool = False  # a write that reads its own body in pieces and opens its own transactions
    shows_secret: bool = False  # its answer holds a secret, shown once: an Idempotency-Key never keeps it


def json_response(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=wire.dumps(document), status=status, content_type=JSON)


class Api:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        head_revision: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.head_revision = head_revision
        self.keys = KeyCache(store.api_key, ttl_s=settings.api_key_cache_s, clock=clock)
        self.limiter = RateLimiter()
        self.batcher = Batcher(self._schedule_for, max_batch=MAX_BATCH)
        self.metrics = ApiMetrics()
        self.stopping = False
        self.clock = clock  # for the rate limits
        self._log_requests = LEVELS[settings.log_level] <= logging.INFO  # the level is fixed for the run
        document = openapi_document()
        self._document = json.dumps(document).encode()
        self.limits = RequestLimits.from_document(document)  # its maxLengths, enforced (reminderd/limits.py)
        self.recipients = Recipients(self)  # contacts, audiences, broadcasts, cadences (api_audiences.py)
        self.dashboard: dashboard.Dashboard | None = None  # what its handlers share, once app() mounted it

    # The routes: every one of them, here. ------------------------------------------------------

    @cached_property
    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/messages", self.schedule, writes=True, batched=True),
            Route("GET", "/v1/messages", self.list_messages),
            Route("DELETE", "/v1/messages", self.cancel_by_ref, writes=True),
            Route("POST", "/v1/messages/batch", self.schedule_batch, writes=True),
            Route("POST", "/v1/messages/cancel", self.cancel_matching, writes=True),
            Route("GET", "/v1/messages/{id}", self.get_message),
            Route("PATCH", "/v1/messages/{id}", self.update_message, writes=True),
            Route("DELETE", "/v1/messages/{id}", self.cancel_message, writes=True),
            Route("POST", "/v1/messages/{id}/pause", self.pause_message, writes=True),
            Route("POST", "/v1/messages/{id}/resume", self.resume_message, writes=True),
            Route("POST", "/v1/messages/{id}/requeue", self.requeue_message, writes=True),
            Route("POST", "/v1/messages/{id}/send-now", self.send_now, writes=True),
            Route("GET", "/v1/tenant", self.get_tenant),
            Route("PATCH", "/v1/tenant", self.update_tenant, writes=True),
            Route("POST", "/v1/tenant/pause", self.pause_tenant, writes=True),
            Route("POST", "/v1/tenant/resume", self.resume_tenant, writes=True),
            Route("POST", "/v1/tenant/rotate-secret", self.rotate_secret, writes=True, shows_secret=True),
            Route("GET", "/v1/preview", self.preview),
            Route("GET", "/v1/stats", self.stats),
            *(Route(r.method, r.path, r.handler, writes=r.writes, streamed=r.streamed)
              for r in self.recipients.routes()),
            Route("GET", "/healthz", self.healthz, public=True),
            Route("GET", "/readyz", self.readyz, public=True),
            Route("GET", "/metrics", self.metrics_page, public=True),
            Route("GET", "/openapi.json", self.openapi, public=True),
        ]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=self.settings.api_max_body)
        for route in self.routes:
            # {id} only matches digits: anything else is a 404, as an unknown message is.
            path = route.path.replace("{id}", "{id:[0-9]{1,19}}")
            app.router.add_route(route.method, path, self._guarded(route), name=_route_name(route))
        # The operator dashboard (reminderd/dashboard.py): its pages under /dashboard/, signed in
        # with the same API keys; its own middleware (HTML errors, sessions), not this one.
        self.dashboard = dashboard.mount(app, self.store, self.settings)
        return app

    # Every request ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if dashboard.serves(request.path):  # pages and a live stream, not JSON: its own middleware
            return await handler(request)
        started = time.perf_counter()
        request_id = f"{random.getrandbits(64):016x}"  # for the logs, not a secret: no os.urandom per request
        request[REQUEST_ID] = request_id
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.metrics.in_flight.inc()
        try:
            try:
                async with asyncio.timeout(self.settings.api_request_timeout_s):
                    response = await handler(request)
            except TimeoutError:
                raise Problem(
                    "timeout",
                    f"the request took longer than {self.settings.api_request_timeout_s:g} s "
                    "(REMINDERD_API_REQUEST_TIMEOUT); retry, with the same Idempotency-Key",
                    headers={"Retry-After": "1"},
                ) from None
            except web.HTTPRequestEntityTooLarge:
                raise Problem(
                    "body-too-large",
                    f"the body is over {self.settings.api_max_body} bytes (REMINDERD_API_MAX_BODY)",
                ) from None
            except web.HTTPMethodNotAllowed as exc:
                raise Problem(
                    "method-not-allowed",
                    f"{request.method} is not allowed here; allowed: {', '.join(sorted(exc.allowed_methods))}",
                    headers={"Allow": ", ".join(sorted(exc.allowed_methods))},
                ) from None
            except web.HTTPNotFound:
                raise Problem("not-found", f"no route {request.path}: see /openapi.json") from None
            except web.HTTPException as exc:  # anything else aiohttp raises about the request
                raise Problem("invalid-parameter", exc.reason or "bad request") from None
            except SchemaMissing:
                log.error("schema_missing", request_id=request_id, fix="run `reminderd migrate`")
                raise Problem(
                    "unavailable", "the database schema is not migrated yet", headers={"Retry-After": "5"}
                ) from None
            except DatabaseRefused as exc:
                raise _refused(exc) from None
            except DatabaseUnavailable as exc:
                self.metrics.database_up.set(0)
                log.error("database_unreachable", request_id=request_id, error=str(exc))
                raise Problem(
                    "unavailable",
                    "the database cannot be reached right now; retry",
                    headers={"Retry-After": "1"},
                ) from None
        except Problem as problem:
            response = self._problem(problem, request_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "api_error", request_id=request_id, method=request.method, route=route, error=type(exc).__name__
            )
            response = self._problem(
                Problem(
                    "internal", f"an internal error; the server's log says more under request_id {request_id}"
                ),
                request_id,
            )
        finally:
            self.metrics.in_flight.dec()
        elapsed_s = time.perf_counter() - started
        self.metrics.observe(route, request.method, response.status, elapsed_s)
        response.headers["X-Request-Id"] = request_id
        if not self._log_requests:  # filtered anyway: spare building the line's fields
            return response
        caller = request.get(CALLER)
        log.info(
            "request",
            method=request.method,
            route=route,
            status=response.status,
            latency_ms=round(elapsed_s * 1000, 2),
            request_id=request_id,
            tenant=caller.tenant_id if caller else None,
            key=caller.prefix if caller else None,
        )
        return response

    def _problem(self, problem: Problem, request_id: str) -> web.Response:
        instance = f"urn:reminderd:request:{request_id}"
        try:
            body = problem.body(instance)
        except Exception as exc:  # a member json cannot write: still a problem, never a bare 500
            log.exception("api_error", request_id=request_id, problem=problem.kind, error=type(exc).__name__)
            problem = Problem(
                "internal", f"an internal error; the server's log says more under request_id {request_id}"
            )
            body = problem.body(instance)
        response = web.Response(body=body, status=problem.status, content_type=PROBLEM_JSON)
        response.headers.update(problem.headers)
        return response

    def _guarded(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        if route.public:
            public: Callable[[web.Request], Awaitable[web.StreamResponse]] = route.handler
            return public

        async def guarded(request: web.Request) -> web.StreamResponse:
            caller = await self._caller(request, writes=route.writes)
            request[CALLER] = caller
            long = self.limits.parameters_too_long(route.method, route.path, request.match_info, request.query)
            if long is not None:
                raise invalid(long.detail(), str(long.path[0]), where="parameter")
            if not route.writes:
                response: web.StreamResponse = await route.handler(request, caller, self.store)
                return response
            key = request.headers.get("Idempotency-Key")
            if key is not None:
                return await self._idempotent(request, caller, key, route)
            if route.streamed:  # its body in pieces, a transaction naming the key for each
                streamed: web.StreamResponse = await route.handler(request, caller, self.store)
                return streamed
            await request.read()  # the whole body before a connection is held for the write
            if route.batched:  # its batch's call says which key did it (_schedule_for)
                batched: web.StreamResponse = await route.handler(request, caller, self.store)
                return batched
            # One transaction, so the audit trail says which key did it (events.on_behalf_of).
            async with self.store.transaction() as store:
                await store.act_for(caller.acting_for)
                written: web.StreamResponse = await route.handler(request, caller, store)
                return written

        return guarded

    async def _schedule_for(self, tenant: str, items: Sequence[ScheduleRequest], atomic: bool, acting_for: str
                            ) -> list[ItemScheduled]:
        """One call of the Batcher: one key's waiting schedules in one transaction whose audit
        events name that key (events.on_behalf_of)."""
        async with self.store.transaction() as store:
            await store.act_for(acting_for)
            return await store.schedule_many(tenant, items, atomic=atomic)

    async def _caller(self, request: web.Request, *, writes: bool) -> Caller:
        header = request.headers.get("Authorization")
        if header is None:
            raise Problem(
                "unauthorized",
                "send an API key: Authorization: Bearer rk_…",
                headers={"WWW-Authenticate": WWW_AUTHENTICATE},
            )
        scheme, _, key = header.partition(" ")
        caller = await self.keys.caller(key.strip()) if scheme.lower() == "bearer" else None
        if caller is None:
            raise Problem(
                "unauthorized",
                "the API key is unknown or revoked",
                headers={"WWW-Authenticate": f'{WWW_AUTHENTICATE}, error="invalid_token"'},
            )
        if caller.tenant_id is None:
            raise Problem(
                "forbidden",
                "an operator key acts on all tenants and signs in to the dashboard; "
                "the /v1 routes take a tenant's key",
            )
        wait_s = self.limiter.check(
            caller.key_id, caller.rate_limit or self.settings.api_rate_limit, self.clock()
        )
        if wait_s is not None:
            raise Problem(
                "rate-limited",
                f"more than {caller.rate_limit or self.settings.api_rate_limit:g} "
                "requests per second with this key",
                headers={"Retry-After": retry_after_header(wait_s)},
            )
        if writes and not caller.may_write:
            raise Problem("forbidden", "this API key is read-only")
        return caller

    async def still_authorized(self, request: web.Request, caller: Caller) -> bool:
        """Whether the request's key still authenticates as `caller`, and may still write if it
        could: what a long request asks between its writes (an NDJSON upload, before each batch),
        through the key cache, so the database at most once per REMINDERD_API_KEY_CACHE, and a
        revocation stops it as it would a new request."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        again = await self.keys.caller(key.strip()) if scheme.lower() == "bearer" else None
        return again is not None and again.key_id == caller.key_id and (again.may_write or not caller.may_write)

    async def _idempotent(
        self, request: web.Request, caller: Caller, key: str, route: Route
    ) -> web.StreamResponse:
        """Stripe's rules: the first successful answer is stored in the write's own transaction and
        replayed to the same request; another request with the key gets 422; while the first one
        runs, 409. An answer holding a secret is not stored: only that it was given, and the same
        request again gets a 409 secret-shown-once (the secret is never shown twice, nor to
        another key of the tenant)."""
        if not IDEMPOTENCY_KEY.fullmatch(key):
            raise invalid(
                "Idempotency-Key: 1 to 255 printable ASCII characters", "Idempotency-Key", where="header"
            )
        tenant = _tenant(caller)
        body = await request.read()
        fingerprint = hashlib.sha256(
            b"\n".join([request.method.encode(), request.path_qs.encode(), body])
        ).digest()
        async with self.store.transaction() as store:
            await store.act_for(caller.acting_for)  # events.on_behalf_of: which key did it
            if not await store.idempotency_lock(tenant, key):
                raise Problem(
                    "idempotency-in-flight",
                    "a request with this Idempotency-Key is still running; retry once it has answered",
                    headers={"Retry-After": "1"},
                )
            stored = await store.idempotency_answer(tenant, key)
            if stored is not None:
                if stored.request_hash != fingerprint:
                    raise Problem(
                        "idempotency-mismatch",
                        "this Idempotency-Key was used for another request "
                        "(another method, path or body) in the last 24 hours",
                    )
                if stored.content_type == SHOWN_ONCE:
                    raise Problem(
                        "secret-shown-once",
                        "this rotation was already done with this Idempotency-Key; its new secret was "
                        "shown once, in that request's answer, and is not shown again",
                    )
                replay = web.Response(
                    body=stored.body, status=stored.status_code, content_type=stored.content_type
                )
                replay.headers["Idempotent-Replayed"] = "true"
                return replay
            handler: Handler = route.handler
            response = await handler(request, caller, store)
            if 200 <= response.status < 300 and isinstance(response.body, bytes):
                kept = (
                    StoredAnswer(fingerprint, response.status, SHOWN_ONCE, b"")
                    if route.shows_secret
                    else StoredAnswer(fingerprint, response.status, response.content_type, response.body)
                )
                await store.save_idempotency_answer(tenant, key, kept)
            return response

    # Reading requests ---------------------------------------------------------------------------

    async def _body(self, request: web.Request, *, required: bool = True) -> dict[str, Any]:
        document: dict[str, Any] = await self.read_json(request, required=required)
        return document

    async def read_json(
        self,
        request: web.Request,
        *,
        required: bool = True,
        shapes: tuple[type, ...] = (dict,),
        alone: str | None = None,
    ) -> Any:
        """The body's JSON document, of one of `shapes` (an object, unless told); Problem otherwise,
        also for a string PostgreSQL cannot store (wire.unstorable), named by its pointer. `alone`:
        the member whose elements the handler judges one by one (a batch's `messages`; "" for the
        body's own, an array's or a lone object's), each refused alone for such a string."""
        raw = await request.read()
        if not raw and not required:
            return {}
        content_type = request.content_type
        if (
            raw
            and content_type not in (JSON, "application/octet-stream")
            and not content_type.endswith("+json")
        ):
            raise Problem("unsupported-media-type", f"send the body as {JSON}, not {content_type}")
        try:
            document = wire.parse(raw)
        except wire.NotJSON as exc:
            raise Problem("invalid-json", str(exc)) from None
        if not isinstance(document, shapes):
            said = " or ".join("a JSON array" if shape is list else "a JSON object" for shape in shapes)
            raise Problem("invalid-json", f"the body must be {said}")
        limit = self.settings.api_max_json_depth
        if wire.too_deep(raw, document, limit):
            raise Problem(
                "invalid-json",
                f"the body nests arrays and objects more than {limit} levels deep "
                "(REMINDERD_API_MAX_JSON_DEPTH)",
            )
        for found in wire.unstorable(document, raw):
            if not _in_an_element(found.path, alone, document):
                raise invalid(found.detail(), pointer(*found.path))
        resource = request.match_info.route.resource
        for long in self.limits.body_too_long(request.method, resource.canonical if resource else "", document):
            if not _in_an_element(long.path, alone, document):
                raise invalid(long.detail(), pointer(*long.path))
        return document

    def _schedule_request(
        self, tenant: str, item: Any, at: tuple[str | int, ...], now: datetime
    ) -> ScheduleRequest:
        """One message to schedule, checked by the CLI's rules; Problem naming the field by pointer."""
        if not isinstance(item, dict):
            raise invalid("a message to schedule is a JSON object", pointer(*at))
        unknown = sorted(set(item) - SCHEDULE_FIELDS)
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r}", pointer(*at, unknown[0]))
        if "ref_id" not in item:
            raise invalid(
                "ref_id is required: your name for the message, e.g. booking:b7d2:24h", pointer(*at, "ref_id")
            )
        values: dict[str, Any] = dict(_NO_VALUES)
        if all(value is None or type(value) is _FIELD_TYPES[name] for name, value in item.items()):
            values.update(item)  # the usual item: every value of its field's JSON type, in one pass
        else:  # each field in turn, so that the first wrong one is the one named
            for name in _STRING_FIELDS:
                value = item.get(name)
                if value is not None and not isinstance(value, str):
                    raise invalid(f"{name} must be a string", pointer(*at, name))
                values[name] = value
            for name in _DURATION_FIELDS:
                values[name] = _duration_text(item.get(name), at, name, allow_zero=name == "max_lateness")
            for name in _INTEGER_FIELDS:
                value = item.get(name)
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    raise invalid(f"{name} must be an integer", pointer(*at, name))
                values[name] = value
        payload, encoded = (None, False) if "payload" not in item else wire.encode(item["payload"])
        try:
            return ScheduleRequest.build(
                tenant_id=tenant,
                ref_id=values["ref_id"],
                now=now,
                names=API_NAMES,
                at=values["fire_at"],
                delay=values["fire_in"],
                local_time=values["local_time"],
                cron=values["cron"],
                every=values["every"],
                rrule=values["rrule"],
                tz=values["timezone"],
                contact_id=values["contact_id"],
                payload_json=payload,
                callback_url=values["callback_url"],
                until=values["until"],
                max_runs=values["max_runs"],
                category=values["category"] or "transactional",
                calendar=values["calendar"],
                holiday_rule=values["holiday_rule"],
                backfill=values["backfill"],
                max_lateness=values["max_lateness"],
                max_attempts=values["max_attempts"],
                delay_at_now=False,
                payload_encoded=encoded,
            )
        except InvalidInput as exc:
            raise invalid(str(exc), pointer(*at, exc.field) if exc.field else pointer(*at)) from None

    async def _calendar(
        self, store: Store, tenant: str, items: Iterable[ScheduleRequest], now: datetime
    ) -> TenantCalendar | None:
        """What times the recurring items' first occurrences (the tenant's holidays), read once;
        None when there is no recurring item."""
        if all(item.recurrence is None for item in items):
            return None
        calendar = await store.tenant_calendar(tenant, from_day=(now - timedelta(days=2)).date())
        if calendar is None:  # deleted after its key was cached
            raise Problem(
                "unauthorized",
                "the API key's tenant no longer exists",
                headers={"WWW-Authenticate": WWW_AUTHENTICATE},
            )
        return calendar

    def _message_id(self, request: web.Request) -> int:
        value = int(request.match_info["id"])
        if not 0 < value <= MAX_BIGINT:
            raise Problem("not-found", f"no message {value}")
        return value

    # Messages ------------------------------------------------------------------------------------

    async def schedule(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant = _tenant(caller)
        now = datetime.now(UTC)
        item = self._schedule_request(tenant, await self._body(request), (), now)
        if item.recurrence is not None:
            item = _timed(item, (), await self._calendar(store, tenant, [item], now), now)
        if store.in_transaction:  # an Idempotency-Key's: the answer is saved in the same transaction
            (done,) = await store.schedule_many(tenant, [item], atomic=True)
        else:  # with whatever else this key is scheduling at the moment (reminderd/batching.py)
            done = await self.batcher.schedule(tenant, caller.key_id, item, acting_for=caller.acting_for)
        if done.result == "error":
            raise _refused_item(done, item, ())
        assert done.message_id is not None and done.status is not None
        document = {
            "id": done.message_id,
            "ref_id": item.ref_id,
            "status": done.status,
            "fire_at": done.fire_at,
            "description": _in_its_zone(item, done).description(done.fire_at, now),
            "result": done.result,
            "timezone": done.timezone,
            "timezone_source": done.timezone_source,
        }
        if item.contact_id is not None:
            document["contact_id"] = item.contact_id
        return json_response(document, 200 if done.result == "unchanged" else 201)

    async def schedule_batch(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant = _tenant(caller)
        body = await self.read_json(request, alone="messages")
        unknown = sorted(set(body) - {"messages", "atomic"})
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r}", pointer(unknown[0]))
        messages, atomic = body.get("messages"), body.get("atomic", True)
        if not isinstance(atomic, bool):
            raise invalid("atomic must be true or false", pointer("atomic"))
        if not isinstance(messages, list) or not messages:
            raise invalid("messages must be a list of 1 to 1000 messages to schedule", pointer("messages"))
        if len(messages) > MAX_BATCH:
            raise invalid(
                f"at most {MAX_BATCH} messages in one batch (got {len(messages)})", pointer("messages")
            )
        now = datetime.now(UTC)
        requests: dict[int, ScheduleRequest] = {}
        failed: dict[int, Problem] = {}
        look = wire.may_hold_unstorable(await request.read())  # read_json left these to each message
        bounds = self.limits.element_bounds("POST", "/v1/messages/batch", ("messages", 0))  # and these
        for index, item in enumerate(messages):
            try:
                for found in wire.unstorable(item) if look else ():
                    raise invalid(found.detail(), pointer("messages", index, *found.path))
                for long in too_long(bounds, item, ("messages", index)):
                    raise invalid(long.detail(), pointer(*long.path))
                requests[index] = self._schedule_request(tenant, item, ("messages", index), now)
            except Problem as refused:
                failed[index] = refused
        if failed and atomic:
            errors = [error for problem in failed.values() for error in problem.errors]
            raise Problem(
                "invalid-request",
                f"{len(failed)} of {len(messages)} messages are invalid; nothing was scheduled (atomic)",
                errors,
            )
        calendar = await self._calendar(store, tenant, requests.values(), now)
        for index in sorted(requests):
            try:
                requests[index] = _timed(requests[index], ("messages", index), calendar, now)
            except Problem as refused:
                if atomic:
                    raise Problem(
                        "invalid-request",
                        f"message {index}: {refused.detail}; nothing was scheduled (atomic)",
                        refused.errors,
                    ) from None
                failed[index] = refused
                del requests[index]
        indexes = sorted(requests)
        done = (
            await store.schedule_many(tenant, [requests[i] for i in indexes], atomic=atomic) if indexes else []
        )
        if atomic and done and done[0].result == "error":
            index = indexes[done[0].item - 1]
            problem = _refused_item(done[0], requests[index], ("messages", index))
            if problem.kind != "database-refused":
                raise problem
            raise Problem(
                "database-refused",
                f"message {index}: {problem.detail}; nothing was scheduled (atomic)",
                problem.errors,
                extra={**problem.extra, "item": index},
            )
        # One-offs alike (a campaign): said once.
        said: dict[tuple[datetime, str | None, str | None], tuple[str, str]] = {}

        def said_of(item: ScheduleRequest, fire_at: datetime | None) -> tuple[str | None, str]:
            """The answer's fire_at and description of an item (a contact's: in its zone, now known)."""
            if item.recurrence is not None or fire_at is None:
                return None if fire_at is None else iso_utc(fire_at, "auto"), item.description(fire_at, now)
            # All a one-off's description reads (a contact's zone is named by the contact).
            key = (fire_at, item.timezone, item.contact_id if item.timezone is None else None)
            if key not in said:
                said[key] = iso_utc(fire_at, "auto"), item.description(fire_at, now)
            return said[key]

        results: list[dict[str, Any]] = [{} for _ in messages]
        for index, problem in failed.items():
            results[index] = {
                "index": index,
                "result": "error",
                "ref_id": _ref_of(messages[index]),
                "error": problem.as_json(),
            }
        for row in done:
            index = indexes[row.item - 1]
            item = requests[index]
            if row.result == "error":
                problem = _refused_item(row, item, ("messages", index))
                results[index] = {
                    "index": index,
                    "result": "error",
                    "ref_id": item.ref_id,
                    "error": problem.as_json(),
                }
            else:
                fire_at, description = said_of(_in_its_zone(item, row), row.fire_at)
                results[index] = {
                    "index": index,
                    "result": row.result,
                    "id": row.message_id,
                    "ref_id": item.ref_id,
                    "status": row.status,
                    "fire_at": fire_at,
                    "description": description,
                    "timezone": row.timezone,
                    "timezone_source": row.timezone_source,
                }
                if item.contact_id is not None:
                    results[index]["contact_id"] = item.contact_id
        tally = {
            kind: sum(1 for r in results if r["result"] == kind)
            for kind in ("created", "replaced", "unchanged", "error")
        }
        return json_response(
            {
                "results": results,
                "created": tally["created"],
                "replaced": tally["replaced"],
                "unchanged": tally["unchanged"],
                "failed": tally["error"],
            }
        )

    async def get_message(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant, message_id = _tenant(caller), self._message_id(request)
        message = await store.message(tenant, message_id)
        if message is None:
            raise _no_message(message_id)
        deliveries, events = await store.message_history(tenant, message_id)
        document = _message_json(message)
        document["deliveries"] = [
            {
                "attempt": d.attempt,
                "webhook_id": d.webhook_id,
                "scheduled_for": d.scheduled_for,
                "status_code": d.status_code,
                "error": d.error,
                "duration_ms": d.duration_ms,
                "created_at": d.created_at,
            }
            for d in deliveries
        ]
        document["events"] = [
            {
                "created_at": e.created_at,
                "event": e.event,
                "status": e.status,
                "fire_at": e.fire_at,
                "reason": e.reason,
                "actor": e.actor,
            }
            for e in events
        ]
        return json_response(document)

    async def list_messages(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant = _tenant(caller)
        query = Query(request.query)
        ref, prefix = query.text("ref"), query.text("ref_prefix")
        order = query.choice("order", ("newest", "soonest"), "newest")
        soonest = order == "soonest"
        statuses = query.statuses(
            SOONEST_STATUSES if soonest else ALL_STATUSES, SOONEST_DEFAULT if soonest else ALL_STATUSES, order
        )
        fire_from = query.instant("fire_after") or NEVER
        fire_until = query.instant("fire_before") or FOREVER
        unbounded = fire_from == NEVER and fire_until == FOREVER
        limit = query.integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        fetch = limit + 1  # one row past the page: whether there is a next page at all
        cursor = Cursor.read(query.text("cursor"), order)
        if ref is not None and prefix is not None:
            raise invalid("give ref or ref_prefix, not both", "ref_prefix", where="parameter")
        if ref is not None or prefix is not None:
            low = ref if ref is not None else prefix
            assert low is not None
            high = low + "\x01" if ref is not None else _after_prefix(low)
            rows = await store.list_by_ref(
                tenant,
                (low, high),
                statuses,
                soonest=soonest,
                cursor=(cursor.fire_at, cursor.id),
                limit=fetch,
                fire_from=fire_from,
                fire_until=fire_until,
                keep_unplanned=unbounded and not soonest,
            )
        elif soonest:
            rows = await store.list_soonest(
                tenant,
                statuses,
                after=(cursor.fire_at, cursor.id),
                limit=fetch,
                fire_from=fire_from,
                fire_until=fire_until,
            )
        else:
            rows = await store.list_newest(
                tenant,
                statuses,
                before_id=cursor.id,
                limit=fetch,
                fire_from=fire_from,
                fire_until=fire_until,
                keep_unplanned=unbounded,
            )
        rows, more = rows[:limit], len(rows) > limit
        next_cursor = Cursor.after(rows[-1], order).text() if more else None
        return json_response({"messages": [_message_json(m) for m in rows], "next_cursor": next_cursor})

    async def cancel_by_ref(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        ref = Query(request.query).text("ref")
        if ref is None:
            raise invalid("ref is required: the ref_id whose live message to cancel", "ref", where="parameter")
        return json_response({"cancelled": await store.cancel(_tenant(caller), ref)})

    async def cancel_matching(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        body = await self._body(request)
        pattern = body.get("ref_pattern")
        unknown = sorted(set(body) - {"ref_pattern"})
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r}", pointer(unknown[0]))
        if not isinstance(pattern, str) or not pattern:
            raise invalid(
                "ref_pattern is required: a LIKE pattern such as booking:b7d2:%", pointer("ref_pattern")
            )
        return json_response({"cancelled": await store.cancel_matching(_tenant(caller), pattern)})

    async def cancel_message(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant, message_id = _tenant(caller), self._message_id(request)
        if await store.message_ref(tenant, message_id) is None:
            raise _no_message(message_id)
        return json_response({"cancelled": await store.cancel_message(tenant, message_id)})

    async def _live(
        self, store: Store, tenant: str, message_id: int, action: str, allowed: frozenset[Status]
    ) -> str:
        """The ref of a message an action by id may change; Problem otherwise."""
        found = await store.message_ref(tenant, message_id)
        if found is None:
            raise _no_message(message_id)
        if found.extra_of is not None and action != "send now":
            raise Problem(
                "not-live",
                f"message {message_id} is an extra occurrence (send now) of message "
                f"{found.extra_of}: it can only be cancelled",
            )
        if found.status not in allowed:
            names = " or ".join(sorted(allowed))
            raise Problem(
                "not-live",
                f"message {message_id} is {found.status}: only a {names} message can be "
                f"{'sent now' if action == 'send now' else action + 'd'}",
                extra={"message_status": str(found.status)},
            )
        return found.ref_id

    async def _message_now(self, store: Store, tenant: str, message_id: int) -> web.Response:
        message = await store.message(tenant, message_id)
        if message is None:
            raise _no_message(message_id)
        return json_response(_message_json(message))

    async def pause_message(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant, message_id = _tenant(caller), self._message_id(request)
        ref = await self._live(store, tenant, message_id, "pause", frozenset({Status.PENDING, Status.PAUSED}))
        await store.pause(tenant, ref)
        return await self._message_now(store, tenant, message_id)

    async def resume_message(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant, message_id = _tenant(caller), self._message_id(request)
        ref = await self._live(store, tenant, message_id, "resume", frozenset({Status.PAUSED, Status.PENDING}))
        await store.resume(tenant, ref)
        message = await store.message(tenant, message_id)
        if message is not None and message.status == Status.PAUSED:
            raise Problem(
                "not-live",
                f"message {message_id} is held because its tenant is paused: "
                "resume the tenant (POST /v1/tenant/resume)",
            )
        return await self._message_now(store, tenant, message_id)

    async def requeue_message(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        """A dead message back to pending; one that died after its receiver accepted it only with
        ?resend=true (a recurring one goes to its next occurrence without it)."""
        tenant, message_id = _tenant(caller), self._message_id(request)
        resend = Query(request.query).choice("resend", ("true", "false"), "false") == "true"
        found = await store.message_ref(tenant, message_id)
        if found is None:
            raise _no_message(message_id)
        if found.status != Status.DEAD:
            raise Problem(
                "not-live",
                f"message {message_id} is {found.status}: only a dead message can be requeued",
                extra={"message_status": str(found.status)},
            )
        try:
            requeued = await store.requeue_message(tenant, message_id, resend=resend)
        except DatabaseRefused as exc:
            if exc.sqlstate != DELIVERED_BEFORE_IT_DIED:
                raise
            raise Problem(
                "conflict",
                f"message {message_id} was delivered before it died: requeueing it would send it again",
                extra={"sqlstate": exc.sqlstate, "hint": "add ?resend=true to send it again all the same"},
            ) from None
        if not requeued:
            raise Problem(
                "not-live",
                f"message {message_id} cannot be requeued: its ref {found.ref_id!r} has a live message already",
            )
        return await self._message_now(store, tenant, message_id)

    async def send_now(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant, message_id = _tenant(caller), self._message_id(request)
        ref = await self._live(store, tenant, message_id, "send now", frozenset(LIVE))
        out = await store.send_now(tenant, ref)
        if out is None:
            raise Problem("not-live", f"message {message_id} is no longer live")
        due = await store.due_now(
            tenant, out, backfill=self.settings.backfill, max_lateness_s=self.settings.max_lateness_s
        )
        assert due is not None
        return json_response(
            {
                "id": due.id,
                "ref_id": due.ref_id,
                "status": due.status,
                "fire_at": due.fire_at,
                "extra_occurrence": due.extra_of is not None,
                "held": describe_held(due),
            }
        )

    async def update_message(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant, message_id = _tenant(caller), self._message_id(request)
        body = await self._body(request)
        unknown = sorted(set(body) - {"fire_at", "fire_in", "local_time", "payload"})
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r}", pointer(unknown[0]))
        whens = [name for name in ("fire_at", "fire_in", "local_time") if body.get(name) is not None]
        if len(whens) > 1:
            raise invalid(f"give only one of {', '.join(whens)}", pointer(whens[1]))
        if not whens and "payload" not in body:
            raise invalid("say what to change: fire_at, fire_in, local_time or payload", None)
        try:
            fire_at = fire_in_s = local_time = None
            for name in ("fire_at", "local_time"):
                if body.get(name) is not None and not isinstance(body[name], str):
                    raise InvalidInput(f"{name} must be a string", name)
            if "fire_at" in whens:
                fire_at = parse_instant(body["fire_at"], None, "fire_at", names=API_NAMES)
            elif "fire_in" in whens:
                text = _duration_text(body["fire_in"], (), "fire_in")
                assert text is not None
                fire_in_s = parse_duration(text, "fire_in").total_seconds()
            elif "local_time" in whens:
                local_time = parse_wall_time(body["local_time"])
            payload = None if "payload" not in body else parse_payload(wire.text_of(body["payload"]), "payload")
        except InvalidInput as exc:
            raise invalid(str(exc), pointer(exc.field) if exc.field else None) from None
        async with store.transaction() as tx:
            ref = await self._live(tx, tenant, message_id, "change", frozenset({Status.PENDING, Status.PAUSED}))
            if whens:
                try:
                    await tx.reschedule(
                        tenant, ref, fire_at=fire_at, fire_in_s=fire_in_s, local_time=local_time
                    )
                except DatabaseRefused as exc:  # too late for its backfill policy, or too far
                    late = exc.sqlstate == TOO_LATE_OR_TOO_FAR
                    raise _refused(exc, pointer(whens[0]) if late else None) from None
            if payload is not None:
                await tx.set_payload(tenant, ref, payload)
            return await self._message_now(tx, tenant, message_id)

    # The tenant -----------------------------------------------------------------------------------

    async def get_tenant(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        return await self._tenant_now(store, _tenant(caller))

    async def _tenant_now(self, store: Store, tenant: str) -> web.Response:
        found = await store.api_tenant(tenant)
        if found is None:  # deleted after its key was cached
            raise Problem(
                "unauthorized",
                "the API key's tenant no longer exists",
                headers={"WWW-Authenticate": WWW_AUTHENTICATE},
            )
        return json_response(_tenant_json(found, self.settings.api_rate_limit))

    async def update_tenant(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        tenant = _tenant(caller)
        body = await self._body(request)
        known = {"callback_url", "calendar", "holiday_rule", "quiet_hours", "quiet_exempt"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r}", pointer(unknown[0]))
        if not body:
            raise invalid("say what to change: " + ", ".join(sorted(known)), None)
        try:
            for name in ("callback_url", "calendar", "holiday_rule", "quiet_hours"):
                if body.get(name) is not None and not isinstance(body[name], str):
                    raise InvalidInput(f"{name} must be a string", name)
            if "callback_url" in body:
                checked_callback_url(body["callback_url"], "callback_url")
            calendar = None
            if "calendar" in body:
                calendar = (
                    "none" if body["calendar"] is None else checked_calendar(body["calendar"], "calendar")
                )
            if "holiday_rule" in body and body["holiday_rule"] is None:
                raise InvalidInput("holiday_rule must be skip or send", "holiday_rule")
            holiday_rule = checked_choice(body.get("holiday_rule"), HOLIDAY_RULES, "holiday_rule")
            quiet: Any = None
            if "quiet_hours" in body:
                quiet = (
                    "none" if body["quiet_hours"] is None else checked_quiet(body["quiet_hours"], "quiet_hours")
                )
            exempt = body.get("quiet_exempt")
            if "quiet_exempt" in body:
                if not isinstance(exempt, list) or not all(isinstance(c, str) for c in exempt):
                    raise InvalidInput("quiet_exempt must be a list of categories", "quiet_exempt")
                exempt = [checked_category(c, "quiet_exempt") for c in exempt]
        except InvalidInput as exc:
            raise invalid(str(exc), pointer(exc.field) if exc.field else None) from None
        async with store.transaction() as tx:
            if calendar is not None or holiday_rule is not None or quiet is not None or exempt is not None:
                await tx.set_tenant(
                    tenant, calendar=calendar, holiday_rule=holiday_rule, quiet=quiet, quiet_exempt=exempt
                )
            if "callback_url" in body:
                await tx.set_callback_url(tenant, body["callback_url"])
            return await self._tenant_now(tx, tenant)

    async def pause_tenant(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        return json_response({"paused": True, "messages": await store.pause_tenant(_tenant(caller))})

    async def resume_tenant(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        return json_response({"paused": False, "messages": await store.resume_tenant(_tenant(caller))})

    async def rotate_secret(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        body = await self._body(request, required=False)
        unknown = sorted(set(body) - {"grace"})
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r}", pointer(unknown[0]))
        if "grace" in body and body["grace"] is None:  # the document allows none: leave it out for 24h
            raise invalid("grace: null is not a duration; leave grace out for 24h, or give one (1h, 0s)",
                          pointer("grace"))
        text = _duration_text(body.get("grace", "24h"), (), "grace", allow_zero=True)
        try:
            grace = parse_duration(text or "24h", "grace", allow_zero=True)
        except InvalidInput as exc:
            raise invalid(str(exc), pointer("grace")) from None
        secret, until = await store.api_rotate_secret(_tenant(caller), grace.total_seconds())
        return json_response({"secret": secret, "previous_secret_valid_until": until if grace else None})

    # Schedules and numbers ------------------------------------------------------------------------

    async def preview(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        query = Query(request.query)
        try:
            preview = PreviewRequest.build(
                now=datetime.now(UTC),
                cron=query.text("cron"),
                every=query.text("every"),
                rrule=query.text("rrule"),
                tz=query.text("timezone"),
                calendar=query.text("calendar"),
                quiet=query.text("quiet_hours"),
                start=query.text("from"),
                count=query.integer("n", 10, 1, 1000),
                names=API_NAMES,
            )
            entries = preview.entries()
        except InvalidInput as exc:
            raise invalid(str(exc), exc.field, where="parameter") from None
        return json_response(
            {
                "description": preview.recurrence.description(preview.timezone, preview.start),
                "timezone": preview.timezone,
                "fires": [entry.as_json() for entry in entries],
            }
        )

    async def stats(self, request: web.Request, caller: Caller, store: Store) -> web.Response:
        numbers = await store.tenant_stats(_tenant(caller))
        rates = numbers.rates
        return json_response(
            {
                "counts": numbers.counts,
                "upcoming_by_hour": [{"hour": hour, "messages": count} for hour, count in numbers.upcoming],
                "last_1h": {
                    "delivered": rates["delivered_1h"],
                    "retried": rates["retried_1h"],
                    "dead": rates["dead_1h"],
                },
                "last_24h": {
                    "delivered": rates["delivered_24h"],
                    "retried": rates["retried_24h"],
                    "dead": rates["dead_24h"],
                },
                "lateness_ms": {"p50": numbers.lateness_p50_ms, "p99": numbers.lateness_p99_ms},
            }
        )

    # Operations (no API key) ------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"healthy": True})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.stopping:
            return json_response({"ready": False, "reason": "shutting down"}, 503)
        try:
            revision = await asyncio.wait_for(self.store.schema_revision(), 2.0)
        except TimeoutError:
            return json_response({"ready": False, "reason": "database did not answer within 2s"}, 503)
        except Exception as exc:
            self.metrics.database_up.set(0)
            return json_response({"ready": False, "reason": f"database unreachable: {type(exc).__name__}"}, 503)
        self.metrics.database_up.set(1)
        if revision != self.head_revision:
            return json_response(
                {
                    "ready": False,
                    "reason": f"migrations pending: schema at {revision}, code expects {self.head_revision}",
                },
                503,
            )
        return json_response({"ready": True, "schema": revision})

    async def metrics_page(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._document, content_type=JSON)


# Query parameters ---------------------------------------------------------------------------------


class Query:
    """Query parameters, each checked; Problem (400) naming the parameter."""

    def __init__(self, query: Mapping[str, str]) -> None:
        self._query = query

    def text(self, name: str) -> str | None:
        value = self._query.get(name)
        if value is None:
            return None
        if not value or "\x00" in value:
            raise invalid(
                f"{name} must not be empty" if not value else f"{name} must not hold a NUL character",
                name,
                where="parameter",
            )
        return value

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        if not value.isascii() or not value.isdigit() or not minimum <= int(value) <= maximum:
            raise invalid(f"{name} must be an integer from {minimum} to {maximum}", name, where="parameter")
        return int(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name) or default
        if value not in choices:
            raise invalid(f"{name} must be one of {', '.join(choices)}", name, where="parameter")
        return value

    def instant(self, name: str) -> datetime | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return parse_instant(value, None, name, names=API_NAMES)
        except InvalidInput as exc:
            raise invalid(str(exc), name, where="parameter") from None

    def statuses(self, allowed: Sequence[str], default: Sequence[str], order: str) -> list[str]:
        value = self.text("status")
        if value is None:
            return list(default)
        given = [part.strip() for part in value.split(",")]
        for status in given:
            if status not in allowed:
                detail = (
                    f"status {status!r}: order=soonest lists {', '.join(allowed)} messages"
                    if status in ALL_STATUSES
                    else f"status {status!r}: one of {', '.join(ALL_STATUSES)}"
                )
                raise invalid(detail, "status", where="parameter")
        return list(dict.fromkeys(given))


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last id (newest first) or the last (fire_at, id) (soonest first).
    Opaque to clients: base64url of the order, the id and fire_at in microseconds."""

    order: str
    id: int
    fire_at: datetime

    @classmethod
    def read(cls, text: str | None, order: str) -> Cursor:
        if text is None:
            return cls(order, MAX_BIGINT if order == "newest" else 0, NEVER)
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            kind, message_id, micros = raw.split(":")
            fire_at = datetime.fromtimestamp(int(micros) / 1e6, UTC) if micros else NEVER
            cursor = cls(kind, int(message_id), fire_at)
            if not 0 <= cursor.id <= MAX_BIGINT:  # a message id is a bigint
                raise ValueError(message_id)
        except (ValueError, UnicodeDecodeError, OverflowError, OSError):
            raise invalid(
                "cursor is not one this server gave out: pass next_cursor back as it is",
                "cursor",
                where="parameter",
            ) from None
        if cursor.order != order:
            raise invalid(f"cursor is for order={cursor.order}, not {order}", "cursor", where="parameter")
        return cursor

    @classmethod
    def after(cls, message: MessageView, order: str) -> Cursor:
        return cls(order, message.id, message.fire_at or NEVER)

    def text(self) -> str:
        micros = "" if self.fire_at == NEVER else str(round(self.fire_at.timestamp() * 1e6))
        return base64.urlsafe_b64encode(f"{self.order}:{self.id}:{micros}".encode()).decode().rstrip("=")


# Shaping answers ------------------------------------------------------------------------------------


def _route_name(route: Route) -> str:
    name: str = route.handler.__name__  # each route has its own handler
    return name


def _tenant(caller: Caller) -> str:
    assert caller.tenant_id is not None  # operator keys are refused before any handler
    return caller.tenant_id


def _no_message(message_id: int) -> Problem:
    return Problem("not-found", f"no message {message_id}")


def _ref_of(item: Any) -> str | None:
    """An invalid item's ref_id, to repeat in its result: None when it has none the answer can hold."""
    ref = item.get("ref_id") if isinstance(item, dict) else None
    return ref if isinstance(ref, str) and wire.storable(ref) else None


def _in_an_element(path: tuple[str | int, ...], alone: str | None, document: Any) -> bool:
    """Whether `path` leads into an element of the member `alone` (read_json)."""
    if alone is None:
        return False
    if alone == "":
        return isinstance(document, dict) or (bool(path) and isinstance(path[0], int))
    return len(path) >= 2 and path[0] == alone and isinstance(path[1], int)


def _duration_text(
    value: Any, at: tuple[str | int, ...], name: str, *, allow_zero: bool = False
) -> str | None:
    """A duration from JSON (the member `name` of the object at `at`): text (2h, PT2H) or any
    JSON number of seconds (wire.duration); Problem naming it otherwise."""
    try:
        return wire.duration(value, name, allow_zero=allow_zero)
    except InvalidInput as exc:
        raise invalid(str(exc), pointer(*at, name)) from None


def _after_prefix(prefix: str) -> str:
    """The first string after every string that starts with `prefix`, in code point (UTF-8 byte) order."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        following = last + 1 if last + 1 != 0xD800 else 0xE000
        if following <= 0x10FFFF:
            return "".join(chars) + chr(following)
    return "\U0010ffff" * (len(prefix) + 1)


def _message_json(message: MessageView) -> dict[str, Any]:
    return {
        "id": message.id,
        "ref_id": message.ref_id,
        "status": message.status,
        "fire_at": message.fire_at,
        "scheduled_for": message.scheduled_for,
        "timezone": message.timezone,
        "cron": message.cron,
        "rrule": message.rrule,
        "until": message.until,
        "max_runs": message.max_runs,
        "runs": message.runs,
        "category": message.category,
        "callback_url": message.callback_url,
        "max_attempts": message.max_attempts,
        "attempts": message.attempts,
        "calendar": message.calendar,
        "holiday_rule": message.holiday_rule,
        "backfill": message.backfill,
        "max_lateness_s": message.max_lateness_s,
        "last_error": message.last_error,
        "last_event": message.last_event,
        "created_at": message.created_at,
        "updated_at": message.updated_at,
        "sent_at": message.sent_at,
        "extra_of": message.extra_of,
        "contact_id": message.contact_id,
        "timezone_source": message.timezone_source,
        "payload": wire.Raw(message.payload),
    }


def _tenant_json(tenant: TenantView, default_rate: float) -> dict[str, Any]:
    quiet = (
        f"{tenant.quiet_start:%H:%M}-{tenant.quiet_end:%H:%M}"
        if tenant.quiet_start is not None and tenant.quiet_end is not None
        else None
    )
    return {
        "id": tenant.id,
        "callback_url": tenant.callback_url,
        "calendar": tenant.calendar,
        "holiday_rule": tenant.holiday_rule,
        "quiet_hours": quiet,
        "quiet_exempt": list(tenant.quiet_exempt),
        "paused": tenant.paused,
        "api_rate_limit": float(tenant.api_rate_limit) if tenant.api_rate_limit is not None else default_rate,
        "previous_secret_expires_at": tenant.previous_secret_expires_at,
    }


def describe_held(due: DueNow) -> dict[str, Any] | None:
    """Whether the daemon will hold the message send_now made due, until when and why: the same
    decision (reminderd.schedule.hold) it takes when it claims it."""
    if due.status == Status.PAUSED:
        reason = (
            "the tenant is paused: it goes out when the tenant is resumed" if due.tenant_paused else "paused"
        )
        return {"reason": reason, "until": None}
    if due.status != Status.PENDING or due.fire_at is None:
        return None  # picked: on its way
    try:
        due.timing.check()
        held = hold(
            due.timing,
            occurrence=due.occurrence or due.fire_at,
            due_at=due.fire_at,
            attempt=due.attempts + 1,
            now=max(due.db_now, due.fire_at),
        )
    except InvalidSchedule as exc:
        return {"reason": f"it cannot be timed and will be dead-lettered: {exc}", "until": None}
    return None if held is None else {"reason": held.reason, "until": held.fire_at}


def _timed(
    item: ScheduleRequest, at: tuple[str | int, ...], calendar: TenantCalendar | None, now: datetime
) -> ScheduleRequest:
    """A recurring item given its first fire_at, as the CLI gives it (validation's rules);
    Problem naming the field when nothing would ever be sent."""
    if item.recurrence is None:
        return item
    assert calendar is not None, "read for every batch with a recurring item"
    try:
        return item.with_first_occurrence(calendar, now)
    except InvalidInput as exc:
        raise invalid(str(exc), pointer(*at, exc.field) if exc.field else pointer(*at)) from None


def _in_its_zone(item: ScheduleRequest, done: ItemScheduled) -> ScheduleRequest:
    """A contact's item with the zone the database gave it (for its description)."""
    if item.timezone is not None or done.timezone is None:
        return item
    return dataclasses.replace(item, timezone=done.timezone)


# The status a refusal gets, by SQLSTATE (docs/audiences.md "For the HTTP API"): what is not there
# is a 404, what is in the way a 409; the rest (22023, 22008, 54000, …) are the request's, 422.
DELIVERED_BEFORE_IT_DIED = "55000"  # reminderd.requeue of a one-off that died delivered, without resend
_REFUSED_KINDS = {"P0002": "not-found", "23505": "conflict", "55000": "conflict"}
# Refusals that say nothing about the request, only about the moment: a lock another transaction
# holds (55P03: a completion ref while a broadcast of its prefix is being written, migration 0036),
# a deadlock (40P01), a serialization failure (40001). A 503 with Retry-After, which the SDKs retry.
_TRY_AGAIN = frozenset({"55P03", "40P01", "40001"})


def _refused(exc: DatabaseRefused, at: str | None = None) -> Problem:
    """A statement the database refused: a 422 whose detail is the refusal in one sentence
    (reminderd.refusals, as the CLI says it), with its SQLSTATE and hint; `at` the JSON pointer of
    the field it is about, when known. A 404 or 409 for what is missing or in the way, a 503 `busy`
    for a lock, deadlock or serialization failure of the moment."""
    if exc.sqlstate == "42501" and exc.hint:  # a refusal of SQL's own (approving one's own broadcast)
        return Problem("forbidden", refusals.one_line(exc), extra={"sqlstate": exc.sqlstate, "hint": exc.hint})
    if exc.sqlstate == "42501":  # a grant is missing: the operator's problem, not the client's
        log.error(
            "permission_denied", error=exc.message, fix="grant reminderd_api to the role reminderd serve uses"
        )
        return Problem("internal", "the server's database role lacks a privilege; its log says which")
    extra: dict[str, Any] = {"sqlstate": exc.sqlstate or ""}
    if exc.hint:
        extra["hint"] = exc.hint
    detail = refusals.one_line(exc)
    errors = [FieldError(detail, pointer=at)] if at is not None else []
    if exc.sqlstate in _TRY_AGAIN:
        return Problem("busy", detail, errors, extra=extra, headers={"Retry-After": "1"})
    return Problem(_REFUSED_KINDS.get(exc.sqlstate or "", "database-refused"), detail, errors, extra=extra)


def _refused_item(done: ItemScheduled, item: ScheduleRequest, at: tuple[str | int, ...]) -> Problem:
    """An item schedule_many refused; a time too late or too far (22008) names its field."""
    refused = done.refused()
    assert refused is not None
    field = _late_field(item) if refused.sqlstate == TOO_LATE_OR_TOO_FAR else None
    return _refused(refused, pointer(*at, field) if field is not None else None)


def _late_field(item: ScheduleRequest) -> str:
    """Which field a 22008 is about. A recurring message's is its until (past, or before the first
    occurrence: schedule_recurring() checks no horizon, and the first fire_at is the server's own,
    computed after now); a one-off's the time it was given (fire_at, fire_in, local_time)."""
    names = item.names
    if item.recurrence is not None:
        return names.until if item.until is not None else item.recurrence.field(names)
    if item.fire_in_s is not None:
        return names.delay
    return names.local_time if item.local_time is not None else names.at


__all__ = ["Api", "FieldError", "Route", "openapi_document"]
